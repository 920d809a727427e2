-- Jobs: every BACKUP and RESTORE. No secrets in this table (descriptions are redacted); what a
-- job needs to run, URI with credentials included, is in job_payloads, which only pgkeep reads.
CREATE TABLE IF NOT EXISTS pgkeep.jobs (
    job_id              bigint PRIMARY KEY,
    job_type            text NOT NULL,
    description         text NOT NULL,
    statement           text NOT NULL,
    user_name           text NOT NULL,
    status              text NOT NULL,
    running_status      text,
    created             timestamptz NOT NULL DEFAULT now(),
    started             timestamptz,
    finished            timestamptz,
    modified            timestamptz NOT NULL DEFAULT now(),
    fraction_completed  double precision NOT NULL DEFAULT 0,
    error               text,
    coordinator_id      text,
    lease_expires       timestamptz,
    pause_reason        text,
    checkpoint          jsonb,
    result              jsonb
);
CREATE INDEX IF NOT EXISTS jobs_status_idx ON pgkeep.jobs (status, lease_expires);
CREATE TABLE IF NOT EXISTS pgkeep.job_payloads (
    job_id   bigint PRIMARY KEY REFERENCES pgkeep.jobs ON DELETE CASCADE,
    spec     jsonb NOT NULL
);
REVOKE ALL ON pgkeep.jobs, pgkeep.job_payloads FROM PUBLIC;
