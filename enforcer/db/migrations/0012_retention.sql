-- Retention (enforcer/jobs/retention.py). The three tables whose rows are many become
-- partitioned by time, so that what retention removes is a partition dropped, not rows
-- deleted: outbox by day of created_at (millions of messages a day at a national scale,
-- worth keeping only days once published), notice_transitions by month of `at`, and
-- status_queries by month of asked_at (an audit log kept for years). Each gets a default
-- partition, which every row lands in until its period's partition exists: a write never
-- fails for want of one. The retention job makes each period's partition ahead of need and
-- moves into it whatever the default holds of that period (enforcer/db/partitions.py); the
-- rows these statements move start in the default and are split out by its first run.
--
-- A partitioned table's unique keys must hold its partition key: each primary key becomes
-- (id, time). outbox_once (one message per stream and idempotency key) cannot be kept across
-- partitions; db/notices.enqueue refuses a second message under one key instead (a notice's
-- steps are taken under its row lock, so two cannot race on a key).

-- When a notice left the live states: how long a closed one is kept counts from it.
ALTER TABLE notices ADD COLUMN closed_at timestamptz;
UPDATE notices n SET closed_at = coalesce(
        (SELECT max(t.at) FROM notice_transitions t WHERE t.notice_id = n.id), n.last_seen)
    WHERE state NOT IN ('open', 'warned', 'reminded', 'cut');
CREATE INDEX notices_closed ON notices (closed_at) WHERE closed_at IS NOT NULL;
-- Retention keeps a closed notice while a kept one names it its successor.
CREATE INDEX notices_by_successor ON notices (superseded_by) WHERE superseded_by IS NOT NULL;

ALTER TABLE outbox RENAME TO outbox_unpartitioned;
ALTER INDEX outbox_pkey RENAME TO outbox_unpartitioned_pkey;
ALTER INDEX outbox_once RENAME TO outbox_unpartitioned_once;
ALTER INDEX outbox_unsent RENAME TO outbox_unpartitioned_unsent;
CREATE TABLE outbox (
    id              bigint      NOT NULL DEFAULT nextval('outbox_id_seq'),
    stream          text        NOT NULL,
    key             bytea       NOT NULL,
    idempotency_key text        NOT NULL,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE outbox_default PARTITION OF outbox DEFAULT;
CREATE INDEX outbox_by_key ON outbox (stream, idempotency_key);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
INSERT INTO outbox SELECT id, stream, key, idempotency_key, body, created_at, sent_at
    FROM outbox_unpartitioned;
ALTER SEQUENCE outbox_id_seq OWNED BY outbox.id;
DROP TABLE outbox_unpartitioned;

ALTER TABLE notice_transitions RENAME TO notice_transitions_unpartitioned;
ALTER INDEX notice_transitions_pkey RENAME TO notice_transitions_unpartitioned_pkey;
ALTER INDEX notice_transitions_by_notice RENAME TO notice_transitions_unpartitioned_by_notice;
CREATE TABLE notice_transitions (
    id         bigint      NOT NULL DEFAULT nextval('notice_transitions_id_seq'),
    notice_id  bigint      NOT NULL REFERENCES notices (id),
    at         timestamptz NOT NULL,
    from_state text,
    to_state   text        NOT NULL,
    step       text,
    reason     text,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE notice_transitions_default PARTITION OF notice_transitions DEFAULT;
CREATE INDEX notice_transitions_by_notice ON notice_transitions (notice_id, id);
INSERT INTO notice_transitions
    SELECT id, notice_id, at, from_state, to_state, step, reason
    FROM notice_transitions_unpartitioned;
ALTER SEQUENCE notice_transitions_id_seq OWNED BY notice_transitions.id;
DROP TABLE notice_transitions_unpartitioned;

ALTER TABLE status_queries RENAME TO status_queries_unpartitioned;
ALTER INDEX status_queries_pkey RENAME TO status_queries_unpartitioned_pkey;
ALTER INDEX status_queries_by_requester RENAME TO status_queries_unpartitioned_by_requester;
CREATE TABLE status_queries (
    id         bigint      NOT NULL DEFAULT nextval('status_queries_id_seq'),
    asked_at   timestamptz NOT NULL DEFAULT now(),
    imei_key   bigint,
    requester  bigint,
    status     text,
    revealed   bigint,
    channel    text        NOT NULL,
    client     text,
    peer       text,
    refused    text,
    PRIMARY KEY (id, asked_at)
) PARTITION BY RANGE (asked_at);
CREATE TABLE status_queries_default PARTITION OF status_queries DEFAULT;
CREATE INDEX status_queries_by_requester ON status_queries (requester, asked_at);
INSERT INTO status_queries
    SELECT id, asked_at, imei_key, requester, status, revealed, channel, client, peer, refused
    FROM status_queries_unpartitioned;
ALTER SEQUENCE status_queries_id_seq OWNED BY status_queries.id;
DROP TABLE status_queries_unpartitioned;

-- job_runs are deleted by age across jobs.
CREATE INDEX job_runs_by_start ON job_runs (started_at);
