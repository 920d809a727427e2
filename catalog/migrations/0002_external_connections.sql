-- External connections (CREATE EXTERNAL CONNECTION): a name for a storage URI, secrets included;
-- only pgkeep reads this table, and it shows the URI redacted to everyone but the owner/admin.
CREATE TABLE IF NOT EXISTS pgkeep.external_connections (
    name             text PRIMARY KEY,
    uri              text NOT NULL,
    connection_type  text NOT NULL CHECK (connection_type IN ('STORAGE', 'KMS', 'FOREIGNDATA')),
    owner            text NOT NULL,
    created          timestamptz NOT NULL DEFAULT now(),
    updated          timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pgkeep.external_connections FROM PUBLIC;
