"""Redaction of secrets in storage and KMS URIs (pure; imports nothing from proxy).

Contract: `redact_uri` keeps the URI's shape — scheme, host, path, every query parameter in
its original order and spelling — and replaces only secret values with `redacted`: the value
of each parameter in SECRET_QUERY_PARAMS (matched case-insensitively, after percent-decoding
the key) and the password of a `user:password@` userinfo. It never raises; text that is not
a URI comes back unchanged unless it has a query string with a secret key. This is the form
that may reach logs, job descriptions, SHOW output and error messages (CockroachDB's
SanitizeExternalStorageURI). `redact_kms_uri` additionally hides a KMS URI's key path, as
CockroachDB's RedactKMSURI does.
"""
from __future__ import annotations

from urllib.parse import unquote

__all__ = ["SECRET_QUERY_PARAMS", "REDACTED", "redact_uri", "redact_kms_uri", "is_kms_uri"]

REDACTED = "redacted"

SECRET_QUERY_PARAMS = frozenset({
    "AWS_SECRET_ACCESS_KEY",   # s3, aws kms
    "AWS_SESSION_TOKEN",       # s3, aws kms
    "CREDENTIALS",             # gs, gcp kms (base64 JSON key)
    "BEARER_TOKEN",            # gs
    "AZURE_ACCOUNT_KEY",       # azure-blob / azure
    "AZURE_CLIENT_SECRET",     # azure-blob, azure-kms
})

_KMS_SCHEMES = frozenset({"aws-kms", "gcp-kms", "gs-kms", "azure-kms"})


def _split_scheme(uri: str) -> tuple[str, str]:
    sep = uri.find("://")
    if sep <= 0:
        return "", uri
    return uri[:sep + 3], uri[sep + 3:]


def _redact_query(query: str) -> str:
    params = query.split("&")
    for i, param in enumerate(params):
        key, eq, _ = param.partition("=")
        if eq and unquote(key).strip().upper() in SECRET_QUERY_PARAMS:
            params[i] = key + "=" + REDACTED
    return "&".join(params)


def redact_uri(uri: str) -> str:
    """`uri` with secret query-parameter values and any userinfo password replaced by
    `redacted`, everything else byte for byte."""
    scheme, rest = _split_scheme(uri)
    # A secret may itself contain '#' or '/', so the query is everything after the first '?'
    # and the authority ends at the first '/' or '?', whichever comes first.
    head, qmark, query = rest.partition("?")
    if scheme:
        slash = head.find("/")
        authority, path = (head, "") if slash < 0 else (head[:slash], head[slash:])
        at = authority.rfind("@")
        if at >= 0:
            userinfo, host = authority[:at], authority[at:]
            user, colon, _ = userinfo.partition(":")
            if colon:
                authority = user + ":" + REDACTED + host
        head = authority + path
    if qmark:
        query = _redact_query(query)
    return scheme + head + qmark + query


def is_kms_uri(uri: str) -> bool:
    """True for KMS URIs: the aws-kms/gcp-kms/azure-kms schemes, and the legacy `aws:///key`
    and `gs:///projects/...` forms whose empty host distinguishes them from buckets."""
    scheme, rest = _split_scheme(uri)
    name = scheme[:-3].lower()
    if name in _KMS_SCHEMES:
        return True
    return name in ("aws", "gs", "gcp") and rest.startswith("/")


def redact_kms_uri(uri: str) -> str:
    """Like redact_uri, and for a KMS URI also replaces the key identifier (the path) with
    `redacted`, keeping the scheme, host and query parameters."""
    redacted = redact_uri(uri)
    if not is_kms_uri(uri):
        return redacted
    scheme, rest = _split_scheme(redacted)
    head, qmark, query = rest.partition("?")
    slash = head.find("/")
    host = head if slash < 0 else head[:slash]
    return scheme + host + "/" + REDACTED + qmark + query
