"""The state a decision reads: one generation of lists, the devices aligned to it, and the
policy. A new generation is built aside and swapped in with one reference assignment, so a
batch that took `holder.current` sees the old state or the new one, never a mix."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, NamedTuple

from enforcer.engine.clones import NOT_MISUSED, Misused
from enforcer.engine.cutoffs import NO_CUTOFFS, CutOffs
from enforcer.engine.lists import Lists
from enforcer.engine.numbers import NO_NUMBERS, MsisdnsByImsi
from enforcer.engine.overlay import LogPosition, Overlay, empty_overlay
from enforcer.engine.devices import Devices
from enforcer.engine.tacblocks import BlockedTacs
from enforcer.engine.tacs import TacDatabase
from enforcer.heap import let_go
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

    def let_go_of_pages(self) -> None:
        """The pages of its registry and white list mapped from the snapshot's files (every
        process maps them) dropped from the resident set; arrays in memory are left as they
        are. For a generation read once more, front to back, or no more: the one a swap
        replaced, which a batch in flight or the clone window's rebase may still read (their
        reads map the pages again from the page cache), and which would otherwise stay
        resident beside the new one's until the last of them lets go of it (issue 21 part 1:
        one generation's pages a process, not two)."""
        let_go(*self.devices.columns(), self.lists.white_index.low)


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
        returns how many of those no longer apply to it. Raises ValueError when `new` is not
        newer than the state held."""
        return self.put(self.rebased(new)).stale

    def rebased(self, new: EnforcementState) -> Rebased:
        """`new` with the registry's changes held now laid over it, outside the lock, while
        `update` goes on applying the registry's: a fold's adoption lays again every change
        read while the fold ran (tens of thousands at a national registry's rate), and the
        registry thread waited for them all. Raises ValueError as `swap`."""
        base = self._state
        _newer(new, base)
        overlay, stale = base.overlay.rebase(new.lists, new.devices, new.watermark)
        return Rebased(new, base, overlay, stale)

    def put(self, rebased: Rebased) -> Put:
        """The generation `rebased` holds in place, with the changes applied since it was
        made laid over it too, under the lock. Raises ValueError as `swap`."""
        new = rebased.new
        with self._swap_lock:
            current = self._state
            _newer(new, current)
            caught = (current.overlay.caught_up(rebased.overlay, rebased.base.overlay,
                                                new.lists, new.devices, new.watermark)
                      if current.lists is rebased.base.lists else None)
            if caught is None:  # a generation or a repaired overlay came in meanwhile
                overlay, stale = current.overlay.rebase(new.lists, new.devices, new.watermark)
            else:
                overlay, late = caught
                stale = rebased.stale + late
            self._state = replace(new, overlay=overlay, cutoffs=current.cutoffs,
                                  misused=current.misused, numbers=current.numbers)
        current.let_go_of_pages()
        return Put(stale, caught is None)


class Put(NamedTuple):
    """What `StateHolder.put` did: how many of the registry's changes no longer apply to the
    new generation, and whether all of them were laid again under the lock (a generation or
    a repaired overlay came in meanwhile: the registry thread waited for the whole rebase)."""

    stale: int
    whole: bool


@dataclass(frozen=True, eq=False)
class Rebased:
    """A newer generation with the registry's changes of `base` (the state held when it was
    made) laid over it as `overlay`, of which `stale` no longer apply."""

    new: EnforcementState
    base: EnforcementState
    overlay: Overlay
    stale: int


def _newer(new: EnforcementState, held: EnforcementState) -> None:
    if new.generation <= held.generation:
        raise ValueError(f"generation {new.generation} is not newer than {held.generation}")
