"""Encoding of Python values into PostgreSQL's text and binary formats, for rows pgkeep answers.

Drivers choose the format per column from the RowDescription pgkeep sent at Describe time
(asyncpg asks for binary wherever it has a codec), so every type pgkeep uses in a result set has
both encodings here. Adding a type means adding both.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import struct
from decimal import Decimal
from typing import Any, Callable

__all__ = ["OID", "encode_value", "decode_text_param"]


class OID:
    BOOL = 16
    BYTEA = 17
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    FLOAT8 = 701
    UNKNOWN = 705
    VARCHAR = 1043
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    NUMERIC = 1700
    JSONB = 3802
    TEXT_ARRAY = 1009


_PG_EPOCH = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
_PG_EPOCH_NAIVE = _dt.datetime(2000, 1, 1)


def _text(v: Any, oid: int) -> bytes:
    if isinstance(v, bool):
        return b"t" if v else b"f"
    if isinstance(v, _dt.datetime):
        if oid == OID.TIMESTAMPTZ and v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        s = v.isoformat(sep=" ")
        if s.endswith("+00:00"):
            s = s[:-6] + "+00"
        return s.encode()
    if isinstance(v, _dt.timedelta):
        return _interval_text(v).encode()
    if isinstance(v, (dict, list)) and oid == OID.JSONB:
        return json.dumps(v, separators=(", ", ": ")).encode()
    if isinstance(v, (list, tuple)) and oid == OID.TEXT_ARRAY:
        return ("{" + ",".join('"' + str(x).replace("\\", "\\\\").replace('"', '\\"') + '"'
                               for x in v) + "}").encode()
    if isinstance(v, bytes):
        return b"\\x" + v.hex().encode() if oid == OID.BYTEA else v
    if isinstance(v, float) and oid in (OID.FLOAT8,):
        return float8_text(v).encode()
    return str(v).encode()


def float8_text(v: float) -> str:
    """PostgreSQL's float8out (extra_float_digits >= 1): the shortest text that reads back
    exactly, fixed-point for decimal exponents -4..14, else d.ddde+XX; 1.0 is "1", as upstream
    prints it, so a float column reads the same through pgkeep's commands and through a query
    PostgreSQL runs (SELECT ... FROM [SHOW JOBS])."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digits, exp = Decimal(repr(v)).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + exp            # decimal point position after the first `point` digits
    sci = point - 1
    if -4 <= sci < 15:
        if point <= 0:
            body = "0." + "0" * -point + text
        elif point >= len(text):
            body = text + "0" * (point - len(text))
        else:
            body = text[:point] + "." + text[point:]
    else:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        body = f"{mantissa}e{'-' if sci < 0 else '+'}{abs(sci):02d}"
    return ("-" if sign else "") + body


def _interval_text(v: _dt.timedelta) -> str:
    total = int(v.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}"


def _ts_binary(v: Any, oid: int) -> bytes:
    if oid == OID.TIMESTAMPTZ:
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        delta = v - _PG_EPOCH
    else:
        delta = v.replace(tzinfo=None) - _PG_EPOCH_NAIVE
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return struct.pack("!q", micros)


def _interval_binary(v: Any, oid: int) -> bytes:
    micros = (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds
    return struct.pack("!qii", micros, 0, 0)


def _jsonb_binary(v: Any, oid: int) -> bytes:
    text = v if isinstance(v, str) else json.dumps(v, separators=(", ", ": "))
    return b"\x01" + text.encode()


def _float_binary(v: Any, oid: int) -> bytes:
    return struct.pack("!d", float(v))


def _numeric_binary(v: Any, oid: int) -> bytes:
    d = Decimal(str(v))
    sign, digits, exp = d.as_tuple()
    if not isinstance(exp, int):
        raise ValueError("non-finite numeric")
    # base-10000 digits, aligned so that the decimal point falls between groups
    ds = "".join(map(str, digits)) or "0"
    dscale = max(0, -exp)
    int_part = ds[:len(ds) + exp] if exp < 0 else ds + "0" * exp
    frac_part = ds[len(ds) + exp:] if exp < 0 else ""
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac_part = frac_part + "0" * (-len(frac_part) % 4)
    groups = [int(int_part[i:i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i:i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[-1] == 0:
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    if not groups:
        weight = 0
    return struct.pack(f"!hhhh{len(groups)}h", len(groups), weight, 0x4000 if sign else 0,
                       dscale, *groups)


_BINARY: dict[int, Callable[[Any, int], bytes]] = {
    OID.BOOL: lambda v, o: b"\x01" if v else b"\x00",
    OID.INT2: lambda v, o: struct.pack("!h", int(v)),
    OID.INT4: lambda v, o: struct.pack("!i", int(v)),
    OID.INT8: lambda v, o: struct.pack("!q", int(v)),
    OID.FLOAT8: _float_binary,
    OID.NUMERIC: _numeric_binary,
    OID.TEXT: lambda v, o: str(v).encode(),
    OID.VARCHAR: lambda v, o: str(v).encode(),
    OID.UNKNOWN: lambda v, o: str(v).encode(),
    OID.BYTEA: lambda v, o: bytes(v),
    OID.TIMESTAMP: _ts_binary,
    OID.TIMESTAMPTZ: _ts_binary,
    OID.INTERVAL: _interval_binary,
    OID.JSONB: _jsonb_binary,
}


def encode_value(value: Any, oid: int, binary: bool) -> bytes | None:
    """One column value in the requested format; None stays SQL NULL."""
    if value is None:
        return None
    if binary:
        enc = _BINARY.get(oid)
        if enc is None:
            raise ValueError(f"no binary encoding for type oid {oid}")
        return enc(value, oid)
    return _text(value, oid)


def decode_text_param(raw: bytes | None, fmt: int, oid: int) -> str | None:
    """A bound parameter as text. pgkeep declares its parameters as text, so a binary-format
    parameter is its UTF-8 bytes too; int8 binary (drivers that ignore the declared type) is
    decoded as well."""
    if raw is None:
        return None
    if fmt == 1 and oid == OID.INT8 and len(raw) == 8:
        return str(struct.unpack("!q", raw)[0])
    if fmt == 1 and oid == OID.INT4 and len(raw) == 4:
        return str(struct.unpack("!i", raw)[0])
    return raw.decode("utf-8")
