-- Schedules (CREATE SCHEDULE FOR BACKUP): CockroachDB's system.scheduled_jobs. A schedule is
-- paused when next_run is NULL (CockroachDB's rule: schedule_status is derived from it). The
-- scheduler of every pgkeep process claims due schedules with SELECT ... FOR UPDATE SKIP LOCKED
-- and, in the same transaction, creates the run's job and moves next_run on, so each slot runs
-- exactly once (catalog/schedules.py). No secrets here: backup_statement is redacted; the
-- statement a run executes, URI with credentials included, is in schedule_payloads.
CREATE TABLE IF NOT EXISTS pgkeep.schedules (
    schedule_id             bigint PRIMARY KEY,
    label                   text NOT NULL,
    owner                   text NOT NULL,
    database                text NOT NULL,          -- the session database of CREATE SCHEDULE
    created                 timestamptz NOT NULL,
    recurrence              text NOT NULL,          -- cron, UTC
    next_run                timestamptz,            -- NULL: paused
    state                   text,                   -- SHOW SCHEDULES' state (an error, a wait)
    backup_type             text NOT NULL CHECK (backup_type IN ('FULL', 'INCREMENTAL')),
    backup_statement        text NOT NULL,          -- redacted, as shown
    on_execution_failure    text NOT NULL DEFAULT 'reschedule',
    on_previous_running     text NOT NULL DEFAULT 'wait',
    updates_metric          boolean NOT NULL DEFAULT false,
    dependent_id            bigint,                 -- the other schedule of a full+incremental pair
    unpause_on_success      bigint,                 -- the incremental a full un-pauses once it succeeds
    last_run                timestamptz,            -- the slot the newest run was for
    last_success            timestamptz             -- when a run of it last succeeded
);
CREATE INDEX IF NOT EXISTS schedules_next_run_idx ON pgkeep.schedules (next_run) WHERE next_run IS NOT NULL;
CREATE TABLE IF NOT EXISTS pgkeep.schedule_payloads (
    schedule_id   bigint PRIMARY KEY REFERENCES pgkeep.schedules ON DELETE CASCADE,
    statement     text NOT NULL                     -- the BACKUP statement, secrets included
);
REVOKE ALL ON pgkeep.schedules, pgkeep.schedule_payloads FROM PUBLIC;
-- The schedule a job was started by (CockroachDB's created_by_type/created_by_id), for SHOW JOBS
-- FOR SCHEDULE, on_previous_running and the schedule's on-terminal bookkeeping.
ALTER TABLE pgkeep.jobs ADD COLUMN IF NOT EXISTS schedule_id bigint;
CREATE INDEX IF NOT EXISTS jobs_schedule_idx ON pgkeep.jobs (schedule_id) WHERE schedule_id IS NOT NULL;
