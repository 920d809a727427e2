"""Frames a client sends before its session is ready (pipelined behind the StartupMessage or
behind its password) are answered in order once it is, as PostgreSQL answers them; compared on
raw sockets with PostgreSQL 18 itself. pgkeep's own statements among them are still pgkeep's."""
from __future__ import annotations

import struct

import pytest

from proxy.wire import messages as m
from tests.support.clusters import USERS

from .rawpg import RawConn, error_fields, query, startup_packet

pytestmark = pytest.mark.timeout(60)


def _password(secret: str) -> bytes:
    return m.frame(b"p", secret.encode() + b"\0")


def _extended(sql: str) -> bytes:
    return (m.frame(b"P", b"\0" + sql.encode() + b"\0" + b"\0\0")
            + m.frame(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
            + m.frame(b"D", b"P\0") + m.frame(b"E", b"\0" + b"\0\0\0\0") + m.frame(b"S"))


def _summary(msgs: list[tuple[bytes, bytes]]) -> list:
    """Types in order, with what may be compared across servers: auth codes, row values, tags,
    ReadyForQuery status and error codes (not parameter values, pids or keys)."""
    out = []
    for kind, body in msgs:
        if kind == b"R":
            out.append(("R", struct.unpack("!i", body[:4])[0]))
        elif kind in (b"D", b"C", b"Z"):
            out.append((kind.decode(), body))
        elif kind == b"E":
            f = error_fields(body)
            out.append(("E", f["C"], f["M"]))
        elif kind not in (b"S", b"K"):  # the server's parameters and key differ in value only
            out.append((kind.decode(), None))
    return out


def _run(port: int, steps: list[bytes], readies: int) -> list:
    """Send each step once the server has answered the one before with an authentication
    request ('R' other than Ok) or an error; collect until `readies` ReadyForQuery or EOF."""
    msgs: list[tuple[bytes, bytes]] = []
    with RawConn(port) as c:
        for i, step in enumerate(steps):
            c.send(step)
            if i < len(steps) - 1:
                while True:
                    kind, body = c.read()
                    msgs.append((kind, body))
                    if kind == b"E" or (kind == b"R" and struct.unpack("!i", body[:4])[0] != 0):
                        break
        seen = sum(1 for k, _ in msgs if k == b"Z")
        while seen < readies:
            try:
                kind, body = c.read()
            except EOFError:
                break
            msgs.append((kind, body))
            seen += kind == b"Z"
            if kind == b"E" and error_fields(body)["S"] == "FATAL":
                break
    return _summary(msgs)


CASES = {
    "trust: startup and a query in one write": (
        [startup_packet() + query("SELECT 1")], 2),
    "trust: startup, two queries and an extended batch in one write": (
        [startup_packet() + query("SELECT 1") + query("SELECT 'two'") + _extended("SELECT 3")], 4),
    "trust: startup and a failing query": (
        [startup_packet() + query("SELECT 1/0") + query("SELECT 'after'")], 3),
    "trust: startup and a Terminate": ([startup_packet() + m.frame(b"X")], 1),
    "password: the password and a query in one write": (
        [startup_packet("pwuser"), _password(USERS["pwuser"][0]) + query("SELECT 'in order'")], 2),
    "password: a wrong password and a query": (
        [startup_packet("pwuser"), _password("wrong") + query("SELECT 1")], 1),
    "password: a query where the password should be": (
        [startup_packet("pwuser") + query("SELECT 1")], 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_early_frames_answered_as_postgresql(name, pgkeep, pg18):
    steps, readies = CASES[name]
    expected = _run(pg18.port, steps, readies)
    assert _run(pgkeep.port, steps, readies) == expected


@pytest.mark.parametrize("user", ["postgres", "pwuser"])
def test_pgkeeps_statement_pipelined_before_ready_is_pgkeeps(user, pgkeep):
    """A pgkeep statement sent before the session is ready (behind the startup packet, or behind
    the password) is still answered by pgkeep, in order with the forwarded ones around it."""
    queries = query("SELECT 'before'") + query("SHOW JOBS") + query("SELECT 'after'")
    with RawConn(pgkeep.port) as c:
        if user == "postgres":
            c.send(startup_packet() + queries)
        else:
            c.send(startup_packet(user))
            assert c.read()[0] == b"R"
            c.send(_password(USERS[user][0]) + queries)
        c.read_until(b"Z")  # the login
        first, jobs, last = c.read_until(b"Z"), c.read_until(b"Z"), c.read_until(b"Z")
        assert [k for k, _ in first] == [b"T", b"D", b"C", b"Z"]
        assert b"before" in first[1][1]
        assert jobs[0][0] == b"T" and b"job_id" in jobs[0][1], jobs
        assert jobs[-2][0] == b"C" and jobs[-1][0] == b"Z"
        assert b"after" in last[1][1]
