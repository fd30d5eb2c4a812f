"""The notices' shell: the due sweep, cancellation by the registry (or supersession by the
rule that decides a subject now), the outbox relay, and this worker's copy of the cut-off
list.

Every worker runs it; due notices are taken `FOR UPDATE SKIP LOCKED`, so workers sweeping
together never take the same notice. A step's state change and its messages commit in one
transaction (the outbox); the relay publishes them and marks them sent after the broker has
them, so a crash anywhere sends a step again at worst, under the same idempotency key.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, replace
from typing import Callable

import psycopg

from consumers.publish import Delivered, Producer, Publication
from consumers.readback import keys_after
from consumers.receive import Consumer

from enforcer.clock import MS_PER_DAY, MS_PER_HOUR, Clock
from enforcer.config import Config, NoticesConfig
from enforcer.db.locks import try_lock, unlock
from enforcer.db.notices import (RELAY_LOCK, Change, cut_after, enqueue, live_about, live_counts,
                                 mark_sent, mark_sent_keys, outbox_backlog, record, RelayRecord,
                                 relay_record, save_relay_record, see_subjects, set_in_flight,
                                 take_due, unsent)
from enforcer.engine.effects import FLUSH_TIMEOUT_S, IDEMPOTENCY_HEADER, Stream
from enforcer.follow.followers import CutoffFollower, FlagFollower
from enforcer.logs import describe
from enforcer.engine.noticemessages import OutboxMessage, step_messages
from enforcer.engine.lifecycle import Notice, NoticeState, Pace, QuietHours, Step, advance
from enforcer.engine.opening import successor_subject, successors
from enforcer.engine.resolution import resolutions
from enforcer.engine.state import EnforcementState, StateHolder
from metrics.notices import NoticeMetrics
from rules.policy import Scope

log = logging.getLogger("eir.notices")

# Notices closed without a cutoff (eir_notices_closed_total).
CLOSED_UNCUT = (NoticeState.CANCELLED, NoticeState.SUPERSEDED, NoticeState.LAPSED)


def pace_of(config: Config) -> Pace:
    n = config.notices
    return Pace(QuietHours.parse(n.quiet_start, n.quiet_end, n.timezone),
                int(n.sms_gap_hours * MS_PER_HOUR), n.lapse_days * MS_PER_DAY)


def cancellation(notice: Notice, reason: str, settings: NoticesConfig,
                 successor: int | None = None) -> tuple[Change, list[OutboxMessage]]:
    """A live notice cancelled, or superseded by the notice `successor`; if it was cut, the
    restore and its SMS."""
    closed = replace(notice, state=NoticeState.CANCELLED if successor is None
                     else NoticeState.SUPERSEDED)
    was_cut = notice.state is NoticeState.CUT
    messages = step_messages(closed, Step.RESOLVED, settings) if was_cut else []
    step = Step.RESOLVED.value if messages else None
    return Change(closed, notice.state, None, step, reason, successor), messages


@dataclass(frozen=True)
class Closed:
    """What closing the notices that no longer stand comes to, to store in one transaction."""

    changes: list[Change]
    messages: list[OutboxMessage]
    restored: list[tuple[int, int | None]]  # subjects of the cut ones among them
    opened: Counter[str]  # notices opened to take over, by kind


def _after(ends: dict[str, dict[int, int]],
           delivered: list[tuple[str, Delivered]]) -> dict[str, dict[int, int]]:
    """`ends` moved past these deliveries."""
    moved = {topic: dict(parts) for topic, parts in ends.items()}
    for topic, d in delivered:
        parts = moved.setdefault(topic, {})
        parts[d.partition] = max(parts.get(d.partition, 0), d.offset + 1)
    return moved


def _subject(notice: Notice) -> tuple[int, int | None]:
    return notice.imei_key, notice.imsi if notice.scope is Scope.PAIR else None


class NoticeSweeper:
    def __init__(self, config: Config, holder: StateHolder, clock: Clock,
                 metrics: NoticeMetrics, connect: Callable[[], psycopg.Connection],
                 producer: Producer, reader: Consumer) -> None:
        self._config = config
        self._holder = holder
        self._clock = clock
        self._metrics = metrics
        self._connect = connect
        self._producer = producer
        self._reader = reader  # reads the outbox topics back after an interrupted round
        self._pace = pace_of(config)
        self._topics = {Stream.NOTIFICATIONS.value: config.kafka.notifications_topic,
                        Stream.COMMANDS.value: config.kafka.commands_topic}
        self._touched_imeis: set[int] = set()
        self._touched_msisdns: set[int] = set()
        self._touched_lock = threading.Lock()
        self._cutoffs = CutoffFollower(holder)
        self._flags = FlagFollower(holder)  # other workers' (a partition may come here)
        self._counted_at = -math.inf
        self._counted: set[tuple[str, str]] = set()

    def touch(self, imei_keys: set[int], msisdns: set[int]) -> None:
        """The registry changed these IMEIs and SIMs: their notices may be resolved."""
        with self._touched_lock:
            self._touched_imeis |= imei_keys
            self._touched_msisdns |= msisdns

    def start(self) -> None:
        """At the worker's start: the cut-off list into memory, and cut notices the registry
        resolved while nobody looked. The first due sweep waits for the schedule, by which
        time the registry topic has been read."""
        with self._connect() as conn:
            self.follow_cutoffs(conn)
            self.recheck_cut(conn)

    def run_once(self) -> dict[str, int]:
        """One round: follow other workers' cutoffs, cancel what the registry resolved,
        take the due steps, publish the outbox."""
        with self._connect() as conn:
            followed = self.follow_cutoffs(conn)
            cancelled = self.cancel_resolved(conn)
            swept = self._sweep_together(conn)
            published = self.relay(conn)
            self._count_outbox(conn)
            if time.monotonic() - self._counted_at >= self._config.notices.count_every_s:
                cancelled += self.recheck_cut(conn)
                self._count_live(conn)
        self._metrics.rounds.inc()
        return {"followed": followed, "cancelled": cancelled, "swept": swept,
                "published": published}

    def recheck_cut(self, conn: psycopg.Connection) -> int:
        """Every cut notice decided again: a registry change this worker did not see being
        applied (it was down, or another worker held the row) still restores it."""
        after, cancelled = 0, 0
        while True:
            now = self._clock.now_ms()
            with conn.transaction():
                cut = cut_after(conn, after, self._config.notices.batch)
                closed = self._close(conn, cut, self._deciding(conn), now)
                record(conn, closed.changes, now)
                enqueue(conn, closed.messages)
            self._remember([], closed.restored)
            self._count(closed.changes, closed.opened)
            cancelled += len(closed.changes)
            if len(cut) < self._config.notices.batch:
                return cancelled
            after = cut[-1].id

    def _sweep_together(self, conn: psycopg.Connection) -> int:
        others = self._config.notices.sweepers - 1
        if others < 1:
            return self.sweep(conn)

        def on_own_connection() -> int:
            with self._connect() as own:
                return self.sweep(own)

        with ThreadPoolExecutor(others, thread_name_prefix="sweeper") as pool:
            running = [pool.submit(on_own_connection) for _ in range(others)]
            swept = self.sweep(conn)
            return swept + sum(f.result() for f in running)

    def sweep(self, conn: psycopg.Connection) -> int:
        total = 0
        while True:
            now = self._clock.now_ms()
            with conn.transaction():
                due = take_due(conn, now, self._config.notices.batch)
                closed = self._close(conn, due, self._deciding(conn), now)
                closing = {c.notice.id for c in closed.changes}
                changes, messages, cut = closed.changes, closed.messages, []
                for notice in due:
                    if notice.id in closing:
                        continue
                    step = advance(notice, now, self._pace)
                    reason = None
                    if step.notice.state is NoticeState.LAPSED:
                        reason = "not_seen"
                    elif step.skipped:
                        reason = f"{step.skipped} reminder(s) overtaken"
                    changes.append(Change(step.notice, notice.state, step.next_due_ms,
                                          step.sent.value if step.sent else None, reason))
                    if step.sent is not None:
                        messages += step_messages(step.notice, step.sent, self._config.notices)
                    if step.notice.state is NoticeState.CUT:
                        cut.append(_subject(notice))
                record(conn, changes, now)
                enqueue(conn, messages)
            self._remember(cut, [])
            self._count(changes, closed.opened)
            total += len(due)
            # Notices that took over are due at once: their warnings go in this sweep.
            if len(due) < self._config.notices.batch and not closed.opened:
                return total

    def cancel_resolved(self, conn: psycopg.Connection) -> int:
        with self._touched_lock:
            imeis, msisdns = self._touched_imeis, self._touched_msisdns
            self._touched_imeis, self._touched_msisdns = set(), set()
        if not imeis and not msisdns:
            return 0
        now = self._clock.now_ms()
        try:
            with conn.transaction():
                live = live_about(conn, sorted(imeis), sorted(msisdns))
                closed = self._close(conn, live, self._deciding(conn), now)
                record(conn, closed.changes, now)
                enqueue(conn, closed.messages)
        except Exception:
            self.touch(imeis, msisdns)  # looked at again next round
            raise
        self._remember([], closed.restored)
        self._count(closed.changes, closed.opened)
        return len(closed.changes)

    def _deciding(self, conn: psycopg.Connection) -> EnforcementState:
        """The state to decide notices just locked with. The flags are followed first: the
        worker that raised one committed it with its misuse notices, which this one may have
        just taken without knowing the flag (it would find them resolved)."""
        self._flags.follow(conn)
        return self._holder.current

    def _close(self, conn: psycopg.Connection, notices: list[Notice],
               state: EnforcementState, now: int) -> Closed:
        """Of these locked notices, those that no longer stand: each resolved one cancelled,
        each superseded one closed with the notice of the rule that decides its subject now
        opened (or found live) and linked; a cut one restored either way."""
        resolved = resolutions(notices, state, now)
        if not resolved:
            return Closed([], [], [], Counter())
        rules = state.policy.rules
        closing = [n for n in notices if n.id in resolved]
        taking_over = [(n, resolved[n.id].successor) for n in closing
                       if resolved[n.id].successor is not None]
        live = see_subjects(conn, successors(taking_over, rules, now), rules)
        opened = Counter(kind for (kind, _, _), (_, new) in live.items() if new)
        changes, messages, restored = [], [], []
        for notice in closing:
            rule = resolved[notice.id].successor
            successor = None if rule is None else live[successor_subject(notice, rules[rule])][0]
            change, more = self._cancel(notice, resolved[notice.id].rule, successor)
            changes.append(change)
            messages += more
            if notice.state is NoticeState.CUT:
                restored.append(_subject(notice))
        return Closed(changes, messages, restored, opened)

    def _cancel(self, notice: Notice, rule: str, successor: int | None
                ) -> tuple[Change, list[OutboxMessage]]:
        log.info("notice cancelled by the registry" if successor is None
                 else "notice superseded", extra={"notice_id": notice.id, "kind": notice.kind,
                                                  "now_decided_by": rule,
                                                  "superseded_by": successor})
        return cancellation(notice, rule, self._config.notices, successor)

    def relay(self, conn: psycopg.Connection) -> int:
        """Publish the outbox, oldest first, in one worker at a time (so that one device's
        cutoff and restore reach provisioning in the order they were decided). Only what
        the broker acknowledged is marked sent. A round that may have published without
        recording it (a killed worker, the database lost before the commit, a message not
        acknowledged) is read back from the topics by the next relay, which marks what it
        finds sent instead of publishing it again."""
        if not try_lock(conn, RELAY_LOCK):
            return 0  # another worker is relaying
        try:
            return self._relay(conn)
        finally:
            unlock(conn, RELAY_LOCK)

    def _relay(self, conn: psycopg.Connection) -> int:
        last = relay_record(conn)
        if last.in_flight:
            self._mark_found(conn, last.ends)
        ends, total = last.ends, 0
        while True:
            rows = unsent(conn, self._config.notices.batch)
            if not rows:
                return total
            set_in_flight(conn, True)  # committed before anything reaches the broker
            delivered = self._producer.publish([Publication(
                self._topics[m.stream], m.key, m.body,
                ((IDEMPOTENCY_HEADER, m.idempotency_key.encode()),)) for _, m in rows],
                FLUSH_TIMEOUT_S)
            acked = [(i, m, d) for (i, m), d in zip(rows, delivered) if d is not None]
            ends = _after(ends, [(self._topics[m.stream], d) for _, m, d in acked])
            with conn.transaction():
                mark_sent(conn, [i for i, _, _ in acked])
                # One not acknowledged may be on its topic all the same: read back next time.
                save_relay_record(conn, RelayRecord(len(acked) < len(rows), ends))
            for _, m, _ in acked:
                self._metrics.published.labels(m.stream).inc()
            total += len(acked)
            if len(acked) < len(rows):
                log.warning("outbox messages not acknowledged, sent again next round",
                            extra={"failed": len(rows) - len(acked)})
                return total
            if len(rows) < self._config.notices.batch:
                return total

    def _mark_found(self, conn: psycopg.Connection, ends: dict[str, dict[int, int]]) -> None:
        for stream, topic in self._topics.items():
            found = keys_after(self._reader, topic, ends.get(topic, {}), IDEMPOTENCY_HEADER,
                               FLUSH_TIMEOUT_S)
            marked = mark_sent_keys(conn, stream, found)
            if marked:
                self._metrics.found_on_topic.labels(stream).inc(marked)
                log.warning("outbox messages found already published after an interrupted"
                            " round, marked sent", extra={"stream": stream, "marked": marked})
        set_in_flight(conn, False)

    def close(self) -> None:
        self._reader.close()

    def follow_cutoffs(self, conn: psycopg.Connection) -> int:
        """Cutoffs, restores and misuse flags made by any worker, into this worker's
        memory."""
        followed = self._cutoffs.follow(conn) + self._flags.follow(conn)
        self._remember([], [])
        return followed

    def _remember(self, cut: list[tuple[int, int | None]],
                  restored: list[tuple[int, int | None]]) -> None:
        if cut or restored:
            self._holder.update(
                lambda s: replace(s, cutoffs=s.cutoffs.changed(cut, restored)))
        cutoffs = self._holder.current.cutoffs
        self._metrics.cutoffs.labels("imei").set(len(cutoffs.imeis))
        self._metrics.cutoffs.labels("pair").set(len(cutoffs.pairs))

    def _count(self, changes: list[Change], opened: Counter[str]) -> None:
        # Counted first, then one increment per label set: a label lookup takes a lock.
        steps = Counter((c.notice.kind, c.step) for c in changes if c.step)
        closed = Counter((c.notice.kind, c.notice.state.value) for c in changes
                         if c.notice.state in CLOSED_UNCUT)
        for labels, n in steps.items():
            self._metrics.steps.labels(*labels).inc(n)
        for labels, n in closed.items():
            self._metrics.closed.labels(*labels).inc(n)
        for kind, n in opened.items():
            self._metrics.opened.labels(kind).inc(n)

    def _count_live(self, conn: psycopg.Connection) -> None:
        counts = {(kind, state): n for kind, state, n in live_counts(conn)}
        for kind, state in self._counted - counts.keys():  # none left: say 0, not the past
            self._metrics.live.labels(kind, state).set(0)
        for (kind, state), n in counts.items():
            self._metrics.live.labels(kind, state).set(n)
        self._counted |= counts.keys()
        self._counted_at = time.monotonic()

    def _count_outbox(self, conn: psycopg.Connection) -> None:
        backlog, oldest = outbox_backlog(conn)
        self._metrics.outbox_backlog.set(backlog)
        self._metrics.outbox_oldest.set(oldest)


class SweepLoop:
    """The sweeper's own thread: a round every notices.sweep_every_s (start to start), and
    one at once when woken; one round at a time. A round that outlasts the interval (a big
    backlog, a slow database) is followed by the next at once: expected, so not a warning."""

    def __init__(self, sweeper: NoticeSweeper, every_s: float) -> None:
        self._sweeper = sweeper
        self._every_s = every_s
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="eir-sweep")
        self._thread.start()

    def wake(self) -> None:
        """A round now rather than at the next interval; woken during a round, one more
        after it. Before the start, nothing: the first round waits an interval, by which
        time the registry topic has been read."""
        if self._thread is not None:
            self._woken.set()

    def stop(self) -> None:
        """Ends the loop after the round running, if any, and waits for it."""
        self._stopping.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            self._woken.wait(max(self._every_s - (time.monotonic() - started), 0))
            if self._stopping.is_set():
                return
            self._woken.clear()
            started = time.monotonic()
            try:
                self._sweeper.run_once()
            except Exception as exc:  # noqa: BLE001 - nothing is half-done: the next round retries
                log.warning("notice sweep failed", extra={"error": describe(exc)})
