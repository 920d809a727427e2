-- Where a job's storage lives, when only some pgkeep processes see it: 'nodelocal:<root id>:<path>'
-- for a job whose collection is nodelocal://. NULL: any process may run the job (cloud stores).
-- A process claims a job only when the job's placement is NULL or its own (catalog/jobs.py).
ALTER TABLE pgkeep.jobs ADD COLUMN IF NOT EXISTS placement text;
