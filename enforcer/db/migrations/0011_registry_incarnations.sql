-- A partition of the registry topic can be a new log under the same name: the topic deleted
-- and recreated, the cluster rebuilt, the embedded broker restarted (it keeps topics in
-- memory). Its offsets start again at 0, so an offset names an event only together with the
-- log it was read from: the partition's incarnation, 0 for the first, one more each time a
-- worker finds that the partition no longer holds the event stored last from it.
ALTER TABLE registry_events ADD COLUMN source_incarnation integer NOT NULL DEFAULT 0;

DROP INDEX registry_events_position;
CREATE UNIQUE INDEX registry_events_position
    ON registry_events (source_topic, source_partition, source_incarnation, source_offset);

-- Each incarnation after the first, and why the worker that found it thought so.
CREATE TABLE registry_incarnations (
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    incarnation      integer     NOT NULL,
    stored_to        bigint      NOT NULL,  -- the previous incarnation's next offset
    found            text        NOT NULL,  -- what the partition held instead
    found_at         timestamptz NOT NULL,
    PRIMARY KEY (source_topic, source_partition, incarnation)
);
