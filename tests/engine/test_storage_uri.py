"""Cloud storage URIs: CockroachDB's parameters per scheme, 22023 for anything else, secrets
redacted in store.uri and in every message, and the parameters that change behaviour checked
against the real servers (tests/support/objstores.py)."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest

from engine.errors import InvalidURI, NotFound, StorageError, Unsupported
from engine.storage import StoreContext, open_store, put, read_all
from engine.storage.azure import parse_azure
from engine.storage.gcs import parse_gs
from engine.storage.s3 import parse_s3
from tests.support.objstores import azure_server, gcs_server, s3_server  # noqa: F401 (fixtures)

CTX = StoreContext(Path("/nonexistent-nodelocal-root"))
S3_SECRET = "s3SECRETvalue/with+plus"
S3_TOKEN = "s3SESSIONtoken"
AZ_KEY = base64.b64encode(b"azure-account-key-bytes-0123456789").decode()
AZ_SECRET = "azCLIENTsecret"
GCS_KEY = {"type": "service_account", "project_id": "p", "private_key": "PRIVATEkeyMATERIAL",
           "client_email": "sa@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.invalid/token"}
GCS_CREDS = base64.b64encode(json.dumps(GCS_KEY).encode()).decode()
SECRETS = [S3_SECRET, quote(S3_SECRET, safe=""), S3_TOKEN, AZ_KEY, quote(AZ_KEY, safe=""),
           AZ_SECRET, GCS_CREDS, "PRIVATEkeyMATERIAL"]

S3_URI = (f"s3://bucket/path/to?AWS_ACCESS_KEY_ID=AKIDvisible&AWS_SECRET_ACCESS_KEY={quote(S3_SECRET, safe='')}"
          f"&AWS_SESSION_TOKEN={S3_TOKEN}&AWS_REGION=eu-west-1")
GS_URI = f"gs://bucket/path?AUTH=specified&CREDENTIALS={GCS_CREDS}"
AZ_URI = f"azure://container/path?AZURE_ACCOUNT_NAME=acct&AZURE_ACCOUNT_KEY={quote(AZ_KEY, safe='')}"
AZ_SP_URI = (f"azure-blob://container/path?AZURE_ACCOUNT_NAME=acct&AZURE_CLIENT_ID=cid"
             f"&AZURE_CLIENT_SECRET={AZ_SECRET}&AZURE_TENANT_ID=tid")
ALL = [S3_URI, GS_URI, AZ_URI, AZ_SP_URI]
IDS = ["s3", "gs", "azure-key", "azure-principal"]


def no_secret(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s[:6]}... leaked into: {text}"


@pytest.mark.parametrize("uri", ALL, ids=IDS)
def test_store_uri_is_redacted(uri):
    s = open_store(uri, CTX)
    assert "redacted" in s.uri
    no_secret(s.uri)
    no_secret(repr(s.inner.cfg))
    if uri is S3_URI:
        assert s.uri == ("s3://bucket/path/to?AWS_ACCESS_KEY_ID=AKIDvisible&AWS_SECRET_ACCESS_KEY=redacted"
                         "&AWS_SESSION_TOKEN=redacted&AWS_REGION=eu-west-1")


@pytest.mark.parametrize("uri", ALL, ids=IDS)
def test_unknown_parameters_are_22023_and_hide_their_values(uri):
    bad = uri + "&AWS_SECRET_KEY=typoSECRET&ZZZ=1&aws_region=x"
    with pytest.raises(InvalidURI) as e:
        open_store(bad, CTX)
    assert e.value.sqlstate == "22023"
    assert e.value.message.startswith("unknown query parameters: AWS_SECRET_KEY, ZZZ, aws_region")
    assert "typoSECRET" not in e.value.message          # a misspelt secret stays hidden
    no_secret(e.value.message)


@pytest.mark.parametrize("uri", ALL, ids=IDS)
def test_a_parameter_given_twice_is_refused(uri):
    name = uri.split("?")[1].split("=")[0]
    with pytest.raises(InvalidURI) as e:
        open_store(uri + f"&{name}=again", CTX)
    assert "more than once" in e.value.message
    no_secret(e.value.message)


INVALID = [
    ("s3:///path?AUTH=implicit", "must specify a target bucket"),
    ("s3://bkt/p?AWS_ACCESS_KEY_ID=x", "AUTH is set to 'specified', but AWS_SECRET_ACCESS_KEY is not set"),
    ("s3://bkt/p", "AUTH is set to 'specified', but AWS_ACCESS_KEY_ID is not set"),
    ("s3://bkt/p?AUTH=sometimes", "unsupported value 'sometimes' for AUTH"),
    ("s3://bkt/p?AUTH=implicit&AWS_USE_PATH_STYLE=maybe", "invalid value 'maybe' for AWS_USE_PATH_STYLE"),
    ("s3://bkt/p?AUTH=implicit&AWS_SKIP_CHECKSUM=2", "AWS_SKIP_CHECKSUM"),
    ("s3://bkt/p?AUTH=implicit&AWS_ENDPOINT=ftp://x", "invalid AWS_ENDPOINT"),
    ("s3://bkt/p?AUTH=implicit&ASSUME_ROLE=notanarn", "is not a role ARN"),
    ("s3://bkt/p?AUTH=implicit&ASSUME_ROLE=arn:aws:iam::1:role/a;bogus=1", "invalid ASSUME_ROLE"),
    ("s3://bkt/../p?AUTH=implicit", "'..' are not allowed"),
    (f"s3://bkt/p?AUTH=implicit&AWS_SECRET_ACCESS_KEY={S3_SECRET}", "AUTH=implicit takes no"),
    ("gs://bkt/p", "AUTH is set to 'specified', but CREDENTIALS is not set"),
    ("gs://bkt/p?CREDENTIALS=bm90IGpzb24", "is not a base64-encoded JSON key file"),
    ("gs://bkt/p?CREDENTIALS=%%%", "is not a base64-encoded JSON key file"),
    ("gs://bkt/p?AUTH=implicit&ASSUME_ROLE=nobody", "is not a service account"),
    (f"gs://bkt/p?AUTH=implicit&CREDENTIALS={GCS_CREDS}", "AUTH=implicit takes no"),
    ("azure://ctr/p?AZURE_ACCOUNT_KEY=a2V5", 'azure uri missing "AZURE_ACCOUNT_NAME" parameter'),
    ("azure://ctr/p?AZURE_ACCOUNT_NAME=acc", 'azure uri missing "AZURE_ACCOUNT_KEY" parameter'),
    ("azure://ctr/p?AZURE_ACCOUNT_NAME=acc&AZURE_CLIENT_ID=x&AZURE_TENANT_ID=t",
     'azure uri missing "AZURE_CLIENT_SECRET" parameter'),
    (f"azure://ctr/p?AZURE_ACCOUNT_NAME=acc&AZURE_ACCOUNT_KEY={AZ_KEY}&AZURE_CLIENT_ID=x", "not both"),
    ("azure://ctr/p?AZURE_ACCOUNT_NAME=acc&AZURE_ACCOUNT_KEY=***", "is not base64"),
    (f"azure://ctr/p?AZURE_ACCOUNT_NAME=acc&AZURE_ACCOUNT_KEY={AZ_KEY}&AZURE_ENVIRONMENT=Mars", "unknown AZURE_ENVIRONMENT"),
    (f"azure://ctr/p?AZURE_ACCOUNT_NAME=acc&AZURE_ACCOUNT_KEY={AZ_KEY}&AZURE_ENDPOINT=nowhere", "invalid AZURE_ENDPOINT"),
    ("azure-storage://?AZURE_ACCOUNT_NAME=acc&AUTH=implicit", "must specify a target container"),
]


@pytest.mark.parametrize("uri, message", INVALID, ids=[f"{u.split(':')[0]}-{m[:40]}" for u, m in INVALID])
def test_invalid_uris(uri, message):
    with pytest.raises(InvalidURI) as e:
        open_store(uri, CTX)
    assert e.value.sqlstate == "22023"
    assert message in e.value.message
    no_secret(e.value.message)


def test_parameters_are_parsed():
    c = parse_s3("s3://bkt/a/b/?AUTH=implicit&AWS_REGION=eu-central-1&AWS_ENDPOINT=http://127.0.0.1:1"
                 "&AWS_USE_PATH_STYLE=TRUE&AWS_SKIP_CHECKSUM=1&S3_STORAGE_CLASS=standard_ia"
                 "&ASSUME_ROLE=arn:aws:iam::1:role/hop,arn:aws:iam::2:role/target;external_id=ext-9")
    assert (c.auth, c.region, c.endpoint, c.path_style, c.skip_checksum, c.storage_class) == \
        ("implicit", "eu-central-1", "http://127.0.0.1:1", True, True, "STANDARD_IA")
    assert c.uri.bucket == "bkt" and c.uri.prefix == "a/b"
    assert [(r.arn, r.external_id) for r in c.roles] == [
        ("arn:aws:iam::1:role/hop", None), ("arn:aws:iam::2:role/target", "ext-9")]
    g = parse_gs(f"gs://bkt/p?CREDENTIALS={GCS_CREDS}&ASSUME_ROLE=a@p.iam.gserviceaccount.com,"
                 "b@p.iam.gserviceaccount.com")
    assert g.credentials == GCS_KEY and g.chain == ("a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com")
    assert parse_gs("gs://bkt/p?BEARER_TOKEN=tok").bearer == "tok"
    # a base64 value whose '+' the URI did not percent-encode arrives as ' ': repaired
    key = base64.b64encode(b"\xfb\xef\xbe" * 8).decode()
    assert "+" in key
    a = parse_azure(f"azure://ctr/p?AZURE_ACCOUNT_NAME=acct&AZURE_ACCOUNT_KEY={key}")
    assert a.key == key and a.account_url == "https://acct.blob.core.windows.net"
    a = parse_azure(f"azure://ctr/p?AZURE_ACCOUNT_NAME=acct&AZURE_ACCOUNT_KEY={key}&AZURE_ENVIRONMENT=AzureChinaCloud")
    assert a.account_url == "https://acct.blob.core.chinacloudapi.cn"
    a = parse_azure("azure-blob://ctr/p?AZURE_ACCOUNT_NAME=acct&AZURE_CLIENT_ID=i&AZURE_CLIENT_SECRET=s"
                    "&AZURE_TENANT_ID=t&AZURE_ENVIRONMENT=AzureUSGovernmentCloud")
    assert (a.client_id, a.tenant_id, a.authority) == ("i", "t", "login.microsoftonline.us")
    assert parse_azure("azure://ctr/p?AZURE_ACCOUNT_NAME=acct&AUTH=implicit").auth == "implicit"


def test_opening_does_no_io():
    """open_store only parses: ASSUME_ROLE chains, implicit credentials and unreachable
    endpoints are touched on first use (and never here: this machine has no cloud)."""
    for uri in ("s3://bkt/p?AUTH=implicit&ASSUME_ROLE=arn:aws:iam::1:role/x&AWS_ENDPOINT=http://127.0.0.1:9",
                "gs://bkt/p?AUTH=implicit&ASSUME_ROLE=a@p.iam.gserviceaccount.com",
                AZ_SP_URI, "azure://ctr/p?AZURE_ACCOUNT_NAME=acct&AUTH=implicit"):
        asyncio.run(open_store(uri, CTX).close())


# -- against the servers --
def _run(coro):
    return asyncio.run(coro)


def test_errors_from_the_servers_name_the_redacted_store(s3_server, gcs_server, azure_server, caplog):
    caplog.set_level(logging.DEBUG)
    uris = [s3_server.collection_uri(bucket="pgkeep-no-such-bucket"),
            gcs_server.collection_uri(bucket="pgkeep-no-such-bucket"),
            azure_server.collection_uri(bucket="pgkeep-no-such-container")]
    for uri in uris:
        s = open_store(uri, CTX)

        async def main():
            with pytest.raises(StorageError) as e:
                await put(s, "x", b"1")
            return e.value
        err = _run(main())
        assert err.sqlstate == "58030"
        assert s.uri in err.message and "redacted" in err.message
        for secret in s3_server.secrets + gcs_server.secrets + azure_server.secrets:
            assert secret not in err.message
            assert quote(secret, safe="") not in err.message
            assert secret not in caplog.text
        _run(s.close())


def test_s3_implicit_auth_storage_class_and_skip_checksum(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bucket = s3_server.new_bucket()
    uri = (f"s3://{bucket}/impl?AUTH=implicit&AWS_ENDPOINT={s3_server.endpoint}&AWS_REGION=us-east-1"
           "&AWS_USE_PATH_STYLE=true&S3_STORAGE_CLASS=STANDARD")
    data = bytes(range(256)) * (40 << 10)          # 10 MiB: a multipart upload
    for extra in ("", "&AWS_SKIP_CHECKSUM=true"):
        s = open_store(uri + extra, CTX)
        s.inner.part_size = 5 << 20

        async def main():
            await put(s, "obj", data)
            assert await read_all(s, "obj") == data
            await s.close()
        _run(main())
    head = s3_server.client().head_object(Bucket=bucket, Key="impl/obj")
    assert head["ContentLength"] == len(data)


def test_gcs_implicit_auth_against_the_emulator(gcs_server):
    s = open_store(gcs_server.collection_uri(credentials=False), CTX)

    async def main():
        await put(s, "o", b"implicit")
        assert await read_all(s, "o") == b"implicit"
        await s.close()
    _run(main())


@pytest.mark.parametrize("scheme", ["azure", "azure-blob", "azure-storage"])
def test_azure_aliases(azure_server, scheme):
    s = open_store(azure_server.collection_uri(scheme=scheme), CTX)
    assert s.uri.startswith(scheme + "://")

    async def main():
        await put(s, "o", scheme.encode())
        assert await read_all(s, "o") == scheme.encode()
        assert [o.path async for o in s.list()] == ["o"]
        await s.close()
    _run(main())


def test_collection_uris_are_ready_and_fresh(s3_server, gcs_server, azure_server):
    """What tests/support/objstores.py hands to end-to-end tests: a URI into a new empty bucket."""
    for server in (s3_server, gcs_server, azure_server):
        uri = server.collection_uri("backups/nightly")
        bucket = uri.split("://")[1].split("/")[0]
        assert server.keys(bucket) == []
        s = open_store(uri, CTX)

        async def main():
            await put(s, "x", b"1")
            with pytest.raises(NotFound):
                await s.stat("y")
            await s.close()
        _run(main())
        assert server.keys(bucket) == ["backups/nightly/x"]
    assert set(gcs_server.env()) == {"STORAGE_EMULATOR_HOST"}


# -- names that shape host names and endpoints (issue 12, point 11) --
_AZ = f"AZURE_ACCOUNT_KEY={quote(AZ_KEY, safe='')}"
_S3 = f"AWS_ACCESS_KEY_ID=AKID&AWS_SECRET_ACCESS_KEY={quote(S3_SECRET, safe='')}"
HOST_SHAPING_INVALID = [
    # Azure account names are spliced into https://<account>.blob.core.windows.net
    (f"azure-blob://ccc/p?AZURE_ACCOUNT_NAME=127.0.0.1:5432%23&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    (f"azure-blob://ccc/p?AZURE_ACCOUNT_NAME=evil.example%2Fx&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    (f"azure://ccc/p?AZURE_ACCOUNT_NAME=user%40host&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    (f"azure://ccc/p?AZURE_ACCOUNT_NAME=Upper&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    (f"azure://ccc/p?AZURE_ACCOUNT_NAME=ab&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    (f"azure://ccc/p?AZURE_ACCOUNT_NAME={'a' * 25}&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    (f"azure://ccc/p?AZURE_ACCOUNT_NAME=acc-1&{_AZ}", "invalid AZURE_ACCOUNT_NAME"),
    # Azure containers
    (f"azure://c/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    (f"azure://a--b/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    (f"azure://-abc/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    (f"azure://abc-/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    (f"azure://a.bc/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    (f"azure://ABC/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    (f"azure://{'a' * 64}/p?AZURE_ACCOUNT_NAME=acct&{_AZ}", "invalid Azure container name"),
    # S3 buckets (virtual-hosted style puts them in the host name)
    (f"s3://127.0.0.1:5432%23/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://evil.example%2F/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://ab/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://{'a' * 64}/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://-abc/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://abc./p?{_S3}", "invalid S3 bucket name"),
    (f"s3://a..bc/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://a_bc/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://Bucket/p?{_S3}", "invalid S3 bucket name"),
    (f"s3://192.168.5.4/p?{_S3}", "invalid S3 bucket name"),
    # regions pick a host too: s3.<region>.amazonaws.com
    (f"s3://bucket/p?{_S3}&AWS_REGION=127.0.0.1:9%23", "invalid AWS_REGION"),
    (f"s3://bucket/p?{_S3}&AWS_REGION=us-east-1.evil.example", "invalid AWS_REGION"),
    (f"s3://bucket/p?{_S3}&AWS_REGION=US-EAST-1", "invalid AWS_REGION"),
    # GCS buckets
    (f"gs://ab/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    (f"gs://{'a' * 64}/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    (f"gs://{'a' * 64}.{'b' * 10}/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    (f"gs://{'.'.join(['a' * 63] * 4)}/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    (f"gs://a..bc/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    (f"gs://host:1/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    (f"gs://10.0.0.1/p?CREDENTIALS={GCS_CREDS}", "invalid GCS bucket name"),
    # a service account goes into an IAM API URL path
    (f"gs://bucket/p?AUTH=implicit&ASSUME_ROLE=a@p.iam.gserviceaccount.com/../x", "is not a service account"),
    (f"gs://bucket/p?AUTH=implicit&ASSUME_ROLE=a@p%23", "is not a service account"),
]


@pytest.mark.parametrize("uri, message", HOST_SHAPING_INVALID,
                         ids=[f"{i}-{m.split()[1]}" for i, (_, m) in enumerate(HOST_SHAPING_INVALID)])
def test_host_shaping_parameters_are_validated_when_parsed(uri, message):
    with pytest.raises(InvalidURI) as e:
        open_store(uri, CTX)        # opening does no I/O: refused before any network access
    assert e.value.sqlstate == "22023"
    assert message in e.value.message, e.value.message
    no_secret(e.value.message)


HOST_SHAPING_VALID = [
    f"azure://abc/p?AZURE_ACCOUNT_NAME=abc&{_AZ}",
    f"azure://a-b-c/p?AZURE_ACCOUNT_NAME={'a1' * 12}&{_AZ}",
    f"azure://{'a' * 63}/p?AZURE_ACCOUNT_NAME=devstoreaccount1&{_AZ}",
    f"azure://$root/p?AZURE_ACCOUNT_NAME=acct&{_AZ}",
    f"s3://abc/p?{_S3}",
    f"s3://my.bucket-1/p?{_S3}&AWS_REGION=eu-central-1",
    f"s3://{'a' * 63}/p?{_S3}&AWS_REGION=us-gov-west-1",
    f"gs://a_b/p?CREDENTIALS={GCS_CREDS}",
    f"gs://{'a' * 63}.{'b' * 63}.{'c' * 63}.dd/p?CREDENTIALS={GCS_CREDS}",
    f"gs://bucket/p?AUTH=implicit&ASSUME_ROLE=sa-1@my-project.iam.gserviceaccount.com",
]


@pytest.mark.parametrize("uri", HOST_SHAPING_VALID)
def test_valid_names_per_provider_are_accepted(uri):
    asyncio.run(open_store(uri, CTX).close())


def test_implicit_access_is_decided_by_each_schemes_parser():
    """The storage-access rule (proxy/commands/authz.py) refuses implicit access to users without
    EXTERNALIOIMPLICITACCESS: pgkeep's disk, its cloud identity, and any parameter a parser
    turns into an endpoint URL, in every spelling the parser accepts."""
    from engine.storage.registry import implicit_access
    assert implicit_access("nodelocal://self/x")
    assert implicit_access(f"s3://bucket/p?{_S3}") is None
    assert implicit_access("s3://bucket/p?AUTH=implicit")
    assert implicit_access("s3://bucket/p?auth=Implicit")        # any spelling, even one the
    assert implicit_access(f"s3://bucket/p?{_S3}&aws_endpoint=")    # parser refuses later
    assert "AWS_ENDPOINT" in implicit_access(f"s3://bucket/p?{_S3}&AWS_ENDPOINT=http://127.0.0.1:9")
    az = f"azure://abc/p?AZURE_ACCOUNT_NAME=acct&{_AZ}"
    assert implicit_access(az) is None
    assert "AZURE_ENDPOINT" in implicit_access(az + "&AZURE_ENDPOINT=http://127.0.0.1:9/a")
    assert implicit_access("gs://bucket/p?AUTH=implicit")
    from engine.storage.gcs import GS_PARAMS
    assert not {p for p in GS_PARAMS if "ENDPOINT" in p or "HOST" in p}