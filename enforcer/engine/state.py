"""The state a decision reads: one generation of lists, the devices aligned to it, and the
policy. A new generation is built aside and swapped in with one reference assignment, so a
batch that took `holder.current` sees the old state or the new one, never a mix."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from enforcer.engine.clones import NOT_MISUSED, Misused
from enforcer.engine.cutoffs import NO_CUTOFFS, CutOffs
from enforcer.engine.lists import Lists
from enforcer.engine.numbers import NO_NUMBERS, MsisdnsByImsi
from enforcer.engine.overlay import LogPosition, Overlay, empty_overlay
from enforcer.engine.devices import Devices
from enforcer.engine.tacblocks import BlockedTacs
from enforcer.engine.tacs import TacDatabase
from rules.policy import Policy


@dataclass(frozen=True, eq=False)
class EnforcementState:
    lists: Lists
    devices: Devices
    policy: Policy
    overlay: Overlay = field(default=None)  # type: ignore[assignment]  # empty if not given
    cutoffs: CutOffs = NO_CUTOFFS  # this operator's own, from the notices table
    misused: Misused = NOT_MISUSED  # flagged by clone detection, from clone_flags
    # The registry topic's positions (partition -> (incarnation, next offset)) whose events
    # the snapshot's columns hold (a fold's); the overlay holds only those after.
    watermark: Mapping[int, LogPosition] = field(default_factory=dict)
    # The GSMA's TAC database, imported like the lists; None until one is: the policy's
    # TAC conditions are then off.
    tacs: TacDatabase | None = None
    # The regulator's blocked TACs, imported like the lists; None until a list is: the
    # condition tac_blocked is then off.
    blocked_tacs: BlockedTacs | None = None
    # The subscribers' numbers by IMSI, for checks that carry no MSISDN: learned from the
    # attaches the workers store (`serve` follows them); empty in a worker, which needs none.
    numbers: MsisdnsByImsi = NO_NUMBERS

    def __post_init__(self) -> None:
        if self.devices.rows != len(self.lists.white_index):
            raise ValueError("the devices are not aligned to this generation's white list")
        if self.overlay is None:
            object.__setattr__(self, "overlay", empty_overlay(self.devices))

    @property
    def generation(self) -> int:
        return self.lists.generation


class StateHolder:
    def __init__(self, state: EnforcementState) -> None:
        self._state = state
        self._swap_lock = threading.Lock()

    @property
    def current(self) -> EnforcementState:
        return self._state

    def update(self, change: Callable[[EnforcementState], EnforcementState]) -> None:
        """Replace the state with `change(current)`, atomically with respect to swaps."""
        with self._swap_lock:
            self._state = change(self._state)

    def swap(self, new: EnforcementState) -> int:
        """Put a newer generation in place, with the registry's changes laid over it again;
        returns how many of those no longer apply to it."""
        with self._swap_lock:
            if new.generation <= self._state.generation:
                raise ValueError(f"generation {new.generation} is not newer than "
                                 f"{self._state.generation}")
            overlay, stale = self._state.overlay.rebase(new.lists, new.devices, new.watermark)
            self._state = replace(new, overlay=overlay, cutoffs=self._state.cutoffs,
                                  misused=self._state.misused, numbers=self._state.numbers)
            return stale
