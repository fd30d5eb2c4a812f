"""The registry overlay's small layers merged off the poll path.

A merge lays an overlay's small layers into new frozen layers: O(n), about a second at 5 M
entries, which no poll may wait for. So it runs on a thread of its own from an immutable
overlay, and the same thread then lays the polls applied meanwhile over it (`adopted`,
O(small layers)): the registry consumer only swaps the result in, between two drafts, if no
poll came after the overlay it was made for; else the thread adopts again for the newer
one, and after `ADOPT_TRIES` the consumer adopts on its own thread (a few milliseconds). A
merge made from an overlay that another lineage replaced meanwhile (a new generation, a
consistency repair) is dropped; the next poll starts another if the new overlay wants one.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from enforcer.engine.overlay import Overlay
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.logs import describe

log = logging.getLogger("eir.registry")

# Adoptions the thread tries before the consumer adopts itself: registry polls come a few a
# second, so the first almost always finds no poll came in between.
ADOPT_TRIES = 3
# The merge thread's niceness (0 normal, 19 lowest): the CFS scheduler then gives a poll
# that wakes about ten times the merge's share of a shared core.
MERGE_NICE = 10


@dataclass(frozen=True)
class _Merged:
    made_from: Overlay  # what was merged
    merge: Overlay  # its small layers merged into its frozen ones
    base: Overlay  # the overlay current when the thread adopted
    adopted: Overlay | None  # base over merge; None: base is of another lineage


class BackgroundMerge:
    def __init__(self, holder: StateHolder) -> None:
        self._holder = holder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlay-merge",
                                            initializer=_yield_to_polls)
        self._pending: Future[_Merged] | None = None
        self._tries = 0
        # Overlays a swap replaced: freeing their layers (hundreds of megabytes at 5 M
        # entries, some 10 ms) is left to the merge thread, at the next step, by which time
        # the decisions that were reading them are done.
        self._retired: list[Overlay] = []

    def step(self) -> None:
        """Swap in a merge that has finished, or have it adopted again, and start one when
        the overlay wants it. Only ever between two polls of the thread that applies
        registry events, so that no draft is ever made from an overlay the swap replaces."""
        if self._pending is not None and not self._pending.done():
            return
        if self._retired:  # swapped out at an earlier step
            self._executor.submit(self._retired.clear)  # the last references to them
            self._retired = []
        if self._pending is not None:
            running, self._pending = self._pending, None
            try:
                done = running.result()
            except Exception as exc:  # noqa: BLE001 - the overlay stays as it is; try again
                log.warning("registry overlay not merged", extra={"error": describe(exc)})
            else:
                self._settle(done)
                if self._pending is not None:
                    return
        overlay = self._holder.current.overlay
        if overlay.wants_merge:
            self._tries = 1
            self._pending = self._executor.submit(self._merge, overlay)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _settle(self, done: _Merged) -> None:
        current = self._holder.current.overlay
        if done.adopted is None:
            return  # another lineage: of no use
        self._retired += [done.made_from, current]
        if current is done.base:
            self._holder.update(lambda state: _swap(state, done.base, done.adopted))
        elif self._tries < ADOPT_TRIES:
            self._tries += 1
            self._pending = self._executor.submit(self._adopt, done.made_from, done.merge)
        else:
            self._holder.update(lambda state: _adopt(state, done.merge, done.made_from))

    def _merge(self, made_from: Overlay) -> _Merged:
        return self._adopt(made_from, made_from.merged())

    def _adopt(self, made_from: Overlay, merge: Overlay) -> _Merged:
        base = self._holder.current.overlay
        return _Merged(made_from, merge, base, base.adopted(merge, made_from))


def _yield_to_polls() -> None:
    """The merge thread runs niced (Linux nices a thread by its id): on a busy core the
    polls, the attach loop and the HTTP threads come first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MERGE_NICE)
    except OSError as exc:  # not allowed here: merges compete as equals, still correct
        log.info("registry overlay merges not niced", extra={"error": describe(exc)})


def _swap(state: EnforcementState, base: Overlay, adopted: Overlay) -> EnforcementState:
    return replace(state, overlay=adopted) if state.overlay is base else state


def _adopt(state: EnforcementState, merge: Overlay, made_from: Overlay) -> EnforcementState:
    adopted = state.overlay.adopted(merge, made_from)
    return state if adopted is None else replace(state, overlay=adopted)
