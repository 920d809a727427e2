"""Encoders and decoders of the messages pgkeep acts on."""
from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

from proxy.wire import messages as m
from proxy.wire.values import OID, encode_value


def test_bind_round_trip():
    body = (b"portal\0stmt\0" + struct.pack("!hh", 1, 0) + struct.pack("!h", 2)
            + struct.pack("!i", 3) + b"abc" + struct.pack("!i", -1) + struct.pack("!hh", 1, 1))
    b = m.decode_bind(body)
    assert b == m.Bind("portal", "stmt", (0,), (b"abc", None), (1,))


def test_strip_sasl_plus():
    body = struct.pack("!i", 10) + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    assert m.strip_sasl_plus(body) == struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0"


def test_error_fields_always_have_svcm():
    from proxy.errors import error_fields, SyntaxError_
    f = error_fields(SyntaxError_("at or near \"x\": syntax error", position=3))
    assert f == {"S": "ERROR", "V": "ERROR", "C": "42601", "M": 'at or near "x": syntax error',
                 "P": "3"}
    internal = error_fields(ValueError("secret"))
    assert internal["C"] == "XX000" and internal["M"].startswith("internal error")
    assert "secret" not in str(internal)


def test_binary_values():
    assert encode_value(5, OID.INT8, True) == struct.pack("!q", 5)
    assert encode_value(None, OID.INT8, True) is None
    assert encode_value(True, OID.BOOL, False) == b"t"
    ts = dt.datetime(2000, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    assert encode_value(ts, OID.TIMESTAMPTZ, True) == struct.pack("!q", 1_000_000)
    assert encode_value(Decimal("12345.678"), OID.NUMERIC, True) == struct.pack(
        "!hhhh3h", 3, 1, 0, 3, 1, 2345, 6780)
    assert encode_value({"a": 1}, OID.JSONB, True) == b'\x01{"a": 1}'
