-- pgkeep's catalog lives in the upstream PostgreSQL, in its own schema, so pgkeep processes are
-- stateless and several can run in front of one database.
CREATE TABLE IF NOT EXISTS pgkeep.cluster_settings (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
