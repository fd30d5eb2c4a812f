"""Closing the notices that no longer stand: cancelled when the registry resolved them,
superseded when another rule decides their subject now (whose notice is opened and linked),
a cut one restored either way. Decided by running the decision again (engine/resolution.py)
on the notices locked; the one place that stores what it comes to, for the due sweep, the
registry's changes and the periodic recheck of what is cut."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

import psycopg

from enforcer.clock import Clock
from enforcer.config import NoticesConfig
from enforcer.db.notices import Change, cut_after, enqueue, live_about, record, see_subjects
from enforcer.engine.lifecycle import Notice, NoticeState, Step
from enforcer.engine.devicemodel import model_name
from enforcer.engine.noticemessages import OutboxMessage, step_messages
from enforcer.engine.opening import successor_subject, successors
from enforcer.engine.resolution import resolutions
from enforcer.engine.state import EnforcementState
from enforcer.follow.cutofflist import CutoffList
from metrics.notices import NoticeMetrics

log = logging.getLogger("eir.notices")

# Notices closed without a cutoff (eir_notices_closed_total).
CLOSED_UNCUT = (NoticeState.CANCELLED, NoticeState.SUPERSEDED, NoticeState.LAPSED)


def cancellation(notice: Notice, reason: str, settings: NoticesConfig, model: str | None,
                 successor: int | None = None) -> tuple[Change, list[OutboxMessage]]:
    """A live notice cancelled, or superseded by the notice `successor`; if it was cut, the
    restore and its SMS (naming `model`, the phone's make and model, or None)."""
    closed = replace(notice, state=NoticeState.CANCELLED if successor is None
                     else NoticeState.SUPERSEDED)
    was_cut = notice.state is NoticeState.CUT
    messages = step_messages(closed, Step.RESOLVED, settings, model) if was_cut else []
    step = Step.RESOLVED.value if messages else None
    return Change(closed, notice.state, None, step, reason, successor), messages


@dataclass(frozen=True)
class Steps:
    """What the caller makes of the notices left standing: their changes, messages, those
    among them cut and those released (cut before, restored now)."""

    changes: list[Change]
    messages: list[OutboxMessage]
    cut: list[Notice]
    released: list[Notice]


NO_STEPS = Steps([], [], [], [])
# Locks a batch of notices in the caller's transaction, at a time in epoch ms.
Take = Callable[[psycopg.Connection, int], list[Notice]]
# The steps of the notices left standing, at a time in epoch ms, in the state they are
# decided in (whose TAC database names the phones' models).
Then = Callable[[list[Notice], int, EnforcementState], Steps]


def _cut_after(after_id: int, limit: int) -> Take:
    return lambda conn, _: cut_after(conn, after_id, limit)


@dataclass(frozen=True)
class Settled:
    """A batch stored: the notices locked, their changes, and notices opened to take over
    (by kind)."""

    taken: list[Notice]
    changes: list[Change]
    opened: Counter[str]


@dataclass(frozen=True)
class _Closed:
    changes: list[Change]
    messages: list[OutboxMessage]
    restored: list[Notice]  # the cut ones among them
    opened: Counter[str]


class Resolver:
    """Closes what no longer stands among the notices of a batch, stores it, and tells the
    cut-off list and the metrics. Also keeps the IMEIs and SIMs the registry changed until
    the next round looks at their notices."""

    def __init__(self, settings: NoticesConfig, clock: Clock, metrics: NoticeMetrics,
                 cutoffs: CutoffList) -> None:
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._cutoffs = cutoffs
        self._touched_imeis: set[int] = set()
        self._touched_msisdns: set[int] = set()
        self._touched_lock = threading.Lock()

    def settle(self, conn: psycopg.Connection, take: Take, then: Then | None = None
               ) -> Settled:
        """One batch in one transaction: the notices `take` locks, those that no longer
        stand closed, what `then` makes of the others, all recorded with their outbox
        messages; once committed, the cut-off list and the metrics told."""
        now = self._clock.now_ms()
        with conn.transaction():
            taken = take(conn, now)
            state = self._cutoffs.deciding(conn)
            closed = self._close(conn, taken, state, now)
            closing = {c.notice.id for c in closed.changes}
            steps = NO_STEPS if then is None else then(
                [n for n in taken if n.id not in closing], now, state)
            changes = closed.changes + steps.changes
            record(conn, changes, now)
            enqueue(conn, closed.messages + steps.messages, now)
        self._cutoffs.remember(steps.cut, closed.restored + steps.released)
        self._count(changes, closed.opened)
        return Settled(taken, changes, closed.opened)

    def touch(self, imei_keys: set[int], msisdns: set[int]) -> None:
        """The registry changed these IMEIs and SIMs: their notices may be resolved."""
        with self._touched_lock:
            self._touched_imeis |= imei_keys
            self._touched_msisdns |= msisdns

    def cancel_resolved(self, conn: psycopg.Connection) -> int:
        """The live notices on the IMEIs and SIMs touched since the last call settled; how
        many were closed. Looked at again next time if it fails."""
        with self._touched_lock:
            imeis, msisdns = self._touched_imeis, self._touched_msisdns
            self._touched_imeis, self._touched_msisdns = set(), set()
        if not imeis and not msisdns:
            return 0
        try:
            settled = self.settle(conn, lambda c, _: live_about(c, sorted(imeis),
                                                                sorted(msisdns)))
        except Exception:
            self.touch(imeis, msisdns)
            raise
        return len(settled.changes)

    def recheck_cut(self, conn: psycopg.Connection) -> int:
        """Every cut notice decided again: a registry change this worker did not see being
        applied (it was down, or another worker held the row) still restores it. Returns
        how many were closed."""
        after, closed = 0, 0
        while True:
            settled = self.settle(conn, _cut_after(after, self._settings.batch))
            closed += len(settled.changes)
            if len(settled.taken) < self._settings.batch:
                return closed
            after = settled.taken[-1].id

    def _close(self, conn: psycopg.Connection, notices: list[Notice],
               state: EnforcementState, now: int) -> _Closed:
        """Of these locked notices, those that no longer stand: each resolved one cancelled,
        each superseded one closed with the notice of the rule that decides its subject now
        opened (or found live) and linked; a cut one restored either way."""
        resolved = resolutions(notices, state, now)
        if not resolved:
            return _Closed([], [], [], Counter())
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
            change, more = self._cancel(notice, resolved[notice.id].rule, successor,
                                        model_name(state.tacs, notice.imei_key))
            changes.append(change)
            messages += more
            if notice.state is NoticeState.CUT:
                restored.append(notice)
        return _Closed(changes, messages, restored, opened)

    def _cancel(self, notice: Notice, rule: str, successor: int | None, model: str | None
                ) -> tuple[Change, list[OutboxMessage]]:
        log.info("notice cancelled by the registry" if successor is None
                 else "notice superseded", extra={"notice_id": notice.id, "kind": notice.kind,
                                                  "now_decided_by": rule,
                                                  "superseded_by": successor})
        return cancellation(notice, rule, self._settings, model, successor)

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
