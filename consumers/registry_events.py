"""The registry-event loop: every worker reads every partition of `registry-events` and lays
each change over its state within a poll, after storing it in PostgreSQL.

At start the overlay is rebuilt from the stored, applied events (oldest first) and each
partition is read from after the highest offset stored by any worker, so a restart replays
nothing from the topic that the database already has; unless the partition no longer holds
the event stored there (the topic recreated: `consumers.continuity`): then it is a new
incarnation, read from its start, and said so. An event is stored before it is
applied: a crash in between leaves it stored, and the next start applies it. Bad events,
and changes the state cannot take (an unknown device), go to the dead-letter topic once, by
whichever worker stored them first. A replayed event_id changes nothing. A poll that fails
is read again after a wait (`consumers.loop`).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Mapping

import psycopg

from consumers.continuity import read_at, renewal
from consumers.deadletters import DeadLetters
from consumers.loop import BatchLoop
from enforcer.db.connection import LazyConnection
from enforcer.follow.overlaymerge import BackgroundMerge
from consumers.publish import Publication, publish_all
from consumers.receive import Polled, Record
from enforcer.engine.attachdecode import DeadLetter
from enforcer.engine.registrydecode import decode_registry_event
from enforcer.logs import describe
from enforcer.clock import Clock, utc_datetime
from enforcer.config import Config
from enforcer.engine.effects import FLUSH_TIMEOUT_S
from enforcer.db.registry_events import (EventRow, Position, Resume, renew, store_all,
                                         stored_at)
from enforcer.follow.layover import lay_over_stored, registry_window
from enforcer.engine.imei import ImeiRules
from enforcer.engine.overlay import (Inapplicable, LogPosition, OverlayDraft, not_held,
                                     touched_by)
from enforcer.engine.registry_events import RegistryEvent, TopicPlace
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.reach import Backoff
from metrics.worker import WorkerMetrics

log = logging.getLogger("eir.registry")

POLL_MS = 200  # well inside the one second a change may take to count
# Registry changes come a few a second, but after an outage or in the compressed year
# (bench/year.py) thousands: each poll's two statements and its swap are paid per poll, and
# 5,000 a poll applied a sixth more a second than 500 there.
POLL_RECORDS = 5000
RETRY_S = 2.0
INAPPLICABLE = "inapplicable"


@dataclass
class Handled:
    """What a poll's events came to, before its rows are stored."""

    # event_id -> where it was first read: stored before, or earlier in the poll
    first_at: dict[str, Position]
    rows: list[EventRow] = field(default_factory=list)
    letters: list[tuple[str, tuple[Publication, str]]] = field(default_factory=list)
    folded: int = 0  # below the watermark: a fold already holds them
    replayed: int = 0  # an event_id that came before at another position


def place_id(at: Position) -> str:
    """The event_id of a message that has none of its own (it cannot be read): its place,
    with the partition's incarnation after the first (a new log's offsets start again)."""
    place = f"{at.topic}:{at.partition}:{at.offset}"
    return f"{place}@{at.incarnation}" if at.incarnation else place


class RegistryEventConsumer:
    def __init__(self, config: Config, holder: StateHolder, rules: ImeiRules, clock: Clock,
                 metrics: WorkerMetrics, consumer, producer,
                 connect: Callable[[], psycopg.Connection],
                 touched: Callable[[set[int], set[int]], None] = lambda imeis, msisdns: None
                 ) -> None:
        self._config = config
        self._holder = holder
        self._rules = rules
        self._clock = clock
        self._metrics = metrics
        self._consumer = consumer
        self._producer = producer
        self._restored = False
        self._connect = connect
        self._touched = touched  # told which IMEIs and SIMs each poll's changes touched
        self._loop = BatchLoop(consumer, LazyConnection(connect), Backoff(RETRY_S, RETRY_S),
                               POLL_MS, POLL_RECORDS, log,
                               "registry events not stored, will be read again")
        self._dead = DeadLetters(config.kafka.registry_dlq_topic,
                                 config.kafka.dead_letter_max_bytes, metrics.dead_letters)
        # Per partition, where its stored events end: read from there unless the partition
        # turns out to be a new log.
        self._resume: dict[int, Resume] = {}
        self._incarnations: dict[int, int] = {}  # partition -> the one being read
        self._merge = BackgroundMerge(holder)

    def close(self) -> None:
        self._merge.close()
        self._consumer.close()

    def restore(self) -> int:
        """Lay the stored, applied events the snapshot does not hold (those after its
        watermark: a fold's) over the state; returns how many. Where to read the topic from
        is taken from the same snapshot of the table (`lay_over_stored`)."""
        stored, skipped, self._resume = lay_over_stored(self._holder, self._connect,
                                                        self._rules, self._config)
        self._incarnations = {p: r.incarnation for p, r in self._resume.items()}
        self._metrics.registry_events.labels("inapplicable_on_restore").inc(skipped)
        log.info("registry events restored", extra={"events": stored})
        self._restored = True
        return stored

    def state_check(self) -> str | None:
        return None if self._restored else "registry events not yet restored"


    def run(self, stop: threading.Event) -> None:
        topic = self._config.kafka.registry_topic
        partitions = self._partitions(topic, stop)
        starts = self._starts(topic, partitions, stop)
        self._consumer.assign(topic, starts)
        # Between two polls, on this thread: a merge of the overlay's layers done meanwhile
        # is swapped in (enforcer/follow/overlaymerge.py).
        self._loop.run(stop, self._store, turned=self._merge.step)

    def _store(self, polled: Polled) -> None:
        """Store the poll's events in one transaction, their dead letters acknowledged
        before it commits; then apply them in memory."""
        records = [polled.record(i) for i in range(len(polled))]
        state = self._holder.current
        draft = OverlayDraft(state.overlay, state.lists, state.devices)
        conn = self._loop.database.connection()
        # One reading of the clock for the poll: its events arrived together.
        now_ms = self._clock.now_ms()
        received = utc_datetime(now_ms)
        window = registry_window(self._config, now_ms)
        decoded = [decode_registry_event(r.value, self._rules, window) for r in records]
        draft.prefetch([d.change for d in decoded if isinstance(d, RegistryEvent)])
        with conn.transaction():
            at = [self._position(record) for record in records]
            ids = [d.event_id if isinstance(d, RegistryEvent) else place_id(a)
                   for d, a in zip(decoded, at)]
            before = stored_at(conn, ids)
            handled = Handled(dict(before))
            for record, event, event_id, position in zip(records, decoded, ids, at):
                self._handle(record, event, event_id, position, draft, state.watermark,
                             handled, received)
            stored = store_all(conn, [r for r in handled.rows if r.event_id not in before])
            letters = [letter for event_id, letter in handled.letters if event_id in stored]
            # Published before the poll's rows commit: a dead letter stored is one the broker
            # has (a crash in between stores nothing; all is read again).
            publish_all(self._producer, [p for p, _ in letters], FLUSH_TIMEOUT_S)
        # Stored as applied means applied in memory too, whatever fails after.
        self._commit(draft, records)
        self._count(draft, handled, [reason for _, reason in letters])

    def _commit(self, draft: OverlayDraft, records: list[Record]) -> None:
        """The poll's changes in place, and how far each partition has been read."""
        positions = {r.partition: (self._incarnations.get(r.partition, 0), r.offset + 1)
                     for r in records}

        def change(state: EnforcementState) -> EnforcementState:
            if state.overlay is draft.origin:
                return replace(state, overlay=draft.finish(positions))
            # A new generation came in meanwhile: the same events over it, but those it
            # holds (another worker's fold, past this poll).
            overlay, refused = state.overlay.apply_all(
                not_held(draft.applied, state.watermark), state.lists, state.devices)
            self._metrics.registry_events.labels("inapplicable_after_swap").inc(len(refused))
            return replace(state, overlay=overlay.at(positions))

        self._holder.update(change)
        state = self._holder.current
        if draft.applied:
            imeis: set[int] = set()
            msisdns: set[int] = set()
            for event in draft.applied:
                more_imeis, more_msisdns = touched_by(event.change, state.overlay, state.lists,
                                                      state.devices)
                imeis |= more_imeis
                msisdns |= more_msisdns
            self._touched(imeis, msisdns)

    def _partitions(self, topic: str, stop: threading.Event) -> list[int]:
        while not stop.is_set():
            try:
                found = self._consumer.partitions_for(topic)
            except Exception as exc:  # noqa: BLE001 - the broker away: ask again
                log.warning("registry topic not looked up", extra={"error": describe(exc)})
                found = set()
            if found:
                return sorted(found)
            stop.wait(RETRY_S)  # the topic does not exist yet
        return []

    def _starts(self, topic: str, partitions: list[int],
                stop: threading.Event) -> dict[int, int | None]:
        """Where to read each partition from (None: its beginning): after the events stored
        from it, if it still holds the last of them; from its beginning if it is a new log,
        whose events already stored are then replays and change nothing."""
        resume = {p: self._resume[p] for p in partitions if p in self._resume}
        last = {p: r.next_offset - 1 for p, r in resume.items() if r.last_body is not None}
        found = read_at(self._consumer, topic, last, stop) if last else {}
        renewed = {p: why for p, got in found.items()
                   if (why := renewal(resume[p], got)) is not None}
        if renewed:
            self._renew(topic, {p: (resume[p], why) for p, why in renewed.items()}, stop)
        return {p: None if p in renewed or p not in resume else resume[p].next_offset
                for p in partitions}

    def _renew(self, topic: str, renewed: dict[int, tuple[Resume, str]],
               stop: threading.Event) -> None:
        """Record each partition's next incarnation, say so and count it, and read it from
        its start."""
        at = utc_datetime(self._clock.now_ms())
        incarnations: dict[int, int] = {}
        while not incarnations and not stop.is_set():
            try:
                with self._connect() as conn, conn.transaction():
                    incarnations = {p: renew(conn, topic, p, resume, why, at)
                                    for p, (resume, why) in renewed.items()}
            except psycopg.Error as exc:  # the database away: try again
                log.warning("registry partitions' new logs not recorded, will try again",
                            extra={"error": describe(exc)})
                stop.wait(RETRY_S)
        for p, incarnation in incarnations.items():
            resume, why = renewed[p]
            log.warning("registry partition is a new log, read from its start", extra={
                "topic": topic, "partition": p, "stored_to": resume.next_offset,
                "found": why, "incarnation": incarnation})
            self._metrics.registry_resets.labels(str(p)).inc()
        self._incarnations.update(incarnations)
        self._holder.update(lambda state: replace(state, overlay=state.overlay.at(
            {p: (incarnation, 0) for p, incarnation in incarnations.items()})))

    def _position(self, record: Record) -> Position:
        return Position(record.topic, record.partition, record.offset,
                        self._incarnations.get(record.partition, 0))

    def _handle(self, record: Record, decoded: RegistryEvent | DeadLetter, event_id: str,
                at: Position, draft: OverlayDraft, watermark: Mapping[int, LogPosition],
                handled: Handled, received: datetime) -> None:
        """The event's row and, if it is one, its dead letter; applied to the draft if it
        applies."""
        place = TopicPlace(at.partition, at.incarnation, at.offset)
        if place.before(watermark):  # another worker folded past it: the snapshot has it
            handled.rows.append(EventRow(place_id(at), True, None, record.value or b"", at,
                                         received))
            handled.folded += 1
            return
        first = handled.first_at.setdefault(event_id, at)
        if first != at:  # the registry sent it before: it changes nothing
            handled.replayed += 1
            return
        if isinstance(decoded, DeadLetter):
            self._refuse(event_id, record, decoded, at, received, handled)
            return
        try:  # changes nothing when it raises Inapplicable
            draft.apply(RegistryEvent(decoded.event_id, decoded.time_ms, decoded.change, place))
        except Inapplicable as exc:
            self._refuse(event_id, record, DeadLetter(INAPPLICABLE, str(exc)), at, received,
                         handled)
            return
        handled.rows.append(EventRow(event_id, True, None, record.value or b"", at, received))

    def _refuse(self, event_id: str, record: Record, letter: DeadLetter, at: Position,
                received: datetime, handled: Handled) -> None:
        """A bad event's row, stored as not applied, and its dead letter, sent if this
        worker's row is the one stored. The row keeps what the dead letter holds, cut as it
        is (bounded by kafka.dead_letter_max_bytes): a bad event is never laid over the
        state again, its row only says it was handled; the whole message is on its source
        topic, and the dead letter gives its size and digest."""
        publication = self._dead.of(record, letter)
        handled.rows.append(EventRow(event_id, False, letter.reason, publication.value, at,
                                     received))
        handled.letters.append((event_id, (publication, letter.reason)))

    def _count(self, draft: OverlayDraft, handled: Handled, dead_reasons: list[str]) -> None:
        if draft.applied:
            log.info("registry events applied", extra={
                "events": len(draft.applied),
                "types": dict(Counter(type(e.change).__name__ for e in draft.applied)),
                "last_event_id": draft.applied[-1].event_id})
        self._metrics.registry_events.labels("applied").inc(len(draft.applied))
        self._metrics.registry_events.labels("folded_already").inc(handled.folded)
        self._metrics.registry_events.labels("replayed").inc(handled.replayed)
        self._metrics.registry_events.labels("dead_lettered").inc(len(dead_reasons))
        self._dead.count(dead_reasons)
