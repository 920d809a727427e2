"""A torture database covering every object the schema capture handles, round-tripped through
capture -> JSON -> plan -> restore on PostgreSQL 18 (and from 15 into 18), compared with pg_dump
--schema-only (with owners and privileges) and with per-table row hashes."""
from __future__ import annotations

import asyncio
import re

from tests.engine.conftest import (capture_db, normalize_db_name, pg_dump,
                                   restore_db, table_hashes)
from engine.schema import Schema

COMMON = r"""
CREATE EXTENSION hstore WITH SCHEMA public;
CREATE EXTENSION citext WITH SCHEMA public;
CREATE EXTENSION btree_gist WITH SCHEMA public;
CREATE SCHEMA app;
CREATE SCHEMA "Mixed Case" AUTHORIZATION scramuser;
COMMENT ON SCHEMA app IS 'the application''s schema \ with a backslash';
GRANT USAGE ON SCHEMA app TO scramuser, md5user;
GRANT CREATE ON SCHEMA app TO md5user WITH GRANT OPTION;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE COLLATION app.c_coll (provider = libc, locale = 'C');
CREATE TYPE app.mood AS ENUM ('sad', 'happy');
ALTER TYPE app.mood ADD VALUE 'ok' BEFORE 'happy';
CREATE TYPE app.pair AS (a integer, b text COLLATE "C");
COMMENT ON COLUMN app.pair.b IS 'second';
CREATE TYPE app.floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE DOMAIN app.posint AS integer DEFAULT 2 CONSTRAINT posint_check CHECK (VALUE > 0) NOT NULL;
CREATE DOMAIN app.email AS citext CHECK (VALUE ~ '@');
ALTER DOMAIN app.email ADD CONSTRAINT email_short CHECK (length(VALUE) < 200) NOT VALID;
CREATE DOMAIN app.code AS text COLLATE "C";
COMMENT ON TYPE app.mood IS 'feelings';
COMMENT ON DOMAIN app.posint IS 'positive';
COMMENT ON CONSTRAINT posint_check ON DOMAIN app.posint IS 'must be > 0';
GRANT USAGE ON TYPE app.mood TO md5user;
REVOKE USAGE ON DOMAIN app.code FROM PUBLIC;
ALTER TYPE app.pair OWNER TO md5user;

CREATE SEQUENCE app.code_seq AS integer START 100 INCREMENT 5 MINVALUE 10 MAXVALUE 100000 CACHE 3 CYCLE;
SELECT setval('app.code_seq', 150, false);
CREATE SEQUENCE app.shared_seq;
SELECT nextval('app.shared_seq'), nextval('app.shared_seq');
GRANT USAGE ON SEQUENCE app.shared_seq TO md5user;
COMMENT ON SEQUENCE app.shared_seq IS 'shared by two tables';
CREATE FUNCTION app.next_code() RETURNS text LANGUAGE sql AS $$ SELECT 'C' || nextval('app.code_seq') $$;
CREATE FUNCTION app.is_even(int) RETURNS boolean LANGUAGE sql IMMUTABLE RETURN $1 % 2 = 0;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog AS
$$BEGIN NEW.updated := now(); RETURN NEW; END$$;
CREATE FUNCTION app.noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE PROCEDURE app.say(a int) LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE '%', a; END$$;
CREATE AGGREGATE app.sum2(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0');
CREATE FUNCTION app.sec(x int) RETURNS int LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
  COST 5 AS 'SELECT x * 2';
REVOKE EXECUTE ON FUNCTION app.next_code() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.next_code() TO md5user;
COMMENT ON FUNCTION app.is_even(int) IS 'even?';
COMMENT ON PROCEDURE app.say(int) IS 'says';
COMMENT ON AGGREGATE app.sum2(int) IS 'sums';
ALTER FUNCTION app.sec(int) OWNER TO scramuser;

CREATE TABLE app.kinds (id int PRIMARY KEY, name text, CONSTRAINT kinds_name_key UNIQUE NULLS NOT DISTINCT (name));
ALTER TABLE app.kinds OWNER TO md5user;
CREATE TABLE app.log (id int, at timestamptz DEFAULT now());
CREATE RULE kinds_log AS ON DELETE TO app.kinds DO ALSO INSERT INTO app.log (id) VALUES (OLD.id);
COMMENT ON RULE kinds_log ON app.kinds IS 'log deletes';
CREATE TABLE app.items (
  id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000 INCREMENT BY 10) PRIMARY KEY,
  code text DEFAULT app.next_code() NOT NULL,
  serial_no serial,
  shared bigint DEFAULT nextval('app.shared_seq'),
  kind_id int REFERENCES app.kinds (id) ON DELETE SET NULL ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED,
  mood app.mood DEFAULT 'ok',
  moods app.mood[],
  pair app.pair,
  pairs app.pair[],
  fr app.floatrange,
  qty app.posint,
  mail app.email,
  attrs hstore,
  tags text[] COLLATE "C",
  name text COLLATE app.c_coll,
  price numeric(10,2) CONSTRAINT price_positive CHECK (price >= 0),
  total numeric GENERATED ALWAYS AS (price * 2) STORED,
  during tstzrange,
  body text,
  updated timestamptz,
  parent_id bigint REFERENCES app.items (id),
  "Select" int,
  CONSTRAINT even_qty CHECK (app.is_even(qty)),
  CONSTRAINT items_code_key UNIQUE (code),
  CONSTRAINT no_overlap EXCLUDE USING gist (kind_id WITH =, during WITH &&)
) WITH (fillfactor = 80, autovacuum_enabled = false, toast.autovacuum_enabled = false);
ALTER TABLE app.items DROP COLUMN "Select";
ALTER TABLE app.items ALTER COLUMN body SET STORAGE EXTERNAL, ALTER COLUMN name SET STATISTICS 500,
  ALTER COLUMN tags SET (n_distinct = 100), ALTER COLUMN body SET COMPRESSION pglz;
ALTER TABLE app.items ADD CONSTRAINT qty_small CHECK (qty < 1000000) NOT VALID;
CREATE INDEX items_code_lower ON app.items (lower(code) text_pattern_ops DESC NULLS LAST) WHERE price > 0;
CREATE INDEX items_incl ON app.items (kind_id) INCLUDE (price);
CREATE INDEX items_hash ON app.items USING hash (code);
CREATE INDEX items_tags ON app.items USING gin (tags);
CREATE INDEX items_attrs ON app.items USING gist (attrs);
CREATE INDEX items_brin ON app.items USING brin (updated) WITH (pages_per_range = 32);
CREATE INDEX items_spg ON app.items USING spgist (fr);
CREATE INDEX items_expr ON app.items ((price * 3), (upper(name)));
ALTER INDEX app.items_expr ALTER COLUMN 1 SET STATISTICS 300;
ALTER TABLE app.items CLUSTER ON items_pkey;
ALTER TABLE app.items REPLICA IDENTITY USING INDEX items_code_key;
CREATE TRIGGER items_touch BEFORE UPDATE ON app.items FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TRIGGER items_off AFTER INSERT ON app.items FOR EACH STATEMENT EXECUTE FUNCTION app.noop();
ALTER TABLE app.items DISABLE TRIGGER items_off;
CREATE CONSTRAINT TRIGGER items_ct AFTER INSERT ON app.items DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.price > 100) EXECUTE FUNCTION app.noop();
ALTER TABLE app.items ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.items FORCE ROW LEVEL SECURITY;
CREATE POLICY p_sel ON app.items FOR SELECT TO md5user, scramuser USING (price > 0);
CREATE POLICY p_all ON app.items AS RESTRICTIVE USING (true) WITH CHECK (qty > 0);
CREATE STATISTICS app.items_stats (dependencies, ndistinct) ON kind_id, mood FROM app.items;
ALTER STATISTICS app.items_stats SET STATISTICS 200;
GRANT SELECT (id, code), UPDATE (price) ON app.items TO scramuser;
GRANT SELECT, INSERT ON app.items TO md5user WITH GRANT OPTION;
GRANT SELECT ON app.items TO pg_read_all_data;
SET ROLE md5user;
GRANT SELECT ON app.items TO pwuser;
RESET ROLE;
COMMENT ON TABLE app.items IS 'items';
COMMENT ON COLUMN app.items.code IS 'the code';
COMMENT ON CONSTRAINT price_positive ON app.items IS 'no negative prices';
COMMENT ON INDEX app.items_hash IS 'hash';
COMMENT ON INDEX app.items_pkey IS 'pk index';
COMMENT ON TRIGGER items_touch ON app.items IS 'touch';
COMMENT ON POLICY p_sel ON app.items IS 'readers';
COMMENT ON STATISTICS app.items_stats IS 'stats';

CREATE TABLE app.a (id int PRIMARY KEY, b_id int, b_x int);
CREATE TABLE app.b (id int, x int, a_id int REFERENCES app.a DEFERRABLE INITIALLY DEFERRED, PRIMARY KEY (id, x));
ALTER TABLE app.a ADD CONSTRAINT a_b_fkey FOREIGN KEY (b_id, b_x) REFERENCES app.b MATCH FULL
  ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE app.b ADD CONSTRAINT b_self FOREIGN KEY (a_id) REFERENCES app.a NOT VALID;

CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, region text NOT NULL, kind_id int
  REFERENCES app.kinds, payload jsonb, CHECK (id > 0), PRIMARY KEY (id, at, region)) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')
  PARTITION BY LIST (region);
CREATE TABLE app.events_2024_eu PARTITION OF app.events_2024 FOR VALUES IN ('eu', 'uk');
CREATE TABLE app.events_2024_other PARTITION OF app.events_2024 DEFAULT;
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
  PARTITION BY HASH (id);
CREATE TABLE app.events_2025_h0 PARTITION OF app.events_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE app.events_2025_h1 PARTITION OF app.events_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE app.events_old (region text NOT NULL, id bigint NOT NULL CONSTRAINT events_id_check CHECK (id > 0), at date NOT NULL,
  kind_id int, payload jsonb);
ALTER TABLE app.events ATTACH PARTITION app.events_old DEFAULT;
CREATE INDEX events_payload ON app.events USING gin (payload);
CREATE INDEX events_region ON app.events (region);
CREATE UNIQUE INDEX events_uniq ON app.events (id, at, region, kind_id);
CREATE TRIGGER events_trg AFTER INSERT ON app.events FOR EACH ROW EXECUTE FUNCTION app.noop();
ALTER TABLE app.events_2024_eu DISABLE TRIGGER events_trg;
CREATE TABLE app.event_refs (id bigint, at date, region text, FOREIGN KEY (id, at, region) REFERENCES app.events);

CREATE TABLE app.base (id int CHECK (id > 0), note text NOT NULL);
CREATE TABLE app.other (flag boolean DEFAULT false);
CREATE TABLE app.child (extra int, note text) INHERITS (app.base);
CREATE TABLE app.child2 (CONSTRAINT c2_extra CHECK (flag IS NOT NULL)) INHERITS (app.base, app.other);
CREATE UNLOGGED TABLE app.cache (k serial PRIMARY KEY, v text);
CREATE TABLE app.full_ident (x int, y text);
ALTER TABLE app.full_ident REPLICA IDENTITY FULL;
CREATE TABLE app."We""ird Name" ("Col A" int GENERATED BY DEFAULT AS IDENTITY (MAXVALUE 5000 CYCLE), "select" text);
CREATE TABLE "Mixed Case"."T" (id int);
CREATE TABLE app.typed OF app.pair (a WITH OPTIONS DEFAULT 7 NOT NULL, CONSTRAINT typed_b CHECK (b <> ''));
CREATE FUNCTION app.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN NULL; END$$;
CREATE EVENT TRIGGER app_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'DROP TABLE')
  EXECUTE FUNCTION app.on_ddl();
ALTER EVENT TRIGGER app_ddl DISABLE;
COMMENT ON EVENT TRIGGER app_ddl IS 'watches DDL';

CREATE VIEW app.v_items WITH (security_barrier = true) AS
  SELECT id, code, price FROM app.items WHERE price > 1 WITH CASCADED CHECK OPTION;
CREATE VIEW app.v_inv WITH (security_invoker = true) AS SELECT id, app.is_even(qty) AS even FROM app.items;
CREATE VIEW app.v_v AS SELECT id FROM app.v_items WITH LOCAL CHECK OPTION;
CREATE VIEW app.v_grouped AS SELECT k.id, k.name, count(i.id) AS n FROM app.kinds k
  LEFT JOIN app.items i ON i.kind_id = k.id GROUP BY k.id;
CREATE RECURSIVE VIEW app.v_nums (n) AS VALUES (1) UNION ALL SELECT n + 1 FROM v_nums WHERE n < 5;
ALTER VIEW app.v_items ALTER COLUMN price SET DEFAULT 9.99;
COMMENT ON VIEW app.v_items IS 'cheap items';
COMMENT ON COLUMN app.v_items.code IS 'view column';
GRANT SELECT ON app.v_items TO md5user;
CREATE MATERIALIZED VIEW app.mv AS SELECT kind_id, count(*) AS n FROM app.items GROUP BY kind_id;
CREATE UNIQUE INDEX mv_kind ON app.mv (kind_id);
CREATE MATERIALIZED VIEW app.mv2 AS SELECT sum(n) AS total FROM app.mv;
CREATE MATERIALIZED VIEW app.mv_empty AS SELECT 1 AS one WITH NO DATA;
COMMENT ON MATERIALIZED VIEW app.mv IS 'counts';

ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO md5user;
ALTER DEFAULT PRIVILEGES FOR ROLE md5user REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES GRANT USAGE ON SEQUENCES TO scramuser;

INSERT INTO app.kinds VALUES (1, 'one'), (2, 'two'), (3, NULL);
CREATE TEXT SEARCH DICTIONARY app.en_stem (TEMPLATE = pg_catalog.snowball, language = 'english', stopwords = 'english');
CREATE TEXT SEARCH DICTIONARY app.plain (TEMPLATE = pg_catalog.simple);
CREATE TEXT SEARCH CONFIGURATION app.docs (PARSER = pg_catalog."default");
ALTER TEXT SEARCH CONFIGURATION app.docs ADD MAPPING FOR asciiword, word WITH app.en_stem, app.plain;
ALTER TEXT SEARCH CONFIGURATION app.docs ADD MAPPING FOR int, uint WITH app.plain;
ALTER TEXT SEARCH DICTIONARY app.plain OWNER TO md5user;
COMMENT ON TEXT SEARCH CONFIGURATION app.docs IS 'for documents';
COMMENT ON TEXT SEARCH DICTIONARY app.en_stem IS 'english stems';
CREATE TABLE app.docs (id int PRIMARY KEY, body text,
  tsv tsvector GENERATED ALWAYS AS (to_tsvector('app.docs'::regconfig, body)) STORED);
CREATE INDEX docs_fts ON app.docs USING gin (to_tsvector('app.docs'::regconfig, body));
CREATE FUNCTION app.mood_rank(app.mood) RETURNS integer LANGUAGE sql IMMUTABLE
  AS $$ SELECT array_position(enum_range(NULL::app.mood), $1) $$;
CREATE CAST (app.mood AS integer) WITH FUNCTION app.mood_rank(app.mood) AS ASSIGNMENT;
CREATE CAST (app.pair AS text) WITH INOUT;
CREATE DOMAIN app.ranked_mood AS app.mood CHECK ((VALUE)::integer > 0);
CREATE FUNCTION app.mood_rank_sql(m app.mood) RETURNS integer LANGUAGE sql IMMUTABLE
  BEGIN ATOMIC SELECT (m)::integer; END;
COMMENT ON CAST (app.mood AS integer) IS 'rank of a mood';
CREATE FUNCTION app.int_eq_text(integer, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT $1::text = $2 $$;
CREATE FUNCTION app.text_eq_int(text, integer) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT $1 = $2::text $$;
CREATE OPERATOR app.=== (FUNCTION = app.int_eq_text, LEFTARG = integer, RIGHTARG = text,
  COMMUTATOR = OPERATOR(app.===), RESTRICT = eqsel, JOIN = eqjoinsel);
CREATE OPERATOR app.=== (FUNCTION = app.text_eq_int, LEFTARG = text, RIGHTARG = integer,
  COMMUTATOR = OPERATOR(app.===));
CREATE OPERATOR app.!!! (FUNCTION = pg_catalog.textlen, RIGHTARG = text);
ALTER OPERATOR app.!!! (NONE, text) OWNER TO md5user;
COMMENT ON OPERATOR app.=== (integer, text) IS 'integer equals text';
CREATE VIEW app.docs_matching AS SELECT id FROM app.docs WHERE id OPERATOR(app.===) body;
CREATE PUBLICATION pub_docs FOR TABLE app.docs (id, body) WHERE (id > 10), app.kinds WITH (publish = 'insert, update');
CREATE PUBLICATION pub_app FOR TABLES IN SCHEMA app WITH (publish_via_partition_root = true);
CREATE PUBLICATION pub_all FOR ALL TABLES WITH (publish = 'truncate');
COMMENT ON PUBLICATION pub_docs IS 'documents';
CREATE FOREIGN DATA WRAPPER app_fdw OPTIONS (debug 'true');
CREATE SERVER app_srv TYPE 'kind' VERSION '1.0' FOREIGN DATA WRAPPER app_fdw OPTIONS (host 'db.example', port '5432');
CREATE SERVER "Other Srv" FOREIGN DATA WRAPPER app_fdw;
CREATE USER MAPPING FOR md5user SERVER app_srv OPTIONS (user 'remote_u');
CREATE USER MAPPING FOR PUBLIC SERVER "Other Srv";
GRANT USAGE ON FOREIGN DATA WRAPPER app_fdw TO md5user;
GRANT USAGE ON FOREIGN SERVER app_srv TO scramuser;
COMMENT ON FOREIGN DATA WRAPPER app_fdw IS 'a wrapper without a handler';
COMMENT ON SERVER app_srv IS 'the remote one';
CREATE FOREIGN TABLE app.remote_items (
  id int NOT NULL, name text OPTIONS (column_name 'nm') COLLATE "C" DEFAULT 'x',
  CONSTRAINT remote_pos CHECK (id > 0)) SERVER app_srv OPTIONS (table_name 'items', schema_name 'public');
CREATE FOREIGN TABLE app.remote_empty () SERVER "Other Srv";
GRANT SELECT ON app.remote_items TO scramuser;
COMMENT ON FOREIGN TABLE app.remote_items IS 'rows live elsewhere';
COMMENT ON COLUMN app.remote_items.name IS 'remote name';
ALTER FOREIGN TABLE app.remote_empty OWNER TO md5user;
CREATE TABLE app.metrics (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE app.metrics_local PARTITION OF app.metrics FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE FOREIGN TABLE app.metrics_remote PARTITION OF app.metrics FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
  SERVER app_srv;
INSERT INTO app.metrics_local VALUES ('2024-03-01', 7);
INSERT INTO app.docs SELECT g, 'the quick brown foxes jumped ' || g FROM generate_series(1, 30) g;

INSERT INTO app.items (kind_id, mood, moods, pair, pairs, fr, qty, mail, attrs, tags, name, price, during, body)
SELECT 1 + g % 3, 'happy', ARRAY['sad', 'ok']::app.mood[], ROW(g, 'x' || g)::app.pair, ARRAY[ROW(g, 'y')::app.pair],
       app.floatrange(g, g + 1), 2 * g, 'u' || g || '@example.com', hstore('k', g::text),
       ARRAY['t' || g], 'n' || g, g * 1.5, tstzrange(now() + g * interval '1 day', now() + (g + 1) * interval '1 day'),
       repeat('b', 100)
  FROM generate_series(1, 50) g;
UPDATE app.items SET parent_id = id - 10 WHERE id > 1000;
INSERT INTO app.a VALUES (1, NULL, NULL);
INSERT INTO app.b VALUES (1, 1, 1);
UPDATE app.a SET b_id = 1, b_x = 1;
INSERT INTO app.events SELECT g, date '2024-01-01' + g * 5, (ARRAY['eu', 'us', 'uk'])[1 + g % 3], 1,
  jsonb_build_object('g', g) FROM generate_series(1, 150) g;
INSERT INTO app.event_refs SELECT id, at, region FROM app.events WHERE id < 10;
INSERT INTO app.child VALUES (1, 'c', 5);
INSERT INTO app.child2 VALUES (2, 'd', true);
INSERT INTO app.cache (v) VALUES ('a'), ('b');
INSERT INTO app."We""ird Name" ("select") VALUES ('x'), ('y');
REFRESH MATERIALIZED VIEW app.mv;
REFRESH MATERIALIZED VIEW app.mv2;
"""

PG18 = r"""
CREATE TABLE app.pg18 (
  id int CONSTRAINT pg18_id_nn NOT NULL,
  a int,
  v numeric GENERATED ALWAYS AS (a * 2) VIRTUAL,
  during daterange NOT NULL,
  CONSTRAINT pg18_pk PRIMARY KEY (id, during WITHOUT OVERLAPS),
  CONSTRAINT unenforced CHECK (a > 0) NOT ENFORCED
);
CREATE TABLE app.pg18_nv (a int);
ALTER TABLE app.pg18_nv ADD CONSTRAINT a_nn NOT NULL a NOT VALID;
CREATE TABLE app.pg18_child (b int CONSTRAINT b_local_nn NOT NULL NO INHERIT) INHERITS (app.pg18);
GRANT MAINTAIN ON app.kinds TO md5user;
INSERT INTO app.pg18 VALUES (1, 1, DEFAULT, '[2024-01-01,2024-02-01)');
"""

DATABASE = """
COMMENT ON DATABASE {db} IS 'torture';
ALTER DATABASE {db} SET work_mem = '64MB';
ALTER DATABASE {db} SET search_path = "$user", app, public;
ALTER DATABASE {db} CONNECTION LIMIT 50;
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO md5user;
GRANT CREATE ON DATABASE {db} TO scramuser WITH GRANT OPTION;
ALTER ROLE md5user IN DATABASE {db} SET statement_timeout = '5s';
"""


def torture_sql(version: int, db: str) -> str:
    return COMMON + (PG18 if version >= 18 else "") + DATABASE.format(db=db)


def _compare(dumper, a_cluster, a_db, b_cluster, b_db, *extra, normalize=lambda s: s):
    a = normalize(normalize_db_name(pg_dump(dumper, a_cluster, a_db, *extra), a_db))
    b = normalize(normalize_db_name(pg_dump(dumper, b_cluster, b_db, *extra), b_db))
    assert a.splitlines() == b.splitlines()


def test_torture_round_trip_pg18(pg18, torture18):
    schema = asyncio.run(capture_db(pg18, torture18))
    schema = Schema.from_json(schema.to_json())
    asyncio.run(restore_db(schema, pg18, torture18, pg18, "sch_torture_r"))
    _compare(pg18, pg18, torture18, pg18, "sch_torture_r")
    _compare(pg18, pg18, torture18, pg18, "sch_torture_r", "--create")
    assert asyncio.run(table_hashes(pg18, torture18)) == asyncio.run(table_hashes(pg18, "sch_torture_r"))


def _version_noise(dump: str) -> str:
    """The one difference between a PostgreSQL 15 original and its PostgreSQL 18 restoration,
    both dumped by pg_dump 18, that is the versions' own rather than the restore's: view bodies
    (see `unqualify_view_columns`). (`-- Dumped from database version` is dropped by `pg_dump`.)"""
    return unqualify_view_columns(dump)


def unqualify_view_columns(dump: str) -> str:
    """PostgreSQL 16 stopped qualifying column references with their relation in deparsed views
    when the query reads one relation (`items.id` became `id`): pg_dump shows each server's own
    deparse. Drop `relation.` prefixes (not schema prefixes) inside view bodies."""
    schemas = set(re.findall(r"^CREATE SCHEMA (\S+);$", dump, flags=re.M)) | {"public", "pg_catalog"}
    prefix = re.compile(r'(?<![\w."])([a-z_][a-z0-9_]*)\.(?=[a-z_"])')
    out, in_view = [], False
    for line in dump.splitlines():
        if line.startswith(("CREATE VIEW", "CREATE MATERIALIZED VIEW")):
            in_view = True
        elif in_view:
            line = prefix.sub(lambda m: m.group(0) if m.group(1) in schemas else "", line)
        if in_view and line.rstrip().endswith(";"):
            in_view = False
        out.append(line)
    return "\n".join(out)


def test_torture_pg15_to_pg18(pg15, pg18, torture15):
    schema = asyncio.run(capture_db(pg15, torture15))
    assert schema.server_version_num < 160000
    schema = Schema.from_json(schema.to_json())
    asyncio.run(restore_db(schema, pg15, torture15, pg18, "sch_torture15_r"))
    _compare(pg18, pg15, torture15, pg18, "sch_torture15_r", normalize=_version_noise)
    _compare(pg18, pg15, torture15, pg18, "sch_torture15_r", "--create", normalize=_version_noise)
    assert asyncio.run(table_hashes(pg15, torture15)) == asyncio.run(table_hashes(pg18, "sch_torture15_r"))


def test_attaches_of_one_index_tree_never_share_a_stage(pg18, torture18):
    """Each ATTACH validates its parent index (and the parents above) against what its own
    transaction sees: two attaches of one tree in parallel could leave the root index invalid,
    and a foreign key referencing it would then fail (seen as a rare CI failure)."""
    from engine.schema import plan_restore
    schema = asyncio.run(capture_db(pg18, torture18))
    plan = plan_restore(schema, target_database="x")
    attach = re.compile(r"^ALTER INDEX (\S+) ATTACH PARTITION (\S+)$")
    parent_of, stage_of = {}, {}
    for n, stage in enumerate(plan.post_data):
        for stmt in stage:
            m = attach.match(stmt)
            if m:
                parent_of[m.group(2)] = m.group(1)
                stage_of[m.group(2)] = n

    def root(index):
        while index in parent_of:
            index = parent_of[index]
        return index
    trees: dict[str, list[int]] = {}
    for child, n in stage_of.items():
        trees.setdefault(root(child), []).append(n)
    assert sum(len(v) for k, v in trees.items() if "events" in k) >= 8, "nested partitions to attach"
    for tree, stages in trees.items():
        assert len(stages) == len(set(stages)), f"attaches into {tree} share a stage: {sorted(stages)}"
