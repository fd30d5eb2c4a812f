-- Every run of a scheduled job, by every worker: when, what it did, how it ended. A row
-- whose outcome is still NULL is running (or its worker died mid-run).
CREATE TABLE job_runs (
    id          bigserial   PRIMARY KEY,
    job         text        NOT NULL,
    worker      text        NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    outcome     text,
    counts      jsonb,
    error       text
);

CREATE INDEX job_runs_by_job ON job_runs (job, started_at DESC);
