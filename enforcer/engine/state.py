"""The state a decision reads: one generation of lists, the registry aligned to it, and the
policy. A new generation is built aside and swapped in with one reference assignment, so a
batch that took `holder.current` sees the old state or the new one, never a mix."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from enforcer.engine.clones import NOT_MISUSED, Misused
from enforcer.engine.cutoffs import NO_CUTOFFS, CutOffs
from enforcer.engine.lists import Lists
from enforcer.engine.overlay import Overlay, empty_overlay
from enforcer.engine.devices import Registry
from rules.policy import Policy

CURRENT = "CURRENT"
LOCK = ".lock"
# Bumped whenever the files of a snapshot change meaning; older snapshots are refused.
SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, eq=False)
class EnforcementState:
    lists: Lists
    registry: Registry
    policy: Policy
    overlay: Overlay = field(default=None)  # type: ignore[assignment]  # empty if not given
    cutoffs: CutOffs = NO_CUTOFFS  # this operator's own, from the notices table
    misused: Misused = NOT_MISUSED  # flagged by clone detection, from clone_flags

    def __post_init__(self) -> None:
        if self.registry.rows != len(self.lists.white_index):
            raise ValueError("the registry is not aligned to this generation's white list")
        if self.overlay is None:
            object.__setattr__(self, "overlay", empty_overlay(self.registry))

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
            overlay, stale = self._state.overlay.rebase(new.lists, new.registry)
            self._state = replace(new, overlay=overlay, cutoffs=self._state.cutoffs,
                                  misused=self._state.misused)
            return stale


class SnapshotConflict(RuntimeError):
    """Another process saved this generation, or a later one, first."""


def save_snapshot(state: EnforcementState, directory: Path) -> Path:
    """Write the generation beside the others, then point CURRENT at it (atomic rename).
    Two importers (a worker's job, an operator's command) may race: the file lock lets one
    write at a time, and a generation not newer than CURRENT's is refused, not written."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = snapshot_generation(directory)
        if current is not None and current >= state.generation:
            raise SnapshotConflict(f"generation {state.generation} is not newer than "
                                   f"{current}, saved meanwhile in {directory}; run again")
        return _write(state, directory, current)


def snapshot_dir_name(generation: int) -> str:
    return f"gen-{generation:08d}"


def _write(state: EnforcementState, directory: Path, previous: int | None) -> Path:
    target = directory / snapshot_dir_name(state.generation)
    scratch = directory / f".gen-{state.generation:08d}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    state.lists.save(scratch / "lists")
    state.registry.save(scratch / "registry")
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    pointer = directory / f".{CURRENT}.partial"
    pointer.write_text(json.dumps({"generation": state.generation, "dir": target.name,
                                   "format": SNAPSHOT_FORMAT}))
    os.replace(pointer, directory / CURRENT)
    # The one before stays: a worker may be loading it, having read CURRENT just before.
    keep = {target, directory / snapshot_dir_name(previous)} if previous else {target}
    for old in directory.glob("gen-*"):
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return target


def snapshot_generation(directory: Path) -> int | None:
    """The generation CURRENT points at, without loading it."""
    pointer = directory / CURRENT
    if not pointer.exists():
        return None
    return int(json.loads(pointer.read_text())["generation"])


def next_generation(directory: Path) -> int:
    return (snapshot_generation(directory) or 0) + 1


def load_snapshot(directory: Path, policy: Policy) -> EnforcementState:
    pointer = directory / CURRENT
    if not pointer.exists():
        raise FileNotFoundError(f"no snapshot in {directory} (no {CURRENT} file); build one "
                                "with 'eir-enforcer state build' or 'eir-enforcer state synth'")
    current = json.loads(pointer.read_text())
    if current.get("format") != SNAPSHOT_FORMAT:
        raise FileNotFoundError(f"the snapshot in {directory} has format {current.get('format')}"
                                f", this version reads format {SNAPSHOT_FORMAT}; rebuild it")
    target = directory / current["dir"]
    return EnforcementState(Lists.load(target / "lists"), Registry.load(target / "registry"),
                            policy)
