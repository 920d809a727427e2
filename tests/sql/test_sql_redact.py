"""engine.redact and the redacting formatter; errors never echo a secret."""
from __future__ import annotations

import pytest

from engine.redact import SECRET_QUERY_PARAMS, redact_kms_uri, redact_uri
from proxy.errors import PgError
from proxy.sql import format_statement, parse_statement


@pytest.mark.parametrize("uri, expected", [
    ("s3://b/p?AWS_ACCESS_KEY_ID=AK&AWS_SECRET_ACCESS_KEY=sk&AWS_SESSION_TOKEN=t&AWS_REGION=r",
     "s3://b/p?AWS_ACCESS_KEY_ID=AK&AWS_SECRET_ACCESS_KEY=redacted&AWS_SESSION_TOKEN=redacted"
     "&AWS_REGION=r"),
    ("gs://b/p?AUTH=specified&CREDENTIALS=Zm9v", "gs://b/p?AUTH=specified&CREDENTIALS=redacted"),
    ("azure://c/p?AZURE_ACCOUNT_NAME=n&AZURE_ACCOUNT_KEY=k",
     "azure://c/p?AZURE_ACCOUNT_NAME=n&AZURE_ACCOUNT_KEY=redacted"),
    ("azure-blob://c/p?AZURE_CLIENT_ID=i&AZURE_CLIENT_SECRET=s&AZURE_TENANT_ID=t",
     "azure-blob://c/p?AZURE_CLIENT_ID=i&AZURE_CLIENT_SECRET=redacted&AZURE_TENANT_ID=t"),
    ("nodelocal://1/backups", "nodelocal://1/backups"),
    ("external://conn/sub", "external://conn/sub"),
    ("s3://user:pa:ss@host/p?x=1", "s3://user:redacted@host/p?x=1"),
    ("s3://user@host/p", "s3://user@host/p"),
    ("s3://b?aws_secret_access_key=lower", "s3://b?aws_secret_access_key=redacted"),
    ("s3://b?AWS%5FSECRET%5FACCESS%5FKEY=enc", "s3://b?AWS%5FSECRET%5FACCESS%5FKEY=redacted"),
    ("aws-kms:///arn:key?AUTH=specified&AWS_SECRET_ACCESS_KEY=s&REGION=r",
     "aws-kms:///arn:key?AUTH=specified&AWS_SECRET_ACCESS_KEY=redacted&REGION=r"),
    ("s3://b?AWS_SECRET_ACCESS_KEY=a#b/c?d", "s3://b?AWS_SECRET_ACCESS_KEY=redacted"),
    ("not a uri", "not a uri"),
])
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


def test_secret_params_are_upper_case():
    assert all(p == p.upper() for p in SECRET_QUERY_PARAMS)
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "CREDENTIALS", "AZURE_ACCOUNT_KEY",
            "AZURE_CLIENT_SECRET"} <= SECRET_QUERY_PARAMS


def test_kms_uri_hides_key_path():
    assert redact_kms_uri("aws:///arn:aws:kms:key/1?AUTH=implicit&REGION=us-east-1") == \
        "aws:///redacted?AUTH=implicit&REGION=us-east-1"
    assert redact_kms_uri("s3://bucket/p?AWS_SECRET_ACCESS_KEY=x") == \
        "s3://bucket/p?AWS_SECRET_ACCESS_KEY=redacted"


def test_redacted_statement():
    stmt = parse_statement("RESTORE FROM LATEST IN 's3://b?AWS_SECRET_ACCESS_KEY=sk' "
                           "WITH encryption_passphrase = 'hunter2', into_db = 'x'")
    text = format_statement(stmt, redact=True)
    assert "sk'" not in text and "hunter2" not in text
    assert "encryption_passphrase = '*****'" in text


@pytest.mark.parametrize("sql", [
    "BACKUP INTO 's3://b?AWS_SECRET_ACCESS_KEY=leak1' WITH encryption_passphrase = 'leak2' x",
    "BACKUP DATABASE d TO 's3://u:leak3@h/p'",
    "RESTORE FROM 'gs://b?CREDENTIALS=leak4'",
    "ALTER EXTERNAL CONNECTION c 's3://b?AZURE_ACCOUNT_KEY=leak5'",
    "SELECT * FROM [SHOW BACKUP 's3://x?AWS_SESSION_TOKEN=leak6']",
])
def test_errors_do_not_echo_secrets(sql):
    with pytest.raises(PgError) as err:
        parse_statement(sql)
    exc = err.value
    shown = " ".join(str(x) for x in (exc.message, exc.detail, exc.hint))
    assert "leak" not in shown, shown


def test_error_detail_caret_points_at_the_token():
    with pytest.raises(PgError) as err:
        parse_statement("BACKUP INTO 's3://b?AWS_SECRET_ACCESS_KEY=longsecret'\n  WITH bogus")
    exc = err.value
    assert exc.sqlstate == "42601" and exc.message == 'at or near "bogus": syntax error'
    lines = exc.detail.splitlines()
    assert lines[0] == "source SQL:"
    assert lines[-2] == "  WITH bogus"
    assert lines[-1] == "       ^"
    assert exc.position == len("BACKUP INTO 's3://b?AWS_SECRET_ACCESS_KEY=longsecret'\n  WITH ") + 1


# Issue 13, point 7: the forms added for fidelity keep secrets out of the redacted text and out
# of their errors (the 0A000 of a form pgkeep does not run included).
@pytest.mark.parametrize("sql", [
    "ALTER BACKUP LATEST IN 's3://b/p?AWS_SECRET_ACCESS_KEY=leak1' ADD NEW_KMS = "
    "'aws:///arn:leak2?AWS_SECRET_ACCESS_KEY=leak3&REGION=r' WITH OLD_KMS = 'aws:///arn:leak4?REGION=r'",
    "ALTER BACKUP 's3://u:leak1@h/p/2024' ADD NEW_KMS = ('aws:///leak2?REGION=r', "
    "'gs:///projects/leak3?CREDENTIALS=leak4') WITH OLD_KMS = 'azure-kms:///leak5/v?AZURE_CLIENT_SECRET=leak6'",
    "BACKUP INTO 'nodelocal://1/c' WITH kms = ('aws:///leak1?AWS_SECRET_ACCESS_KEY=leak2', "
    "'aws:///leak3?AWS_SESSION_TOKEN=leak4'), detached = true",
    "BACKUP INTO 'nodelocal://1/c' WITH OPTIONS (encryption_passphrase = leak1, detached)",
    "RESTORE DATABASE d FROM LATEST IN 'gs://b?CREDENTIALS=leak1' WITH detached = true, "
    "encryption_passphrase = 'leak2', new_db_name = d2",
    "SHOW BACKUP FROM LATEST IN 'nodelocal://1/c' WITH OPTIONS (encryption_info_dir = "
    "'s3://b?AWS_SECRET_ACCESS_KEY=leak1', encryption_passphrase = 'leak2', privileges)",
])
def test_new_forms_redact(sql):
    text = format_statement(parse_statement(sql), redact=True)
    assert "leak" not in text, text
    assert parse_statement(text) is not None


@pytest.mark.parametrize("sql", [
    "BACKUP VIRTUAL CLUSTER 2 INTO 's3://b?AWS_SECRET_ACCESS_KEY=leak1' WITH encryption_passphrase = 'leak2'",
    "BACKUP TENANT 2 INTO LATEST IN 's3://u:leak1@h/p' WITH kms = 'aws:///leak2?AWS_SECRET_ACCESS_KEY=leak3'",
    "RESTORE TENANT 2 FROM LATEST IN 'gs://b?CREDENTIALS=leak1' WITH virtual_cluster_name = 'v', "
    "encryption_passphrase = 'leak2'",
    "RESTORE VIRTUAL CLUSTER 2 FROM LATEST IN 's3://b?AWS_SECRET_ACCESS_KEY=leak1' WITH bogus",
    "CREATE SCHEDULE FOR CHANGEFEED INTO 'kafka://h?sasl_password=leak1' AS SELECT 1 RECURRING '@daily'",
    "RESTORE DATABASE d FROM LATEST IN 's3://b?AWS_SECRET_ACCESS_KEY=leak1' WITH new_db_name = ''",
    "ALTER BACKUP LATEST IN 's3://b?AWS_SECRET_ACCESS_KEY=leak1' ADD NEW_KMS = 'aws:///leak2'",
])
def test_new_forms_errors_do_not_echo_secrets(sql):
    with pytest.raises(PgError) as err:
        parse_statement(sql)
    exc = err.value
    shown = " ".join(str(x) for x in (exc.message, exc.detail, exc.hint))
    assert "leak" not in shown, shown
