"""The interception hook end to end: SHOW/SET/RESET CLUSTER SETTING answered by pgkeep through
every client and both protocols, in order with forwarded statements; other intercepted
families answer 0A000 and malformed ones 42601; the session always goes on."""
from __future__ import annotations

import asyncio
import socket

import asyncpg
import pg8000.dbapi
import pg8000.native
import psycopg
import pytest
from psycopg import errors as pe
from psycopg.pq import TransactionStatus

from proxy.wire import messages as m
from tests.support.clusters import USERS
from tests.support.pgkeep import PgkeepProcess

from .helpers import assert_alive, not_built_statement, psql
from .rawpg import RawConn, error_fields

pytestmark = pytest.mark.timeout(60)

SETTING = "bulkio.backup.file_size"
SHOW = f"SHOW CLUSTER SETTING {SETTING}"
BAD_BACKUP = "BACKUP DATABASE INTO"
BAD_BACKUP_POSITION = 17  # 1-based, at "INTO"
UNBUILT, UNBUILT_FAMILY = not_built_statement()
SETTINGS_COLUMNS = ["variable", "value", "setting_type", "description", "default_value", "origin"]


@pytest.fixture(autouse=True)
def default_settings(pgkeep):
    """Every test starts and ends with the setting at its default."""
    psql(pgkeep.dsn(), "-v", "ON_ERROR_STOP=1", "-qc", f"RESET CLUSTER SETTING {SETTING}")
    yield
    psql(pgkeep.dsn(), "-v", "ON_ERROR_STOP=1", "-qc", f"RESET CLUSTER SETTING {SETTING}")


@pytest.fixture(scope="module")
def pgkeep_b(workdir, pg18):
    """A second pgkeep process in front of the same PostgreSQL (so the same catalog)."""
    proc = PgkeepProcess(workdir / "pgkeep-intercept-b", pg18.dsn()).start()
    yield proc
    proc.stop()


def _connect(proc, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(proc.dsn(), connect_timeout=10, **kw)


def _apg(coro_fn, proc):
    async def main():
        conn = await asyncpg.connect(proc.dsn(), timeout=10)
        try:
            return await asyncio.wait_for(coro_fn(conn), 5)  # a hang fails, it never blocks
        finally:
            await conn.close()
    return asyncio.run(main())


def _psql_at(proc, sql: str) -> str:
    return psql(proc.dsn(), "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql).stdout


# ---- SHOW CLUSTER SETTING through every client ---------------------------------------------

def test_psql_show(pgkeep):
    assert _psql_at(pgkeep, SHOW) == "128 MiB\n"
    out = psql(pgkeep.dsn(), "-c", SHOW).stdout
    assert SETTING in out.splitlines()[0]  # the column is named after the setting
    assert "(1 row)" in out


def test_psycopg_simple_protocol(pgkeep):
    with _connect(pgkeep) as conn:
        cur = conn.execute(SHOW)  # no parameters: psycopg sends a simple Query
        assert [d.name for d in cur.description] == [SETTING]
        assert cur.fetchall() == [("128 MiB",)]
        assert cur.statusmessage == "SELECT 1"
        # case-insensitive keywords and name, trailing semicolon, comments
        assert conn.execute("show cluster setting BULKIO.BACKUP.FILE_SIZE;").fetchone() == ("128 MiB",)
        assert conn.execute(f"/* hi */ {SHOW} -- trailing\n").fetchone() == ("128 MiB",)


def test_psycopg_extended_protocol(pgkeep):
    with _connect(pgkeep) as conn:
        # binary=True forces the extended protocol with binary results (text is bytes as is)
        cur = conn.cursor(binary=True)
        cur.execute(SHOW)
        assert cur.fetchall() == [("128 MiB",)]
        # prepare=True: a named server-side statement, reused
        for _ in range(4):
            assert conn.execute(SHOW, prepare=True).fetchone() == ("128 MiB",)
        assert conn.execute("SELECT %s::text", ("forwarded",), prepare=True).fetchone() == ("forwarded",)


def test_psycopg_prepared_after_threshold(pgkeep):
    with _connect(pgkeep) as conn:
        conn.prepare_threshold = 2
        for i in range(6):
            assert conn.execute(SHOW).fetchone() == ("128 MiB",)
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


def test_psycopg_pipeline_mixed_in_order(pgkeep):
    with _connect(pgkeep) as conn:
        with conn.pipeline():
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute(SHOW)
            c3 = conn.execute("SELECT %s::int", (3,))
            c4 = conn.execute("SHOW CLUSTER SETTINGS")
            c5 = conn.execute("SELECT 'five'")
            c6 = conn.execute(SHOW, prepare=True)
            c7 = conn.execute("SELECT generate_series(1, 3)")
        assert c1.fetchall() == [(1,)]
        assert c2.fetchall() == [("128 MiB",)]
        assert c3.fetchall() == [(3,)]
        rows = c4.fetchall()
        assert [d.name for d in c4.description] == SETTINGS_COLUMNS
        assert (SETTING, "128 MiB") in [r[:2] for r in rows]
        assert c5.fetchall() == [("five",)]
        assert c6.fetchall() == [("128 MiB",)]
        assert c7.fetchall() == [(1,), (2,), (3,)]


def test_psycopg_pipeline_many_syncs(pgkeep):
    with _connect(pgkeep) as conn:
        with conn.pipeline() as p:
            cursors = []
            for i in range(20):
                cursors.append(("fwd", i, conn.execute("SELECT %s::int", (i,))))
                cursors.append(("ours", i, conn.execute(SHOW)))
                if i % 3 == 0:
                    p.sync()
        for kind, i, cur in cursors:
            assert cur.fetchall() == ([(i,)] if kind == "fwd" else [("128 MiB",)])


def test_asyncpg_prepared(pgkeep):
    async def run(conn):
        stmt = await conn.prepare(SHOW)
        assert [a.name for a in stmt.get_attributes()] == [SETTING]
        assert stmt.get_parameters() == ()
        assert await stmt.fetchval() == "128 MiB"
        assert await stmt.fetchval() == "128 MiB"  # executed twice: the portal is re-bound
        assert await conn.fetchval(SHOW) == "128 MiB"
        rows = await conn.fetch("SHOW CLUSTER SETTINGS")
        assert list(rows[0].keys()) == SETTINGS_COLUMNS
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42  # forwarded, same session
        assert await stmt.fetchrow() == (("128 MiB",))
        async with conn.transaction():
            assert await conn.fetchval(SHOW) == "128 MiB"
            cur_values = [r[0] async for r in conn.cursor(SHOW)]
            assert cur_values == ["128 MiB"]
        return True
    assert _apg(run, pgkeep)


def test_pg8000(pgkeep):
    conn = pg8000.dbapi.connect(user="postgres", host="127.0.0.1", port=pgkeep.port,
                                database="postgres", timeout=10)
    try:
        cur = conn.cursor()
        cur.execute(SHOW)
        assert [list(r) for r in cur.fetchall()] == [["128 MiB"]]
        cur.execute("SELECT %s::int * 2", (21,))
        assert cur.fetchone() == [42]
        cur.execute(SHOW)
        assert [d[0] for d in cur.description] == [SETTING]
        assert cur.fetchone() == ["128 MiB"]
    finally:
        conn.close()
    native = pg8000.native.Connection("postgres", host="127.0.0.1", port=pgkeep.port, timeout=10)
    try:
        assert native.run(SHOW) == [["128 MiB"]]
        assert [c["name"] for c in native.columns] == [SETTING]
        ps = native.prepare(SHOW)
        assert ps.run() == [["128 MiB"]]
        assert ps.run() == [["128 MiB"]]
        ps.close()
    finally:
        native.close()


def test_show_cluster_settings_columns(pgkeep):
    with _connect(pgkeep) as conn:
        cur = conn.execute("SHOW CLUSTER SETTINGS")
        assert [d.name for d in cur.description] == SETTINGS_COLUMNS
        rows = {r[0]: r for r in cur.fetchall()}
        row = rows[SETTING]
        assert row[1:3] == ("128 MiB", "z")
        assert row[4:] == ("128 MiB", "default")
        assert "BACKUP" in row[3]
        for variant in ("SHOW ALL CLUSTER SETTINGS", "SHOW PUBLIC CLUSTER SETTINGS"):
            assert SETTING in [r[0] for r in conn.execute(variant).fetchall()]
    out = _psql_at(pgkeep, "SHOW CLUSTER SETTINGS")
    assert f"{SETTING}|128 MiB|z|" in out


# ---- SET / RESET CLUSTER SETTING -----------------------------------------------------------

def test_set_visible_everywhere_then_reset(pgkeep, pgkeep_b):
    with _connect(pgkeep) as a, _connect(pgkeep) as other, _connect(pgkeep_b) as b:
        cur = a.execute(f"SET CLUSTER SETTING {SETTING} = '64 MiB'")
        assert cur.statusmessage == "SET CLUSTER SETTING"
        assert a.execute(SHOW).fetchone() == ("64 MiB",)
        assert other.execute(SHOW).fetchone() == ("64 MiB",)
        assert b.execute(SHOW).fetchone() == ("64 MiB",)  # the other pgkeep process
        row = {r[0]: r for r in b.execute("SHOW CLUSTER SETTINGS").fetchall()}[SETTING]
        assert (row[1], row[4], row[5]) == ("64 MiB", "128 MiB", "override")
        assert _psql_at(pgkeep_b, SHOW) == "64 MiB\n"
        # set from the second process, seen by the first
        b.execute(f"SET CLUSTER SETTING {SETTING} TO '256MiB'")
        assert a.execute(SHOW).fetchone() == ("256 MiB",)
        a.execute(f"RESET CLUSTER SETTING {SETTING}")
        assert b.execute(SHOW).fetchone() == ("128 MiB",)
        assert other.execute(SHOW).fetchone() == ("128 MiB",)
        row = {r[0]: r for r in a.execute("SHOW CLUSTER SETTINGS").fetchall()}[SETTING]
        assert row[5] == "default"
        a.execute(f"SET CLUSTER SETTING {SETTING} = '2GiB'")
        a.execute(f"SET CLUSTER SETTING {SETTING} = DEFAULT")
        assert b.execute(SHOW).fetchone() == ("128 MiB",)


def test_set_through_psql_and_extended(pgkeep):
    out = psql(pgkeep.dsn(), "-v", "ON_ERROR_STOP=1", "-c",
               f"SET CLUSTER SETTING {SETTING} = '64 MiB'").stdout
    assert out.strip() == "SET CLUSTER SETTING"
    with _connect(pgkeep) as conn:
        assert conn.execute(SHOW, prepare=True).fetchone() == ("64 MiB",)
        conn.execute(f"SET CLUSTER SETTING {SETTING} = '96 MiB'", prepare=True)
        assert conn.execute(SHOW).fetchone() == ("96 MiB",)
        conn.execute(f"RESET CLUSTER SETTING {SETTING}", prepare=True)
    assert _psql_at(pgkeep, SHOW) == "128 MiB\n"


def test_set_by_non_superuser_is_refused(pgkeep):
    info = pgkeep.dsn(user="md5user", password=USERS["md5user"][0])
    with psycopg.connect(info, autocommit=True, connect_timeout=10) as conn:
        with pytest.raises(pe.InsufficientPrivilege) as err:
            conn.execute(f"SET CLUSTER SETTING {SETTING} = '64 MiB'")
        assert err.value.sqlstate == "42501"
        # reading is allowed, and nothing changed
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)
        with pytest.raises(pe.InsufficientPrivilege):
            conn.execute(f"RESET CLUSTER SETTING {SETTING}", prepare=True)
        assert conn.execute("SELECT current_user").fetchone() == ("md5user",)

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=pgkeep.port, user="scramuser",
                                     password=USERS["scramuser"][0], database="postgres", timeout=10)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"SET CLUSTER SETTING {SETTING} = '64 MiB'")
            assert await conn.fetchval(SHOW) == "128 MiB"
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(run(), 15))


def test_unknown_setting(pgkeep):
    with _connect(pgkeep) as conn:
        with pytest.raises(pe.UndefinedObject) as err:
            conn.execute("SHOW CLUSTER SETTING no.such.setting")
        assert err.value.sqlstate == "42704"
        with pytest.raises(pe.UndefinedObject):
            conn.execute("SET CLUSTER SETTING no.such.setting = 'x'")
        with pytest.raises(pe.UndefinedObject):
            conn.execute("SHOW CLUSTER SETTING no.such.setting", prepare=True)
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)
    r = psql(pgkeep.dsn(), "-v", "VERBOSITY=verbose", "-c", "SHOW CLUSTER SETTING no.such.setting",
             check=False)
    assert "42704" in r.stderr


@pytest.mark.parametrize("value", ["'lots'", "'12 parsecs'", "'-5 MiB'", "'1 KiB'"])
def test_bad_value(pgkeep, value):
    with _connect(pgkeep) as conn:
        with pytest.raises(pe.InvalidParameterValue) as err:
            conn.execute(f"SET CLUSTER SETTING {SETTING} = {value}")
        assert err.value.sqlstate == "22023"
        with pytest.raises(pe.InvalidParameterValue):
            conn.execute(f"SET CLUSTER SETTING {SETTING} = {value}", prepare=True)
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)


def test_asyncpg_placeholder_binding(pgkeep):
    async def run(conn):
        await conn.execute(f"SET CLUSTER SETTING {SETTING} = $1", "32MiB")
        assert await conn.fetchval(SHOW) == "32 MiB"
        stmt = await conn.prepare(f"SET CLUSTER SETTING {SETTING} = $1")
        assert len(stmt.get_parameters()) == 1
        await stmt.fetch("48 MiB")
        assert await conn.fetchval(SHOW) == "48 MiB"
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.execute(f"SET CLUSTER SETTING {SETTING} = $1", "nonsense")
        assert await conn.fetchval(SHOW) == "48 MiB"
        await conn.execute(f"RESET CLUSTER SETTING {SETTING}")
        return await conn.fetchval(SHOW)
    assert _apg(run, pgkeep) == "128 MiB"


def test_psycopg_placeholder_binding(pgkeep):
    with _connect(pgkeep) as conn:
        conn.execute(f"SET CLUSTER SETTING {SETTING} = %s", ("80 MiB",))
        assert conn.execute(SHOW).fetchone() == ("80 MiB",)


# ---- 0A000 and 42601, both protocols -------------------------------------------------------

def test_unsupported_and_syntax_error_psql(pgkeep):
    script = (f"{UNBUILT};\nSELECT 'after 0A000';\n{BAD_BACKUP};\nSELECT 'after 42601';\n"
              f"{SHOW};\n")
    r = psql(pgkeep.dsn(), "-v", "VERBOSITY=verbose", "-qAt", input=script, check=False)
    assert r.stdout.split("\n") == ["after 0A000", "after 42601", "128 MiB", ""]
    errs = [line for line in r.stderr.splitlines() if "ERROR:" in line]
    assert len(errs) == 2, r.stderr
    assert "0A000" in errs[0] and UNBUILT_FAMILY in errs[0]
    assert "42601" in errs[1]
    # the caret of the syntax error points at INTO (psql prints the LINE and a caret line)
    lines = r.stderr.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("LINE 1: BACKUP DATABASE INTO"))
    assert lines[i + 1].index("^") - len("LINE 1: ") == BAD_BACKUP_POSITION - 1


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_unsupported_and_syntax_error_psycopg(pgkeep, mode):
    def run(conn, sql):
        if mode == "simple":
            return conn.execute(sql)
        if mode == "extended":
            cur = conn.cursor(binary=True)
            return cur.execute(sql)
        return conn.execute(sql, prepare=True)

    with _connect(pgkeep) as conn:
        with pytest.raises(pe.FeatureNotSupported) as err:
            run(conn, UNBUILT)
        assert err.value.sqlstate == "0A000"
        assert UNBUILT_FAMILY in err.value.diag.message_primary
        assert run(conn, "SELECT 'usable'").fetchone() == ("usable",)
        with pytest.raises(pe.SyntaxError) as err:
            run(conn, BAD_BACKUP)
        assert err.value.sqlstate == "42601"
        assert err.value.diag.statement_position == str(BAD_BACKUP_POSITION)
        assert run(conn, SHOW).fetchone() == ("128 MiB",)
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_unsupported_and_syntax_error_asyncpg(pgkeep):
    async def run(conn):
        with pytest.raises(asyncpg.FeatureNotSupportedError) as err:
            await conn.execute(UNBUILT)  # no args: asyncpg's simple protocol
        assert UNBUILT_FAMILY in err.value.message
        with pytest.raises(asyncpg.FeatureNotSupportedError) as err:
            await conn.fetch(UNBUILT)  # extended protocol, named statement
        assert err.value.sqlstate == "0A000" and UNBUILT_FAMILY in err.value.message
        with pytest.raises(asyncpg.PostgresSyntaxError) as err:
            await conn.fetch(BAD_BACKUP)
        assert err.value.sqlstate == "42601"
        assert err.value.position == str(BAD_BACKUP_POSITION)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await conn.prepare(BAD_BACKUP)
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await conn.execute(BAD_BACKUP)
        return await conn.fetchval("SELECT 'usable'"), await conn.fetchval(SHOW)
    assert _apg(run, pgkeep) == ("usable", "128 MiB")


def test_unsupported_raw_bytes(pgkeep):
    """Exact answer to an intercepted 0A000 in a simple Query: ErrorResponse, ReadyForQuery 'I'."""
    with RawConn(pgkeep.port) as c:
        c.login()
        msgs = c.simple(UNBUILT)
        assert [k for k, _ in msgs] == [b"E", b"Z"]
        fields = error_fields(msgs[0][1])
        assert (fields["S"], fields["C"]) == ("ERROR", "0A000")
        assert UNBUILT_FAMILY in fields["M"]
        assert msgs[1][1] == b"I"
        msgs = c.simple(BAD_BACKUP)
        assert [k for k, _ in msgs] == [b"E", b"Z"]
        fields = error_fields(msgs[0][1])
        assert (fields["C"], fields["P"]) == ("42601", str(BAD_BACKUP_POSITION))


# ---- multi-statement simple Query -----------------------------------------------------------

def test_multi_statement_stops_at_intercepted_error(pgkeep, pg18_admin):
    pg18_admin.execute("DROP TABLE IF EXISTS icpt_t1")
    with _connect(pgkeep) as conn:
        with pytest.raises(pe.FeatureNotSupported):
            conn.execute(f"CREATE TABLE icpt_t1(a int); {UNBUILT}; INSERT INTO icpt_t1 VALUES (1)")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM icpt_t1").fetchone() == (0,)
    assert pg18_admin.execute("SELECT to_regclass('icpt_t1') IS NOT NULL").fetchone() == (True,)


def test_multi_statement_three_results_in_order(pgkeep):
    with _connect(pgkeep) as conn:
        cur = conn.execute(f"SELECT 1; {SHOW}; SELECT 2")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        assert results == [[(1,)], [("128 MiB",)], [(2,)]]
        cur = conn.execute(f"{SHOW}; SHOW CLUSTER SETTINGS; SELECT 'x', 'y'; {SHOW}")
        shapes = [len(cur.description)]
        while cur.nextset():
            shapes.append(len(cur.description))
        assert shapes == [1, 6, 2, 1]
    assert _psql_at(pgkeep, f"SELECT 1; {SHOW}; SELECT 2") == "1\n128 MiB\n2\n"


def test_multi_statement_forwarded_error_stops_intercepted(pgkeep):
    with _connect(pgkeep) as conn:
        with pytest.raises(pe.DivisionByZero):
            conn.execute(f"SELECT 1/0; SET CLUSTER SETTING {SETTING} = '64 MiB'")
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)


def test_multi_statement_syntax_error_runs_nothing(pgkeep, pg18_admin):
    """PostgreSQL parses the whole Query string before running any of it: a syntax error in any
    statement means none runs (`SELECT 1; SELEC 2` returns only the error)."""
    pg18_admin.execute("DROP TABLE IF EXISTS icpt_syn")
    with _connect(pgkeep) as conn:
        with pytest.raises(pe.SyntaxError) as err:
            conn.execute(f"CREATE TABLE icpt_syn(a int); SET CLUSTER SETTING {SETTING} = '64 MiB'; "
                         f"{BAD_BACKUP}")
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)
        assert conn.execute("SELECT to_regclass('icpt_syn') IS NULL").fetchone() == (True,)
        assert err.value.diag.statement_position is not None


def test_multi_statement_raw_message_sequence(pgkeep):
    with RawConn(pgkeep.port) as c:
        c.login()
        msgs = c.simple(f"SELECT 1; {SHOW}; SELECT 2")
        assert [k for k, _ in msgs] == [b"T", b"D", b"C", b"T", b"D", b"C", b"T", b"D", b"C", b"Z"]
        assert msgs[5][1] == b"SELECT 1\0"
        msgs = c.simple("")
        assert [k for k, _ in msgs] == [b"I", b"Z"]


# ---- transactions ----------------------------------------------------------------------------

def test_transaction_status_in_explicit_transaction(pgkeep):
    with _connect(pgkeep) as conn:
        conn.execute("BEGIN")
        conn.execute("CREATE TEMP TABLE icpt_tx(a int)")
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute(SHOW, prepare=True).fetchone() == ("128 MiB",)
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.execute("INSERT INTO icpt_tx VALUES (1)")
        conn.execute("COMMIT")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM icpt_tx").fetchone() == (1,)


def test_transaction_status_non_autocommit(pgkeep):
    with _connect(pgkeep, autocommit=False) as conn:
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)  # psycopg sent BEGIN first
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_begin_show_commit_in_one_query(pgkeep):
    with RawConn(pgkeep.port) as c:
        c.login()
        msgs = c.simple(f"BEGIN; {SHOW}")
        assert msgs[-1] == (b"Z", b"T")
        msgs = c.simple(f"{SHOW}; COMMIT")
        assert msgs[-1] == (b"Z", b"I")


def test_intercepted_statement_in_failed_transaction(pgkeep):
    """Like any statement in an aborted transaction: 25P02, and the status stays 'E'."""
    with _connect(pgkeep) as conn:
        conn.execute("BEGIN")
        with pytest.raises(pe.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(pe.InFailedSqlTransaction):
            conn.execute(SHOW)
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(pe.InFailedSqlTransaction):
            conn.execute(f"SET CLUSTER SETTING {SETTING} = '64 MiB'", prepare=True)
        conn.execute("ROLLBACK")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)


def test_set_cluster_setting_refused_in_explicit_transaction(pgkeep):
    """CockroachDB refuses SET CLUSTER SETTING inside a transaction (25001); here it would also
    escape the transaction (pgkeep writes its catalog on its own connection), so a ROLLBACK
    could not undo it."""
    with _connect(pgkeep) as conn:
        conn.execute("BEGIN")
        with pytest.raises(pe.ActiveSqlTransaction):
            conn.execute(f"SET CLUSTER SETTING {SETTING} = '64 MiB'")
        conn.execute("ROLLBACK")
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)


# ---- the extended-protocol error rule --------------------------------------------------------
# After an ErrorResponse, PostgreSQL ignores every extended-protocol message up to Sync; pgkeep's
# answers to intercepted messages must follow the same rule, whoever raised the error.

def test_pipeline_error_skips_intercepted_until_sync(pgkeep):
    """psycopg's own pattern: the forwarded query fails, its error is read, then an intercepted
    statement is sent before the Sync: libpq expects no answer for it (PipelineAborted)."""
    with _connect(pgkeep) as conn:
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            with pytest.raises(pe.UndefinedTable):
                conn.execute("SELECT * FROM no_such_table_icpt").fetchone()
            with pytest.raises(pe.PipelineAborted):
                conn.execute(SHOW).fetchone()
            with pytest.raises(pe.PipelineAborted):
                conn.execute(f"SET CLUSTER SETTING {SETTING} = '64 MiB'").fetchone()
            p.sync()
            c3 = conn.execute(SHOW)
            c4 = conn.execute("SELECT 4")
        assert c1.fetchone() == (1,)
        assert c3.fetchone() == ("128 MiB",)
        assert c4.fetchone() == (4,)
        # the skipped SET never ran
        assert conn.execute(SHOW).fetchone() == ("128 MiB",)


def test_pipeline_intercepted_error_skips_forwarded_until_sync(pgkeep, pg18_admin):
    pg18_admin.execute("DROP TABLE IF EXISTS icpt_pipe; CREATE TABLE icpt_pipe(a int)")
    with _connect(pgkeep) as conn:
        with conn.pipeline() as p:
            with pytest.raises(pe.FeatureNotSupported):
                conn.execute(UNBUILT).fetchone()
            with pytest.raises(pe.PipelineAborted):
                conn.execute("INSERT INTO icpt_pipe VALUES (1)").fetchone()
            with pytest.raises(pe.PipelineAborted):
                conn.execute(SHOW).fetchone()
            p.sync()
            after = conn.execute("SELECT count(*) FROM icpt_pipe")
            show = conn.execute(SHOW)
        assert after.fetchone() == (0,)
        assert show.fetchone() == ("128 MiB",)


def _parse(name: str, text: str) -> bytes:
    return m.frame(b"P", name.encode() + b"\0" + text.encode() + b"\0\0\0")


def _bind(portal: str, stmt: str) -> bytes:
    return m.frame(b"B", portal.encode() + b"\0" + stmt.encode() + b"\0" + b"\0\0\0\0\0\0")


def _describe(kind: bytes, name: str) -> bytes:
    return m.frame(b"D", kind + name.encode() + b"\0")


def _execute(portal: str) -> bytes:
    return m.frame(b"E", portal.encode() + b"\0\0\0\0\0")


SYNC, FLUSH = m.frame(b"S"), m.frame(b"H")


def _read_for(c: RawConn, seconds: float) -> list[tuple[bytes, str]]:
    """Every message that arrives within `seconds` (error messages shown by SQLSTATE)."""
    out = []
    c.sock.settimeout(seconds)
    try:
        while True:
            kind, body = c.read()
            out.append((kind, error_fields(body)["C"] if kind == b"E" else ""))
    except socket.timeout:
        return out
    finally:
        c.sock.settimeout(10)


def test_raw_error_and_intercepted_in_one_batch(pgkeep):
    """A forwarded query that fails and an intercepted SET, sent together with their Sync."""
    set_ = f"SET CLUSTER SETTING {SETTING} = '64 MiB'"
    with RawConn(pgkeep.port) as c:
        c.login()
        c.send(_parse("", "SELECT 1") + _bind("", "") + _describe(b"P", "") + _execute("")
               + _parse("", "SELECT * FROM no_such_table_icpt") + _bind("", "") + _execute("")
               + _parse("", set_) + _bind("", "") + _describe(b"P", "") + _execute("") + SYNC)
        got = [k for k, _ in c.read_until(b"Z")]
        assert got == [b"1", b"2", b"T", b"D", b"C", b"E", b"Z"]
        c.send(_parse("", SHOW) + _bind("", "") + _execute("")
               + _parse("", "SELECT 4") + _bind("", "") + _execute("") + SYNC)
        msgs = c.read_until(b"Z")
        assert [k for k, _ in msgs] == [b"1", b"2", b"D", b"C", b"1", b"2", b"D", b"C", b"Z"]
        assert msgs[2][1].endswith(b"128 MiB")  # the SET never ran


def test_raw_upstream_error_then_intercepted_before_sync(pgkeep):
    """The error comes back (Flush) before the intercepted messages are even sent: they must
    still get no answer until the Sync."""
    with RawConn(pgkeep.port) as c:
        c.login()
        c.send(_parse("", "SELECT * FROM no_such_table_icpt") + _bind("", "") + _execute("") + FLUSH)
        assert _read_for(c, 0.5) == [(b"E", "42P01")]
        c.send(_parse("", SHOW) + _bind("", "") + _describe(b"P", "") + _execute("") + FLUSH)
        assert _read_for(c, 0.5) == []
        c.send(SYNC)
        assert c.read() == (b"Z", b"I")
        c.send(_parse("", SHOW) + _bind("", "") + _execute("") + SYNC)
        assert [k for k, _ in c.read_until(b"Z")] == [b"1", b"2", b"D", b"C", b"Z"]


def test_raw_intercepted_error_then_forwarded_before_sync(pgkeep, pg18_admin):
    """pgkeep's own ErrorResponse (0A000 at Execute) aborts the batch for the upstream's
    messages too: a forwarded INSERT sent after it, before the Sync, must not run."""
    pg18_admin.execute("DROP TABLE IF EXISTS icpt_raw; CREATE TABLE icpt_raw(a int)")
    with RawConn(pgkeep.port) as c:
        c.login()
        c.send(_parse("", UNBUILT) + _bind("", "") + _execute("") + FLUSH)
        assert _read_for(c, 0.5) == [(b"1", ""), (b"2", ""), (b"E", "0A000")]
        c.send(_parse("", "INSERT INTO icpt_raw VALUES (1)") + _bind("", "") + _execute("") + FLUSH)
        assert _read_for(c, 0.5) == []
        c.send(SYNC)
        assert c.read() == (b"Z", b"I")
    assert pg18_admin.execute("SELECT count(*) FROM icpt_raw").fetchone() == (0,)


def test_raw_intercepted_parse_error_then_sync_in_next_packet(pgkeep):
    """asyncpg's pattern: Parse/Describe/Flush, read the error, then Sync on its own. The next
    batch must be answered normally, not skipped as if the old error still held."""
    with RawConn(pgkeep.port) as c:
        c.login()
        for round_ in range(2):
            c.send(_parse(f"bad{round_}", BAD_BACKUP) + _describe(b"S", f"bad{round_}") + FLUSH)
            assert _read_for(c, 0.5) == [(b"E", "42601")], round_
            c.send(SYNC)
            assert c.read() == (b"Z", b"I")
        c.send(_parse("good", SHOW) + _bind("", "good") + _execute("") + SYNC)
        got = c.read_until(b"Z")
        assert [k for k, _ in got] == [b"1", b"2", b"D", b"C", b"Z"]


def test_asyncpg_repeated_syntax_errors(pgkeep):
    async def run(conn):
        for _ in range(3):
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await conn.fetch(BAD_BACKUP)
        return await conn.fetchval(SHOW)
    assert _apg(run, pgkeep) == "128 MiB"


def test_asyncpg_executemany_mixed(pgkeep):
    async def run(conn):
        await conn.executemany(f"SET CLUSTER SETTING {SETTING} = $1", [("10MiB",), ("20MiB",)])
        value = await conn.fetchval(SHOW)
        await conn.execute(f"RESET CLUSTER SETTING {SETTING}")
        return value
    assert _apg(run, pgkeep) == "20 MiB"


def test_forwarded_show_and_set_still_go_upstream(pgkeep):
    """PostgreSQL's own SHOW/SET are not pgkeep's."""
    with _connect(pgkeep) as conn:
        conn.execute("SET work_mem = '5MB'")
        assert conn.execute("SHOW work_mem").fetchone() == ("5MB",)
        assert conn.execute("SELECT 'SHOW CLUSTER SETTING x' AS s").fetchone() == ("SHOW CLUSTER SETTING x",)
        assert conn.execute("SELECT $$BACKUP DATABASE d INTO 'x'$$").fetchone() == ("BACKUP DATABASE d INTO 'x'",)
        assert conn.execute("/* BACKUP DATABASE d INTO 'x' */ SELECT 1").fetchone() == (1,)
        with pytest.raises(pe.UndefinedObject):
            conn.execute("SHOW no_such_guc_here")


def test_pgkeep_alive_after_all(pgkeep, pgkeep_b):
    assert_alive(pgkeep)
    assert_alive(pgkeep_b)
