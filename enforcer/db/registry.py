"""Storing registry events and reading them back. Several workers store the same events (each
reads every partition): the first one's row stands, and the others learn from the conflict
whether they hold the same message or a replay of it under a later offset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import psycopg


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    body: bytes
    received_at: datetime
    at: Position


class Stored(Enum):
    NEW = "new"  # this worker's row: it acts on the event (and dead-letters it if so)
    SAME = "same"  # another worker stored this very message first: apply it, send nothing
    REPLAY = "replay"  # the event_id came before at another position: it changes nothing


def store(conn: psycopg.Connection, event_id: str, applied: bool, reason: str | None,
          body: bytes, at: Position, received_at: datetime) -> Stored:
    row = conn.execute(
        "INSERT INTO registry_events (event_id, applied, reason, body, source_topic,"
        " source_partition, source_offset, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING seq",
        (event_id, applied, reason, body, at.topic, at.partition, at.offset,
         received_at)).fetchone()
    if row is not None:
        return Stored.NEW
    same = conn.execute(
        "SELECT 1 FROM registry_events WHERE source_topic = %s AND source_partition = %s"
        " AND source_offset = %s", (at.topic, at.partition, at.offset)).fetchone()
    return Stored.SAME if same is not None else Stored.REPLAY


def applied_events(conn: psycopg.Connection, seqs: list[int] | None = None
                   ) -> list[StoredEvent]:
    """All applied events, or those numbered `seqs`, in their order."""
    return [StoredEvent(seq, body, received, Position(topic, partition, offset))
            for seq, body, received, topic, partition, offset in conn.execute(
                "SELECT seq, body, received_at, source_topic, source_partition, source_offset"
                " FROM registry_events WHERE applied"
                " AND (%(seqs)s::bigint[] IS NULL OR seq = ANY(%(seqs)s)) ORDER BY seq",
                {"seqs": seqs})]


def applied_seqs_after(conn: psycopg.Connection, floor: int) -> list[int]:
    return [seq for (seq,) in conn.execute(
        "SELECT seq FROM registry_events WHERE applied AND seq > %s", (floor,))]


def next_offsets(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """Per partition, the offset after the highest one stored."""
    return {p: o + 1 for p, o in conn.execute(
        "SELECT source_partition, max(source_offset) FROM registry_events"
        " WHERE source_topic = %s GROUP BY 1", (topic,))}
