"""Laying the registry events stored in PostgreSQL over a state held in memory, oldest
first: at a worker's start, in `serve`'s following, for a one-off status answer and in the
consistency check. No Kafka here: the rows are read by the caller (`enforcer.db`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Mapping

import psycopg

from enforcer.clock import MS_PER_S
from enforcer.config import Config
from enforcer.db.registry_events import (Resume, StoredEvent, applied_events_after,
                                         repeatable_read, resume_points)
from enforcer.engine.attachdecode import TimeWindow
from enforcer.engine.imei import ImeiRules
from enforcer.engine.overlay import Inapplicable, LogPosition, not_held
from enforcer.engine.registry_events import RegistryEvent, TopicPlace
from enforcer.engine.registrydecode import decode_registry_event
from enforcer.engine.state import EnforcementState, StateHolder

log = logging.getLogger("eir.registry")

# Stored events that no longer apply are told in one line, naming this many of them: after
# a new snapshot they may be thousands, and the line is read by a person.
REFUSED_NAMED = 5


def registry_window(config: Config, now_ms: int) -> TimeWindow:
    return TimeWindow.around(now_ms, config.registry.max_event_age_days,
                             config.worker.max_event_future_s)


def stored_changes(stored: list[StoredEvent], rules: ImeiRules,
                   config: Config) -> list[RegistryEvent]:
    events = []
    for row in stored:
        # Judged against the time it arrived, as it was then.
        received_ms = int(row.received_at.timestamp() * MS_PER_S)
        event = decode_registry_event(row.body, rules, registry_window(config, received_ms))
        if isinstance(event, RegistryEvent):
            events.append(replace(event, read_at=TopicPlace(
                row.at.partition, row.at.incarnation, row.at.offset)))
    return events


def lay_over(holder: StateHolder, stored: list[StoredEvent], rules: ImeiRules, config: Config,
             positions: Mapping[int, LogPosition] | None = None,
             level: int = logging.WARNING) -> int:
    """Apply stored events over the holder's state, oldest first, but those its snapshot
    holds (read before its watermark: a fold's); returns how many no longer apply (the
    snapshot changed under them since, as an import does). Those are told in one line at
    `level`: how many, and the first `REFUSED_NAMED` with why."""
    events = stored_changes(stored, rules, config)
    refused: list[tuple[RegistryEvent, Inapplicable]] = []

    def change(state: EnforcementState) -> EnforcementState:
        nonlocal refused
        overlay, refused = state.overlay.apply_all(not_held(events, state.watermark),
                                                   state.lists, state.devices)
        return replace(state, overlay=overlay.at(positions or {}))

    holder.update(change)
    if refused:
        log.log(level, "stored registry events no longer apply", extra={
            "events": len(refused),
            "first": [{"event_id": event.event_id, "error": str(exc)}
                      for event, exc in refused[:REFUSED_NAMED]]})
    return len(refused)


def lay_over_stored(holder: StateHolder, connect: Callable[[], psycopg.Connection],
                    rules: ImeiRules, config: Config) -> tuple[int, int, dict[int, Resume]]:
    """Lay the stored, applied events the holder's snapshot does not hold (those after its
    watermark) over it, the overlay read to where the stored events end: what a worker does
    at its start, and a fold before it folds. Returns (events read, how many no longer
    apply, each partition's Resume), all from one snapshot of the table, so that what other
    workers store meanwhile is read from the topic rather than skipped."""
    with connect() as conn, conn.transaction():
        repeatable_read(conn)
        stored = applied_events_after(conn, config.kafka.registry_topic,
                                      holder.current.watermark)
        resume = resume_points(conn, config.kafka.registry_topic)
    skipped = lay_over(holder, stored, rules, config,
                       {p: (r.incarnation, r.next_offset) for p, r in resume.items()})
    return len(stored), skipped, resume
