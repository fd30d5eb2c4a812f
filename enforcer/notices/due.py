"""The due sweep: the notices whose next step has come taken `FOR UPDATE SKIP LOCKED` (so
workers, and a worker's own sweepers, sweeping together never take the same notice), each
closed if it no longer stands, else moved on by the pure step function `advance`
(engine/lifecycle.py); the step's state change and its messages commit together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import psycopg

from enforcer.clock import MS_PER_DAY, MS_PER_HOUR
from enforcer.config import NoticesConfig
from enforcer.db.notices import Change, take_due
from enforcer.engine.lifecycle import Notice, NoticeState, Pace, QuietHours, advance
from enforcer.engine.devicemodel import model_name
from enforcer.engine.noticemessages import step_messages
from enforcer.engine.state import EnforcementState
from enforcer.notices.resolve import Resolver, Steps


def pace_of(settings: NoticesConfig) -> Pace:
    return Pace(QuietHours.parse(settings.quiet_start, settings.quiet_end, settings.timezone),
                int(settings.sms_gap_hours * MS_PER_HOUR), settings.lapse_days * MS_PER_DAY,
                settings.cut_idle_days * MS_PER_DAY)


class DueSweep:
    """Sweeps the due notices, a batch (notices.batch) at a time, on notices.sweepers
    connections side by side."""

    def __init__(self, settings: NoticesConfig, connect: Callable[[], psycopg.Connection],
                 resolver: Resolver) -> None:
        self._settings = settings
        self._connect = connect
        self._resolver = resolver
        self._pace = pace_of(settings)

    def sweep_together(self, conn: psycopg.Connection) -> int:
        """Sweep on `conn` until nothing is due; how many notices were taken. When more than
        a batch is due, notices.sweepers - 1 connections of their own sweep beside it (opened
        for the backlog: most rounds find less than a batch)."""
        taken, more = self._batch(conn)
        others = self._settings.sweepers - 1
        if not more:
            return taken
        if others < 1:
            return taken + self.sweep(conn)

        def on_own_connection() -> int:
            with self._connect() as own:
                return self.sweep(own)

        with ThreadPoolExecutor(others, thread_name_prefix="sweeper") as pool:
            running = [pool.submit(on_own_connection) for _ in range(others)]
            swept = self.sweep(conn)
            return taken + swept + sum(f.result() for f in running)

    def sweep(self, conn: psycopg.Connection) -> int:
        """Sweep on `conn` until nothing is due; how many notices were taken."""
        total, more = 0, True
        while more:
            taken, more = self._batch(conn)
            total += taken
        return total

    def _batch(self, conn: psycopg.Connection) -> tuple[int, bool]:
        """One batch of due notices taken and settled: how many, and whether more may be
        due (a full batch, or notices that took over: due at once, their warnings go in this
        sweep)."""
        settled = self._resolver.settle(
            conn, lambda c, now: take_due(c, now, self._settings.batch), self._advance)
        taken = len(settled.taken)
        return taken, taken >= self._settings.batch or bool(settled.opened)

    def _advance(self, due: list[Notice], now: int, state: EnforcementState) -> Steps:
        changes, messages, cut, released = [], [], [], []
        for notice in due:
            step = advance(notice, now, self._pace)
            reason = None
            if step.notice.state is NoticeState.LAPSED:
                reason = "not_seen"
                if notice.state is NoticeState.CUT:
                    released.append(notice)
            elif step.skipped:
                reason = f"{step.skipped} reminder(s) overtaken"
            changes.append(Change(step.notice, notice.state, step.next_due_ms,
                                  step.sent.value if step.sent else None, reason))
            if step.sent is not None:
                messages += step_messages(step.notice, step.sent, self._settings,
                                          model_name(state.tacs, notice.imei_key))
            if step.notice.state is NoticeState.CUT and notice.state is not NoticeState.CUT:
                cut.append(notice)  # cut now; one that only waits on is on the list already
        return Steps(changes, messages, cut, released)
