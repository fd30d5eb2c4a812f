-- Registry events as received, in the order they were first stored: a restarted worker
-- rebuilds its overlay from the applied ones instead of replaying the topic from the start,
-- and resumes each partition after the highest offset any worker stored. Dead-lettered
-- events are kept too (applied = false), so that no worker dead-letters one twice.
CREATE TABLE registry_events (
    seq              bigserial   PRIMARY KEY,
    event_id         text        NOT NULL UNIQUE,
    applied          boolean     NOT NULL,
    reason           text,
    body             bytea       NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    received_at      timestamptz NOT NULL
);

CREATE UNIQUE INDEX registry_events_position
    ON registry_events (source_topic, source_partition, source_offset);
