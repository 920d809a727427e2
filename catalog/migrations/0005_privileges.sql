-- pgkeep's privileges (GRANT SYSTEM ..., GRANT BACKUP/RESTORE ON DATABASE, BACKUP ON TABLE,
-- USAGE/UPDATE/DROP ON EXTERNAL CONNECTION). Objects and grantees are kept by OID, so a grant
-- follows a rename (as CockroachDB's follow descriptor IDs) and a role or database dropped and
-- created again under the same name does not inherit what the old one held.
--   kind 'system':              object ''
--   kind 'database':            object = pg_database.oid
--   kind 'table':               object = '<pg_database.oid>/<pg_class.oid>'
--   kind 'external connection': object = the connection's name
-- grantee: pg_authid.oid, 0 for PUBLIC. `display` is the object's name when it was granted
-- (SHOW GRANTS prints the current name where the object still exists).
-- Only pgkeep's own upstream user reads or writes this table: no one else has any privilege on
-- the schema or its tables (docs/SQL.md, "Privileges").
CREATE TABLE IF NOT EXISTS pgkeep.privileges (
    kind        text NOT NULL CHECK (kind IN ('system', 'database', 'table', 'external connection')),
    object      text NOT NULL,
    grantee     oid NOT NULL,
    privilege   text NOT NULL,
    grantable   boolean NOT NULL DEFAULT false,
    grantor     text NOT NULL,
    display     text NOT NULL,
    granted     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, object, grantee, privilege)
);
REVOKE ALL ON pgkeep.privileges FROM PUBLIC;
REVOKE ALL ON SCHEMA pgkeep FROM PUBLIC;
