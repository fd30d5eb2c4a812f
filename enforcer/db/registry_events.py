"""Storing registry events and reading them back. Several workers store the same events (each
reads every partition): the first one's row stands. An event_id stored before at another
position is a replay of it under a later offset, which changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, NamedTuple

import psycopg


class Position(NamedTuple):
    """Where a message of the registry topic was read. A tuple, not a dataclass: the registry
    thread makes one a message, and a frozen dataclass took it 1.2 µs to make where a
    tuple takes 0.4."""

    topic: str
    partition: int
    offset: int
    # Which log of the partition: 0, then one more each time the topic is found to be a new
    # one under the same name (deleted and recreated), whose offsets start again at 0.
    incarnation: int = 0


@dataclass(frozen=True)
class Resume:
    """Where a partition of the registry topic is read from next, and the event stored last
    from it: the partition must still hold that event at `next_offset - 1` for the place to
    be right."""

    incarnation: int
    next_offset: int
    last_body: bytes | None  # None: nothing stored from this incarnation yet
    last_applied: bool


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    body: bytes
    received_at: datetime
    at: Position


class EventRow(NamedTuple):
    """One message of the registry topic as stored: applied, or refused with its reason (the
    body is then what its dead letter holds)."""

    event_id: str
    applied: bool
    reason: str | None
    body: bytes
    at: Position
    received_at: datetime


def stored_at(conn: psycopg.Connection, event_ids: list[str]) -> dict[str, Position]:
    """Where each of `event_ids` already stored was read from (a later offset carrying one of
    them is a replay)."""
    return {event_id: Position(topic, partition, offset, incarnation)
            for event_id, topic, partition, offset, incarnation in conn.execute(
                "SELECT event_id, source_topic, source_partition, source_offset,"
                " source_incarnation FROM registry_events WHERE event_id = ANY(%b)",
                (event_ids,))}


def store_all(conn: psycopg.Connection, rows: list[EventRow]) -> set[str]:
    """Store a poll's rows; the event_ids this call stored. A row whose event_id or position
    another worker stored first is left out: that worker's stands, and its dead letter, if
    any, is that worker's to send. The rows are numbered (seq) in their order.

    They are copied straight into the table (COPY, not arrays: dumping a poll's nine arrays
    took the registry thread's core, and the GIL, 40 µs a row). A poll's rows are new to the
    table unless two workers store the same poll at once (each reads every partition): then
    the copy fails on a unique index, is undone to its savepoint, and the rows go through a
    temporary table and `ON CONFLICT DO NOTHING`, which costs the database a second pass and
    the registry thread three more round trips (on the compressed year's two busy cores, a
    tenth of the thread's time). The caller leaves out the rows it knows are stored
    (`stored_at`), so that a worker reading behind another takes the straight path."""
    if not rows:
        return set()
    try:
        with conn.transaction():
            _copy_rows(conn, "registry_events", rows, numbered=False)
        return {r.event_id for r in rows}
    except psycopg.errors.UniqueViolation:
        pass
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS registry_events_in ON COMMIT DELETE ROWS AS"
            " SELECT 0 AS ord, event_id, applied, reason, body, source_topic, source_partition,"
            " source_incarnation, source_offset, received_at FROM registry_events WITH NO DATA")
        _copy_rows(conn, "registry_events_in", rows, numbered=True)
        stored = {event_id for (event_id,) in conn.execute(
            "INSERT INTO registry_events (event_id, applied, reason, body, source_topic,"
            " source_partition, source_incarnation, source_offset, received_at)"
            " SELECT event_id, applied, reason, body, source_topic, source_partition,"
            " source_incarnation, source_offset, received_at FROM registry_events_in"
            " ORDER BY ord ON CONFLICT DO NOTHING RETURNING event_id")}
        # Emptied now, not only at commit: a caller may store twice in one transaction.
        conn.execute("DELETE FROM registry_events_in")
        return stored


def _copy_rows(conn: psycopg.Connection, table: str, rows: list[EventRow],
               numbered: bool) -> None:
    """`rows` copied into `table` in their order, each with its index first if `numbered`
    (the temporary table's `ord`)."""
    columns = ("event_id, applied, reason, body, source_topic, source_partition,"
               " source_incarnation, source_offset, received_at")
    with conn.cursor().copy(f"COPY {table} ({'ord, ' if numbered else ''}{columns})"
                            " FROM STDIN") as copy:
        for i, r in enumerate(rows):
            row = (r.event_id, r.applied, r.reason, r.body, r.at.topic, r.at.partition,
                   r.at.incarnation, r.at.offset, r.received_at)
            copy.write_row((i, *row) if numbered else row)


def applied_events(conn: psycopg.Connection, seqs: list[int] | None = None
                   ) -> list[StoredEvent]:
    """All applied events, or those numbered `seqs`, in their order."""
    return [StoredEvent(seq, body, received, Position(topic, partition, offset, incarnation))
            for seq, body, received, topic, partition, offset, incarnation in conn.execute(
                "SELECT seq, body, received_at, source_topic, source_partition, source_offset,"
                " source_incarnation FROM registry_events WHERE applied"
                " AND (%(seqs)s::bigint[] IS NULL OR seq = ANY(%(seqs)s)) ORDER BY seq",
                {"seqs": seqs})]


def applied_events_after(conn: psycopg.Connection, topic: str,
                         watermark: Mapping[int, tuple[int, int]]) -> list[StoredEvent]:
    """The applied events a snapshot folded at `watermark` (partition -> (incarnation, next
    offset) of `topic`) does not hold, in their order: of a partition it names, those from
    there on; of another, all. With no watermark (no fold yet) every applied event, of any
    topic (a deployment's earlier registry topic); a fold holds those."""
    if not watermark:
        return applied_events(conn)
    partitions = list(watermark)
    return [StoredEvent(seq, body, received, Position(topic, partition, offset, incarnation))
            for seq, body, received, partition, offset, incarnation in conn.execute(
                "SELECT e.seq, e.body, e.received_at, e.source_partition, e.source_offset,"
                " e.source_incarnation FROM registry_events AS e"
                " LEFT JOIN unnest(%(p)s::integer[], %(i)s::integer[], %(o)s::bigint[])"
                "   AS w(partition, incarnation, next_offset)"
                "   ON w.partition = e.source_partition"
                " WHERE e.applied AND e.source_topic = %(topic)s AND (w.partition IS NULL"
                "   OR (e.source_incarnation, e.source_offset) >= (w.incarnation, w.next_offset))"
                " ORDER BY e.seq",
                {"topic": topic, "p": partitions, "i": [watermark[p][0] for p in partitions],
                 "o": [watermark[p][1] for p in partitions]})]


def applied_seqs_after(conn: psycopg.Connection, floor: int) -> list[int]:
    return [seq for (seq,) in conn.execute(
        "SELECT seq FROM registry_events WHERE applied AND seq > %s", (floor,))]


def resume_points(conn: psycopg.Connection, topic: str) -> dict[int, Resume]:
    """Per partition of `topic` that events were stored from (or that was found to be a new
    log), its newest incarnation and the event stored last from that."""
    return {partition: Resume(incarnation, 0 if offset is None else offset + 1, body,
                              bool(applied))
            for partition, incarnation, offset, body, applied in conn.execute(
                "SELECT p.source_partition, p.incarnation, e.source_offset, e.body, e.applied"
                " FROM (SELECT source_partition, max(incarnation) AS incarnation FROM ("
                "   SELECT DISTINCT source_partition, 0 AS incarnation FROM registry_events"
                "   WHERE source_topic = %(topic)s UNION ALL"
                "   SELECT source_partition, incarnation FROM registry_incarnations"
                "   WHERE source_topic = %(topic)s) AS known GROUP BY 1) AS p"
                " LEFT JOIN LATERAL (SELECT source_offset, body, applied FROM registry_events"
                "   WHERE source_topic = %(topic)s AND source_partition = p.source_partition"
                "   AND source_incarnation = p.incarnation"
                "   ORDER BY source_offset DESC LIMIT 1) AS e ON true", {"topic": topic})}


def renew(conn: psycopg.Connection, topic: str, partition: int, after: Resume, found: str,
          found_at: datetime) -> int:
    """Record that the partition is a new log, the one after `after`'s incarnation, and what
    it held instead; returns the partition's newest incarnation (another worker may have
    found this one first)."""
    conn.execute(
        "INSERT INTO registry_incarnations (source_topic, source_partition, incarnation,"
        " stored_to, found, found_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (topic, partition, after.incarnation + 1, after.next_offset, found, found_at))
    return conn.execute(
        "SELECT max(incarnation) FROM registry_incarnations WHERE source_topic = %s"
        " AND source_partition = %s", (topic, partition)).fetchone()[0]


def prune_registry_events(conn: psycopg.Connection, topic: str,
                          below: dict[int, tuple[int, int]], limit: int) -> int:
    """Delete up to `limit` stored events of `topic` below a watermark: per partition, the
    position (incarnation, next offset) a fold has laid into the snapshot, so that what is
    before it is never read again. The event stored last from each partition stays whatever
    the watermark: a restart compares the partition against it (resume_points). Returns
    how many were deleted; called again until 0."""
    if not below:
        return 0
    partitions = list(below)
    # Per partition, the oldest rows below the watermark in the position index's order, the
    # last stored found once: a plan that tests each row against the last costs the table's
    # size a batch (minutes at a million rows).
    with conn.transaction():
        return conn.execute(
            "WITH w AS (SELECT * FROM unnest(%(p)s::int[], %(inc)s::int[], %(off)s::bigint[])"
            " AS w(p, inc, off)),"
            " last AS (SELECT w.p, (SELECT l.seq FROM registry_events l"
            " WHERE l.source_topic = %(topic)s AND l.source_partition = w.p"
            " ORDER BY l.source_incarnation DESC, l.source_offset DESC LIMIT 1) AS seq FROM w)"
            " DELETE FROM registry_events WHERE seq IN (SELECT e.seq FROM w"
            " JOIN last USING (p) CROSS JOIN LATERAL (SELECT e.seq FROM registry_events e"
            " WHERE e.source_topic = %(topic)s AND e.source_partition = w.p"
            " AND (e.source_incarnation, e.source_offset) < (w.inc, w.off)"
            " AND e.seq <> last.seq"
            " ORDER BY e.source_incarnation, e.source_offset LIMIT %(limit)s) AS e"
            " LIMIT %(limit)s)",
            {"p": partitions, "inc": [below[p][0] for p in partitions],
             "off": [below[p][1] for p in partitions], "topic": topic, "limit": limit}).rowcount


def prune_incarnations(conn: psycopg.Connection, found_before: datetime, limit: int) -> int:
    """Delete up to `limit` records of new logs found before `found_before`, but each
    partition's newest: the incarnation a restart resumes in (resume_points) is the newest
    recorded, and the events keep their own. Returns how many were deleted."""
    with conn.transaction():
        return conn.execute(
            "DELETE FROM registry_incarnations WHERE (source_topic, source_partition,"
            " incarnation) IN (SELECT i.source_topic, i.source_partition, i.incarnation"
            " FROM registry_incarnations i WHERE i.found_at < %s AND EXISTS (SELECT 1"
            " FROM registry_incarnations n WHERE n.source_topic = i.source_topic"
            " AND n.source_partition = i.source_partition AND n.incarnation > i.incarnation)"
            " ORDER BY i.found_at LIMIT %s)", (found_before, limit)).rowcount


def repeatable_read(conn: psycopg.Connection) -> None:
    """The transaction begun on `conn` sees one snapshot of the tables, whatever commits
    meanwhile: the events laid over a state and the places to read on from agree."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

