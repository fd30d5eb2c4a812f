"""The registry overlay's small layers merged off the poll path.

A merge lays an overlay's small layers into new frozen layers: O(n), about a second at 5 M
entries, which no poll may wait for. So it runs on a thread of its own from an immutable
overlay, and the registry consumer adopts the result at a later poll, between two drafts:
the small layers then keep only what changed after (enforcer/engine/overlay.py,
`Overlay.adopted`). A merge made from an overlay that a new generation replaced meanwhile
is dropped; the next poll starts another if the new overlay wants one.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from enforcer.engine.overlay import Overlay
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.logs import describe

log = logging.getLogger("eir.registry")


class BackgroundMerge:
    def __init__(self, holder: StateHolder) -> None:
        self._holder = holder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="overlay-merge")
        self._pending: tuple[Overlay, Future[Overlay]] | None = None

    def step(self) -> None:
        """Adopt a merge that has finished, and start one when the overlay wants it. Only
        ever between two polls of the thread that applies registry events, so that no
        draft is ever made from an overlay the adoption replaces."""
        if self._pending is not None:
            made_from, running = self._pending
            if not running.done():
                return
            self._pending = None
            try:
                merge = running.result()
            except Exception as exc:  # noqa: BLE001 - the overlay stays as it is; try again
                log.warning("registry overlay not merged", extra={"error": describe(exc)})
            else:
                self._holder.update(lambda state: _adopt(state, merge, made_from))
        overlay = self._holder.current.overlay
        if overlay.wants_merge:
            self._pending = (overlay, self._executor.submit(overlay.merged))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _adopt(state: EnforcementState, merge: Overlay, made_from: Overlay) -> EnforcementState:
    adopted = state.overlay.adopted(merge, made_from)
    return state if adopted is None else replace(state, overlay=adopted)
