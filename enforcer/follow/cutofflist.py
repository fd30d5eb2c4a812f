"""This worker's copy of the cut-off list: what any worker stored followed into memory, and
what this worker's own sweep cuts and restores taken in at once, so that its next attach
decision already knows."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from enforcer.engine.lifecycle import Notice
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.follow.followers import CutoffFollower, FlagFollower
from metrics.notices import NoticeMetrics
from rules.policy import Scope


def subject(notice: Notice) -> tuple[int, int | None]:
    """What a notice cuts off: (IMEI key, IMSI) for a pair, (IMEI key, None) for the IMEI."""
    return notice.imei_key, notice.imsi if notice.scope is Scope.PAIR else None


class CutoffList:
    """The cut-off list in the state `holder` keeps, with the misuse flags beside it: a
    notice is decided with both."""

    def __init__(self, holder: StateHolder, metrics: NoticeMetrics) -> None:
        self._holder = holder
        self._metrics = metrics
        self._cutoffs = CutoffFollower(holder)
        self._flags = FlagFollower(holder)  # other workers' (a partition may come here)

    def follow(self, conn: psycopg.Connection) -> int:
        """Cutoffs, restores and misuse flags made by any worker, into this worker's
        memory; how many were new."""
        followed = self._cutoffs.follow(conn) + self._flags.follow(conn)
        self.remember([], [])
        return followed

    def deciding(self, conn: psycopg.Connection) -> EnforcementState:
        """The state to decide notices just locked with. The flags are followed first: the
        worker that raised one committed it with its misuse notices, which this one may have
        just taken without knowing the flag (it would find them resolved)."""
        self._flags.follow(conn)
        return self._holder.current

    def remember(self, cut: list[Notice], restored: list[Notice]) -> None:
        """The subjects of notices this worker just cut and restored (committed)."""
        if cut or restored:
            cut_subjects = [subject(n) for n in cut]
            restored_subjects = [subject(n) for n in restored]
            self._holder.update(lambda s: replace(
                s, cutoffs=s.cutoffs.changed(cut_subjects, restored_subjects)))
        cutoffs = self._holder.current.cutoffs
        self._metrics.cutoffs.labels("imei").set(len(cutoffs.imeis))
        self._metrics.cutoffs.labels("pair").set(len(cutoffs.pairs))
