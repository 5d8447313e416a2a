-- Every committed change of a job wakes the WatchJob streams of every replica on this database
-- (`LISTEN analysis_job_changed`, src/jobs/changes.rs), which otherwise look again only every second.
-- The payload is the job's id: no tenant data.
CREATE OR REPLACE FUNCTION notify_job_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('analysis_job_changed', NEW.id::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jobs_changed ON jobs;
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION notify_job_changed();
