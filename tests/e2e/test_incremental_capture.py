"""Change capture of incremental layers, one test per case of docs/FORMAT.md section 7.3's argument
(issue 14 point 2). Each case is a table (or a few) built so that a plausible wrong capture would
restore wrong rows: a count-only test, a comparison with the parent snapshot's xmax or its
in-progress list, a test that ignores relfilenode or the table's identity, or one that trusts the
parent's page ranges after the table shrank. All cases share one chain (a full and three
incrementals of one database, chunks of 8 pages), so the whole file costs one chain: each layer is
restored through pgkeep with psql (RESTORE ... AS OF SYSTEM TIME its end time) and compared with
the source as it was at the layer's snapshot. Each case also checks that it did what it claims
(HOT updates counted by PostgreSQL, slots reused, tuples frozen, a relfilenode kept or not) and
which chunks the layer copied, read from the layer's manifest."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import psycopg
import pytest

from tests.e2e.helpers import psql
from tests.support.layers import (collection, copied_chunks, kept_chunks, layer_end_times, read_state,
                                  table_entry, through, tip_manifest)

DB = "cap_src"
LAYERS = 4                  # the full and three incrementals
CHUNK = "64KiB"             # 8 pages of 8 KiB: a 2000-row table makes three chunks


@pytest.fixture(scope="module", autouse=True)
def small_chunks(pgkeep):
    through(pgkeep, f"SET CLUSTER SETTING pgkeep.backup.chunk_size = '{CHUNK}'")
    yield
    through(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.chunk_size")


class Source:
    """The source database, changed straight through the upstream (not through pgkeep)."""

    def __init__(self, cluster, db: str) -> None:
        self.dsn = cluster.dsn(db)
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.facts: dict[str, object] = {}

    def __call__(self, *statements: str) -> None:
        for s in statements:            # one at a time: VACUUM and CLUSTER refuse a transaction
            self.conn.execute(s)

    def one(self, sql: str):
        return self.conn.execute(sql).fetchone()

    def table(self, name: str, rows: int = 2000, fillfactor: int = 100, pk: bool = True) -> None:
        self(f"CREATE TABLE {name} (id int {'PRIMARY KEY' if pk else ''}, v int NOT NULL, pad text) "
             f"WITH (fillfactor = {fillfactor}, autovacuum_enabled = off)",
             f"INSERT INTO {name} SELECT g, 0, repeat('p', 40) FROM generate_series(1, {rows}) g")

    def page(self, table: str, id_: int) -> int:
        return self.one(f"SELECT (ctid::text::point)[0]::int FROM {table} WHERE id = {id_}")[0]

    def ctids(self, table: str, where: str) -> list[str]:
        return [r[0] for r in self.conn.execute(f"SELECT ctid::text FROM {table} WHERE {where} ORDER BY ctid")]

    def relfilenode(self, table: str) -> int:
        return self.one(f"SELECT relfilenode FROM pg_class WHERE oid = '{table}'::regclass")[0]

    def frozen(self, table: str, where: str) -> bool:
        """Every row matching `where` has an xmin that precedes the table's relfrozenxid."""
        return self.one(f"SELECT bool_and(age(t.xmin) > age(c.relfrozenxid)) FROM {table} t, pg_class c "
                        f"WHERE c.oid = '{table}'::regclass AND {where}")[0]

    def hot_updates(self, table: str) -> int:
        self("SELECT pg_stat_force_next_flush()")     # this backend's counts, flushed when idle
        return self.one(f"SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = '{table}'::regclass")[0]

    def txn(self) -> psycopg.Connection:
        """A connection whose transaction the caller keeps open across a layer."""
        return psycopg.connect(self.dsn)

    def close(self) -> None:
        self.conn.close()


@dataclass
class Chain:
    expected: list          # State of the source at each layer
    restored: list          # State of each layer's restore
    manifests: list         # each layer's manifest (JSON), taken right after it
    facts: dict

    def copied(self, k: int, table: str) -> list[tuple]:
        return copied_chunks(self.manifests[k - 1], self.manifests[k], DB, table)

    def kept(self, k: int, table: str) -> list[tuple]:
        """The chunks holding rows that layer k took from its parent."""
        return kept_chunks(self.manifests[k - 1], self.manifests[k], DB, table, rows=True)

    def chunk(self, k: int, table: str, page: int) -> tuple:
        """The page range of layer k's chunk of `table` that holds `page`."""
        for c in table_entry(self.manifests[k], DB, table)["chunks"]:
            lo, hi = c["range"]
            if lo <= page and (hi is None or page < hi):
                return tuple(c["range"])
        raise AssertionError(f"no chunk of {table} holds page {page} in layer {k}")


@dataclass
class Case:
    name: str
    tables: list[str]
    setup: Callable[[Source], None]
    # before layer k: change the source; may return what to do right after layer k is taken
    steps: dict[int, Callable[[Source], Callable[[], None] | None]]
    changed: set[int]                         # layers whose rows of `tables` differ from the previous
    check: Callable[[Chain], None] | None = None
    holds: bool = False                       # keeps a transaction open across a layer: runs last
    compares: tuple[str, ...] = ("rows",)     # what of the restored State this case compares

    def __repr__(self) -> str:
        return self.name


CASES: list[Case] = []


def case(name, tables, changed, steps, holds=False, compares=("rows",)):
    """Register a case: the decorated function is its setup; `check` is attached after."""
    def register(setup):
        c = Case(name, [f"public.{t}" for t in tables], setup, steps, changed, holds=holds,
                 compares=compares)
        CASES.append(c)
        return c
    return register


# -- frozen tuples: inserted after the parent, frozen before the layer; raw xmin is what counts ----

def _frozen_1(s: Source):
    before = s.page("frozen", 10)
    s("UPDATE frozen SET v = 1 WHERE id = 10", "VACUUM FREEZE frozen")
    s.facts["frozen_1"] = (before, s.page("frozen", 10), s.frozen("frozen", "id = 10"))


def _frozen_2(s: Source):
    page = s.page("frozen", 1950)
    s("INSERT INTO frozen VALUES (5001, 2, 'new')", "DELETE FROM frozen WHERE id = 1950",
      "VACUUM FREEZE frozen")
    s.facts["frozen_2"] = (page, s.page("frozen", 5001), s.frozen("frozen", "id = 5001"))


@case("frozen", ["frozen"], {1, 2}, {1: _frozen_1, 2: _frozen_2})
def frozen(s: Source):
    s.table("frozen", rows=1950, fillfactor=90)


def _check_frozen(c: Chain):
    before, after, is_frozen = c.facts["frozen_1"]
    assert before == after and is_frozen, "the updated row must stay on its page and be frozen"
    assert c.copied(1, "public.frozen") == [c.chunk(1, "public.frozen", before)]
    old, new, is_frozen = c.facts["frozen_2"]
    assert is_frozen and c.chunk(2, "public.frozen", old) == c.chunk(2, "public.frozen", new), \
        "the frozen insert must land in the chunk of the deleted row (same row count)"
    assert c.copied(2, "public.frozen") == [c.chunk(2, "public.frozen", new)]


frozen.check = _check_frozen


# -- HOT chains: updates that stay on their page, counted by PostgreSQL as HOT ---------------------

def _hot(k):
    def step(s: Source):
        n = s.hot_updates("hot")
        s("UPDATE hot SET v = v + 1 WHERE id IN (5, 1000)")
        s.facts[f"hot_{k}"] = s.hot_updates("hot") - n
    return step


@case("hot", ["hot"], {1, 2}, {1: _hot(1), 2: _hot(2)})
def hot(s: Source):
    s.table("hot", fillfactor=50)
    s.facts["hot_pages"] = (s.page("hot", 5), s.page("hot", 1000))


def _check_hot(c: Chain):
    assert c.facts["hot_1"] == 2 and c.facts["hot_2"] == 2, "the updates must be HOT"
    pages = c.facts["hot_pages"]
    for k in (1, 2):
        assert sorted(c.copied(k, "public.hot")) == sorted({c.chunk(k, "public.hot", p) for p in pages})
        assert c.kept(k, "public.hot"), "chunks without an update are kept"


hot.check = _check_hot


# -- aborted transactions: an insert, a delete and an update rolled back ---------------------------

def _aborted_1(s: Source):
    with s.txn() as t:
        t.execute("INSERT INTO aborted SELECT g, 9, 'x' FROM generate_series(3001, 3010) g")
        t.rollback()
        t.execute("DELETE FROM aborted WHERE id = 10")
        t.rollback()
        t.execute("UPDATE aborted SET v = 5 WHERE id = 900")
        t.rollback()


def _aborted_2(s: Source):
    # one committed delete and one committed insert in the last chunk, with a rolled-back delete
    s("DELETE FROM aborted WHERE id = 1990")
    with s.txn() as t:
        t.execute("DELETE FROM aborted WHERE id = 1991")
        t.rollback()
    s("INSERT INTO aborted VALUES (3001, 1, 'after')")
    s.facts["aborted_pages"] = (s.page("aborted", 1991), s.page("aborted", 3001))


@case("aborted", ["aborted"], {2}, {1: _aborted_1, 2: _aborted_2})
def aborted(s: Source):
    s.table("aborted")


def _check_aborted(c: Chain):
    assert c.copied(1, "public.aborted") == [], "rolled-back changes copy nothing"
    old, new = c.facts["aborted_pages"]
    assert c.chunk(2, "public.aborted", old) == c.chunk(2, "public.aborted", new)
    assert c.copied(2, "public.aborted") == [c.chunk(2, "public.aborted", new)]


aborted.check = _check_aborted


# -- a transaction in progress at the layer's snapshot: committed after it -------------------------

def _in_progress_1(s: Source):
    t = s.txn()
    t.execute("UPDATE inprog SET v = 7 WHERE id = 10")       # same page, same row count
    t.execute("INSERT INTO inprog SELECT g, 7, 'open' FROM generate_series(5001, 5003) g")
    s.facts["inprog_page"] = t.execute("SELECT (ctid::text::point)[0]::int FROM inprog WHERE id = 10").fetchone()[0]

    def commit():
        t.commit()
        t.close()
    return commit


@case("in_progress", ["inprog"], {2}, {1: _in_progress_1}, holds=True)
def in_progress(s: Source):
    s.table("inprog", rows=1950, fillfactor=90)


def _check_in_progress(c: Chain):
    page = c.facts["inprog_page"]
    assert page == 0
    assert c.chunk(2, "public.inprog", page) in c.copied(2, "public.inprog")


in_progress.check = _check_in_progress


# -- subtransactions of a transaction open at the parent's snapshot, committed before the layer ----

def _subxact_0(s: Source):
    t = s.txn()
    t.execute("SAVEPOINT a")
    t.execute("UPDATE subxact SET v = 3 WHERE id = 10")                  # a new version, same page
    t.execute("RELEASE SAVEPOINT a")
    t.execute("SAVEPOINT b")
    t.execute("INSERT INTO subxact VALUES (5001, 3, 'sub')")
    t.execute("RELEASE SAVEPOINT b")
    t.execute("SAVEPOINT c")
    t.execute("INSERT INTO subxact VALUES (5002, 3, 'rolled back')")
    t.execute("ROLLBACK TO SAVEPOINT c")
    t.execute("DELETE FROM subxact WHERE id = 1950")                     # the last chunk keeps its count

    def commit():
        t.commit()
        t.close()
        s.facts["subxact_xmin"] = int(s.one("SELECT xmin::text FROM subxact WHERE id = 10")[0])
    return commit


@case("subtransactions", ["subxact"], {1}, {0: _subxact_0}, holds=True)
def subtransactions(s: Source):
    s.table("subxact", rows=1950, fillfactor=90)


def _check_subtransactions(c: Chain):
    xmin, xmax, xip = c.manifests[0]["databases"][0]["snapshot"].split(":")
    sub = c.facts["subxact_xmin"]
    in_progress = {int(x) % (1 << 32) for x in xip.split(",") if x}
    assert int(xmin) % (1 << 32) <= sub < int(xmax) % (1 << 32) and sub not in in_progress, \
        "the savepoint's xid must be below the full's xmax and absent from its in-progress list"
    assert c.chunk(1, "public.subxact", 0) in c.copied(1, "public.subxact")


subtransactions.check = _check_subtransactions


# -- page pruning: delete, VACUUM, insert into the very same slots --------------------------------

def _pruning_1(s: Source):
    before = s.ctids("pruned", "id BETWEEN 200 AND 204")
    s("DELETE FROM pruned WHERE id BETWEEN 200 AND 204", "VACUUM pruned",
      "INSERT INTO pruned SELECT g, 1, 'reused' FROM generate_series(4001, 4005) g")
    s.facts["pruned"] = (before, s.ctids("pruned", "id > 4000"))


@case("page_pruning", ["pruned"], {1}, {1: _pruning_1})
def page_pruning(s: Source):
    s.table("pruned")


def _check_pruning(c: Chain):
    before, after = c.facts["pruned"]
    assert before == after, "the new rows must take the deleted rows' slots"
    page = int(re.match(r"\((\d+),", before[0]).group(1))
    assert c.copied(1, "public.pruned") == [c.chunk(1, "public.pruned", page)]


page_pruning.check = _check_pruning


# -- a chunk whose row count is unchanged: one row deleted, one inserted ----------------------------

def _same_count_1(s: Source):
    page = s.page("samecount", 1990)
    s("DELETE FROM samecount WHERE id = 1990", "INSERT INTO samecount VALUES (4001, 1, 'swap')")
    s.facts["samecount"] = (page, s.page("samecount", 4001))


@case("same_row_count", ["samecount"], {1}, {1: _same_count_1})
def same_row_count(s: Source):
    s.table("samecount")


def _check_same_count(c: Chain):
    old, new = c.facts["samecount"]
    assert c.chunk(1, "public.samecount", old) == c.chunk(1, "public.samecount", new)
    assert c.copied(1, "public.samecount") == [c.chunk(1, "public.samecount", new)]


same_row_count.check = _check_same_count


# -- DELETE only ------------------------------------------------------------------------------------

def _delete_1(s: Source):
    s.facts["deleted_page"] = s.page("deleted", 900)
    s("DELETE FROM deleted WHERE id BETWEEN 900 AND 905")


@case("delete_only", ["deleted"], {1}, {1: _delete_1})
def delete_only(s: Source):
    s.table("deleted")


def _check_delete(c: Chain):
    assert c.copied(1, "public.deleted") == [c.chunk(1, "public.deleted", c.facts["deleted_page"])]


delete_only.check = _check_delete


# -- TRUNCATE, then as many rows again ---------------------------------------------------------------

def _truncate(k):
    def step(s: Source):
        node = s.relfilenode("truncated")
        if k == 1:
            s("TRUNCATE truncated",
              "INSERT INTO truncated SELECT g, 1, repeat('a', 40) FROM generate_series(1, 2000) g")
        else:   # in one transaction: COPY ... FREEZE writes its rows frozen
            with s.txn() as t:
                t.execute("TRUNCATE truncated")
                with t.cursor().copy("COPY truncated FROM STDIN WITH (FREEZE)") as cp:
                    for i in range(1, 2001):
                        cp.write_row((i, 2, "f" * 40))
        s.facts[f"truncated_{k}"] = node != s.relfilenode("truncated")
    return step


@case("truncate", ["truncated"], {1, 2}, {1: _truncate(1), 2: _truncate(2)})
def truncate(s: Source):
    s.table("truncated")


def _check_truncate(c: Chain):
    assert c.facts["truncated_1"] and c.facts["truncated_2"]
    for k in (1, 2):
        assert c.kept(k, "public.truncated") == []


truncate.check = _check_truncate


# -- VACUUM FULL and CLUSTER: rows move between chunks, keeping their xmin -------------------------

def _rewrite(k):
    def step(s: Source):
        node = s.relfilenode("rewritten")
        if k == 1:
            before = s.one("SELECT count(*) FROM rewritten WHERE ctid < '(8,0)'")[0]
            s("DELETE FROM rewritten WHERE id <= 50", "VACUUM FULL rewritten")
            after = s.one("SELECT count(*) FROM rewritten WHERE ctid < '(8,0)'")[0]
            s.facts["rewritten_counts"] = (before, after)
        else:
            s("UPDATE rewritten SET v = 3000 - id", "CLUSTER rewritten USING rewritten_v")
        s.facts[f"rewritten_{k}"] = node != s.relfilenode("rewritten")
    return step


@case("vacuum_full_and_cluster", ["rewritten"], {1, 2}, {1: _rewrite(1), 2: _rewrite(2)})
def vacuum_full_and_cluster(s: Source):
    s.table("rewritten")
    s("CREATE INDEX rewritten_v ON rewritten (v)")


def _check_rewrite(c: Chain):
    before, after = c.facts["rewritten_counts"]
    assert before == after, "the first chunk must hold as many rows after VACUUM FULL as before"
    assert c.facts["rewritten_1"] and c.facts["rewritten_2"]
    for k in (1, 2):
        assert c.kept(k, "public.rewritten") == []


vacuum_full_and_cluster.check = _check_rewrite


# -- a table dropped and re-created under its name; two tables swapping names ----------------------

def _recreate_1(s: Source):
    s("DROP TABLE recreated")
    s.table("recreated")
    s("UPDATE recreated SET v = 1")


def _swap_2(s: Source):
    s("ALTER TABLE swap_a RENAME TO swap_tmp", "ALTER TABLE swap_b RENAME TO swap_a",
      "ALTER TABLE swap_tmp RENAME TO swap_b")


@case("recreated_and_renamed", ["recreated", "swap_a", "swap_b"], {1, 2}, {1: _recreate_1, 2: _swap_2})
def recreated_and_renamed(s: Source):
    s.table("recreated")
    s.table("swap_a", rows=500)
    s.table("swap_b", rows=500)
    s("UPDATE swap_b SET v = 1")


def _check_recreated(c: Chain):
    assert c.kept(1, "public.recreated") == []
    assert c.kept(2, "public.swap_a") == [] and c.kept(2, "public.swap_b") == []


recreated_and_renamed.check = _check_recreated


# -- columns added with a default (no rewrite), dropped, and re-added under the same name ----------

def _columns(k):
    def step(s: Source):
        node = s.relfilenode("cols")
        s(*{1: ["ALTER TABLE cols ADD COLUMN c int DEFAULT 7"],
            2: ["ALTER TABLE cols DROP COLUMN c", "ALTER TABLE cols ADD COLUMN c int DEFAULT 9"],
            3: ["ALTER TABLE cols DROP COLUMN pad"]}[k])
        s.facts[f"cols_{k}"] = node == s.relfilenode("cols")
    return step


@case("columns", ["cols"], {1, 2, 3}, {k: _columns(k) for k in (1, 2, 3)})
def columns(s: Source):
    s.table("cols")


def _check_columns(c: Chain):
    assert all(c.facts[f"cols_{k}"] for k in (1, 2, 3)), "no rewrite: the same relfilenode"
    cols = [table_entry(m, DB, "public.cols")["columns"] for m in c.manifests]
    assert cols[1] == cols[2] == ["id", "v", "pad", "c"], "same column names, other attributes"
    for k in (1, 2, 3):
        assert c.kept(k, "public.cols") == []


columns.check = _check_columns


# -- sequences advanced --------------------------------------------------------------------------

@case("sequences", ["ident"], {1, 3},
      {1: lambda s: s("SELECT nextval('seq_a')", "SELECT nextval('seq_a')",
                      "INSERT INTO ident (v) SELECT generate_series(1, 3)"),
       2: lambda s: s("SELECT setval('seq_a', 100, false)", "SELECT setval('ident_id_seq', 50)"),
       3: lambda s: s("SELECT nextval('seq_a')", "INSERT INTO ident (v) VALUES (4)")},
      compares=("rows", "sequences"))
def sequences(s: Source):
    s("CREATE SEQUENCE seq_a", "CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY, v int)",
      "INSERT INTO ident (v) VALUES (0)")


# -- partitions attached and detached -----------------------------------------------------------

@case("partitions", ["parted_1", "parted_2"], {3},
      {1: lambda s: s("ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (1000) TO (2000)"),
       2: lambda s: s("ALTER TABLE parted DETACH PARTITION parted_1"),
       3: lambda s: s("INSERT INTO parted SELECT g, 'via parent' FROM generate_series(1500, 1599) g")},
      compares=("rows", "schema"))
def partitions(s: Source):
    s("CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k)",
      "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000)",
      "CREATE TABLE parted_2 (k int, v text)",
      "INSERT INTO parted SELECT g, 'one' FROM generate_series(0, 299) g",
      "INSERT INTO parted_2 SELECT g, 'two' FROM generate_series(1000, 1199) g")


# -- large objects written, unlinked, truncated --------------------------------------------------

_BYTES = "(SELECT decode(string_agg(md5(g::text), '' ORDER BY g), 'hex') FROM generate_series(1, {n}) g)"


@case("large_objects", [], set(),
      {1: lambda s: s("SELECT lo_put(7001, 150000, '\\x6368616e676564')"),
       2: lambda s: s("SELECT lo_unlink(7002)", f"SELECT lo_from_bytea(7003, {_BYTES.format(n=100)})"),
       3: lambda s: s("SELECT lo_truncate(lo_open(7001, 131072), 1000)")},
      compares=("large_objects",))
def large_objects(s: Source):
    s(f"SELECT lo_from_bytea(7001, {_BYTES.format(n=19000)})",     # 300 KB, incompressible
      f"SELECT lo_from_bytea(7002, {_BYTES.format(n=10)})")


def _check_large_objects(c: Chain):
    for k in (1, 2, 3):
        assert c.expected[k].large_objects != c.expected[k - 1].large_objects
    assert c.kept(1, "pg_catalog.pg_largeobject"), "a 1-page write copies only its chunks"
    assert c.copied(1, "pg_catalog.pg_largeobject")


large_objects.check = _check_large_objects


# -- COPY ----------------------------------------------------------------------------------------

def _copy_1(s: Source):
    with s.conn.cursor().copy("COPY copied FROM STDIN") as cp:
        for i in range(3001, 3101):
            cp.write_row((i, 5, "copied"))


@case("copy", ["copied"], {1}, {1: _copy_1})
def copy(s: Source):
    s.table("copied")


# -- a VACUUM that truncates empty trailing pages, then growth past the parent's page ranges -------

def _shrink_1(s: Source):
    s("DELETE FROM shrunk WHERE id > 500", "VACUUM shrunk")
    s.facts["shrunk_pages"] = s.one("SELECT pg_relation_size('shrunk') / 8192")[0]


@case("vacuum_truncation_then_growth", ["shrunk"], {1, 2},
      {1: _shrink_1,
       2: lambda s: s("INSERT INTO shrunk SELECT g, 2, repeat('q', 40) FROM generate_series(5001, 8000) g")})
def vacuum_truncation_then_growth(s: Source):
    s.table("shrunk", pk=False)     # duplicated rows restore silently


def _check_shrunk(c: Chain):
    assert c.facts["shrunk_pages"] < 8, "VACUUM must have truncated the table into its first chunk"
    ranges = [tuple(ch["range"]) for ch in table_entry(c.manifests[2], DB, "public.shrunk")["chunks"]]
    for (lo, hi), (nlo, _) in zip(ranges, ranges[1:]):
        assert hi is not None and hi <= nlo, f"layer 2's page ranges overlap: {ranges}"


vacuum_truncation_then_growth.check = _check_shrunk


# -- types whose output changes without the table changing: enum labels, composite attributes ----

@case("type_changes", ["typed"], {1, 2},
      {1: lambda s: s("ALTER TYPE mood RENAME VALUE 'sad' TO 'x'", "ALTER TYPE mood RENAME VALUE 'happy' TO 'sad'",
                      "ALTER TYPE mood RENAME VALUE 'x' TO 'happy'"),
       2: lambda s: s("ALTER TYPE pair ADD ATTRIBUTE c int", "ALTER TYPE pair DROP ATTRIBUTE b")})
def type_changes(s: Source):
    s("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')", "CREATE TYPE pair AS (a int, b int)",
      "CREATE TABLE typed (id int PRIMARY KEY, m mood, p pair, ms mood[]) WITH (autovacuum_enabled = off)",
      "INSERT INTO typed SELECT g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, ROW(g, g)::pair, "
      "ARRAY['happy'::mood] FROM generate_series(1, 2000) g")


# -- the chain ----------------------------------------------------------------------------------

def build_chain(pgkeep, cluster, cases: list[Case], name: str = "capture",
                prepare: Callable[[Source], None] | None = None) -> Chain:
    """The cases' chain in database DB of `cluster`, through `pgkeep`: LAYERS layers, each
    restored (AS OF SYSTEM TIME its end time) and read back. `prepare` runs after the setups."""
    cluster.psql(f"DROP DATABASE IF EXISTS {DB}")
    cluster.psql(f"CREATE DATABASE {DB}")
    src = Source(cluster, DB)
    try:
        for c in cases:
            c.setup(src)
        if prepare is not None:
            prepare(src)
        coll = collection(name)
        expected, manifests = [], []
        for k in range(LAYERS):
            after = [a for c in sorted(cases, key=lambda c: c.holds) if k in c.steps
                     for a in [c.steps[k](src)] if a is not None]
            through(pgkeep, f"BACKUP DATABASE {DB} INTO {'LATEST IN ' if k else ''}'{coll}'")
            expected.append(read_state(cluster, DB))
            manifests.append(tip_manifest(pgkeep, coll))
            for a in after:
                a()
        ends = layer_end_times(pgkeep, coll)
        assert len(ends) == LAYERS
        restored = []
        for k, end in enumerate(ends):
            target = f"cap_r{k}"
            cluster.psql(f"DROP DATABASE IF EXISTS {target}")
            done = psql(pgkeep.dsn(), "-v", "ON_ERROR_STOP=1", "-c",
                        f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' AS OF SYSTEM TIME '{end.isoformat()}' "
                        f"WITH new_db_name = '{target}'", timeout=120, check=False)
            assert done.returncode == 0, f"restore of layer {k}: {done.stderr}"
            restored.append(read_state(cluster, target))
            cluster.psql(f"DROP DATABASE {target}")
        return Chain(expected, restored, manifests, src.facts)
    finally:
        src.close()


def check_case(chain: Chain, case: Case) -> None:
    """Every layer restored the case's tables as the source had them; the case did what it says."""
    for k in range(LAYERS):
        want, got = chain.expected[k], chain.restored[k]
        for t in case.tables:
            assert t in want.rows, f"layer {k}: the source has no table {t}"
            restored = got.rows.get(t)
            assert restored == want.rows[t], f"layer {k}: rows of {t} differ (restored, source)"
        for what in case.compares:
            if what != "rows":
                assert getattr(got, what) == getattr(want, what), f"layer {k}: {what} differ"
        if k:   # the case changed what it says it changed, and nothing else
            differs = any(chain.expected[k - 1].rows.get(t) != want.rows[t] for t in case.tables)
            assert differs == (k in case.changed), \
                f"layer {k}: the source's rows {'did not change' if k in case.changed else 'changed'}"
    if case.check is not None:
        case.check(chain)


@pytest.fixture(scope="module")
def chain(pgkeep, pg18):
    yield build_chain(pgkeep, pg18, CASES)
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_layer_restores_the_source_at_its_snapshot(chain, case):
    check_case(chain, case)


def check_whole_database(chain: Chain) -> None:
    for k in range(LAYERS):
        assert chain.restored[k].diff(chain.expected[k]) == [], f"layer {k}"


def test_every_layer_restores_the_whole_database(chain):
    check_whole_database(chain)
