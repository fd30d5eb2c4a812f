"""Snapshots: a state's generation written to files and read back, `gen-NNNNNNNN/` directories
beside a `CURRENT` pointer. The white list is its lookup index's arrays (`KeyIndex`, format 3
on): loaded without parsing. The black lists are roaring bitmaps in their portable format,
the device columns numpy arrays.

Every process maps a generation's columns from its files (read-only) rather than reading
them in: a worker or `serve` adopting the next generation then holds no second copy of the
state in memory (issue 21 part 1), its pages coming from the page cache as decisions read
them and the old generation's going back when it is let go of; the pages of a worker and of
a `serve` on one host are the same pages. A process holds a shared lock on its generation's
`.held` file while any column mapped from it lives, and a save prunes no generation so held:
a file another host removed under a mapping would fail the process's next read of it
(SIGBUS) where a local unlink would not. Under memory pressure the kernel may drop mapped
pages (clean, in the page cache) where it would otherwise kill the process: a decision then
waits for a disk read.

Two importers may race (a worker's reconcile job, an operator's command): a file lock lets
one write at a time, and a generation not newer than CURRENT's is refused, not written.

A process that builds a national generation (an import, a fold) writes its largest columns
straight into the files they are saved as (`SnapshotDraft`), so that it never holds the new
registry whole beside the old one (issue 21 parts 3 and 5)."""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType

import numpy as np
from pyroaring import BitMap64

from enforcer.engine.deviceids import DeviceIds
from enforcer.engine.devices import OWNER_SOURCE_DTYPE, Cartables, Devices, pack_owners
from enforcer.heap import LetGoBehind, give_back, let_go
from enforcer.engine.keyindex import KeyIndex
from enforcer.engine.lists import BLACK_REASONS, WHITE_LOW_COLUMN, Lists
from enforcer.engine.otherslots import OtherSlots
from enforcer.engine.pairset import PairSet
from enforcer.engine.rankbits import RankBits
from enforcer.engine.roaringfmt import serialize_sorted_keys
from enforcer.engine.overlay import LogPosition
from enforcer.engine.state import EnforcementState
from enforcer.engine.tacblocks import BlockedTacs
from enforcer.engine.tacs import StringTable, TacDatabase
from rules.policy import Policy

log = logging.getLogger("eir.snapshots")

CURRENT = "CURRENT"
LOCK = ".lock"
# Bumped whenever the files of a snapshot change meaning; formats not in READABLE_FORMATS
# are refused. Format 1 held each other slot's device in full (`other_device.npy`), and each
# device's owner (48 bits) apart from its source; formats 1 and 2 the white list as a roaring
# bitmap (`white.roaring`), parsed at each load.
SNAPSHOT_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
WHITE_ROARING_FORMATS = (1, 2)
# The white list's index, a file an array (format 3 on).
WHITE_ARRAYS = ("chunk_high", "chunk_start", "low")
DEVICE_COLUMNS = ("owner_source", "registered_on")
REGISTRY = "registry"  # the devices' directory in a generation
DRAFT_LOCK = ".draft"  # in a draft's directory: locked while its process lives
HELD = ".held"  # in a generation's directory: share-locked while a process maps it
HELD_MODE = 0o644  # a `serve` running as another user takes its share too
# CURRENT read again when the generation it named was removed before its hold was taken
# (two saves while a load began); after that the load goes on and fails as it would have.
LOAD_TRIES = 3
# A draft directory without its lock file yet is another process's for this long at most.
DRAFT_STARTING_S = 60.0
LET_GO_BYTES = 64 << 20  # a mapped file read front to back: its pages behind dropped this often
FORMAT_1_DEVICES_AT_ONCE = 1 << 22  # devices' owners packed at a time: ~100 MB of transient
# partition -> [incarnation, next offset] of the registry topic: what a fold laid in.
WATERMARK = "watermark.json"
TACS = "tacs"  # the TAC database's columns; no such directory: none was imported
TAC_COLUMNS = ("tac", "rats", "device_type", "manufacturer", "model")
TAC_TABLES = ("manufacturers", "models")
BLOCKED_TACS = "tac-blocked"  # the blocked TACs' columns; no such directory: none imported
BLOCKED_TAC_COLUMNS = ("tac", "reason")


class SnapshotConflict(RuntimeError):
    """Another process saved this generation, or a later one, first."""


class SnapshotDraft:
    """A generation's files while it is built, in a directory of its own beside the
    generations (unique on a `state.dir` that hosts share): `column` makes a registry column
    (a `ColumnMaker`) mapped from the file `save_snapshot(..., draft)` then keeps as it is.
    Used as a context manager: what was not saved is removed on the way out, whatever
    happened. The draft holds a lock on a file in its directory while it lives, so that a
    save can tell a killed process's draft (removed) from a live one (kept)."""

    def __init__(self, directory: Path, generation: int) -> None:
        self._directory, self._generation = directory, generation
        self._mapped: dict[str, np.ndarray] = {}
        self._lock: int | None = None
        self.scratch = directory  # until entered

    def __enter__(self) -> SnapshotDraft:
        self._directory.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{snapshot_dir_name(self._generation)}.",
                                             suffix=".partial", dir=self._directory))
        self._lock = os.open(self.scratch / DRAFT_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        (self.scratch / REGISTRY).mkdir()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._mapped.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)  # gone already once saved
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def column(self, name: str, count: int, dtype: np.dtype) -> np.ndarray:
        """A writable column of the registry mapped from its file, its disk space taken
        now, or in memory when empty (nothing to map). Raises OSError when the file cannot
        be made or the disk has no room for it (a write to a mapping past the disk's room
        would kill the process with SIGBUS), ValueError for a column made twice."""
        if name in self._mapped:
            raise ValueError(f"the draft's column {name} is made already")
        if not count:
            return np.empty(0, dtype=dtype)
        path = self.scratch / REGISTRY / f"{name}.npy"
        mapped = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(count,))
        with path.open("r+b") as file:
            os.posix_fallocate(file.fileno(), 0, path.stat().st_size)
        self._mapped[name] = mapped
        return mapped

    def spill(self, name: str, count: int, dtype: np.dtype) -> np.ndarray:
        """A writable scratch array (a `ColumnMaker`) mapped from a file of its own in the
        draft's directory, removed at once: the save never sees it, and its disk space is
        the kernel's again when the array is dropped. A fold's derived arrays (a year's
        changes: some 1 GB) are made so, their pages the kernel's to write out and take
        back rather than the process's heap (issue 21 part 4). In memory when empty.
        Raises OSError when the file cannot be made or the disk has no room for it."""
        if not count:
            return np.empty(0, dtype=dtype)
        size = count * np.dtype(dtype).itemsize
        handle, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".spill", dir=self.scratch)
        try:
            os.posix_fallocate(handle, 0, size)
            with os.fdopen(handle, "r+b", closefd=False) as file:
                return np.memmap(file, dtype=dtype, mode="r+", shape=(count,))
        finally:
            os.close(handle)
            os.unlink(path)

    def written(self) -> dict[str, np.ndarray]:
        """The mapped columns, flushed to their files and let go of; by name."""
        for mapped in self._mapped.values():
            mapped.flush()
            let_go(mapped)
        return dict(self._mapped)


def save_snapshot(state: EnforcementState, directory: Path,
                  draft: SnapshotDraft | None = None) -> Path:
    """Write the generation beside the others, then point CURRENT at it (atomic rename); the
    registry columns `draft` mapped, which the state holds, are kept as written. Two
    importers (a worker's job, an operator's command) may race: the file lock lets one
    write at a time, and a generation not newer than CURRENT's is refused, not written
    (SnapshotConflict)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = snapshot_generation(directory)
        if current is not None and current >= state.generation:
            raise SnapshotConflict(f"generation {state.generation} is not newer than "
                                   f"{current}, saved meanwhile in {directory}; run again")
        return _write(state, directory, draft)


def snapshot_dir_name(generation: int) -> str:
    return f"gen-{generation:08d}"


def _write(state: EnforcementState, directory: Path, draft: SnapshotDraft | None) -> Path:
    target = directory / snapshot_dir_name(state.generation)
    if draft is None:
        scratch, written = directory / f".{target.name}.partial", {}
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        scratch, written = draft.scratch, draft.written()
    _save_lists(state.lists, scratch / "lists", written, scratch / REGISTRY)
    _save_devices(state.devices, scratch / REGISTRY, written)
    if state.tacs is not None:
        _save_tacs(state.tacs, scratch / TACS)
    if state.blocked_tacs is not None:
        _save_columns(state.blocked_tacs, BLOCKED_TAC_COLUMNS, scratch / BLOCKED_TACS)
    (scratch / WATERMARK).write_text(json.dumps(
        {str(partition): list(mark) for partition, mark in state.watermark.items()}))
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    (target / DRAFT_LOCK).unlink(missing_ok=True)
    (target / HELD).touch(HELD_MODE)
    pointer = directory / f".{CURRENT}.partial"
    pointer.write_text(json.dumps({"generation": state.generation, "dir": target.name,
                                   "format": SNAPSHOT_FORMAT}))
    os.replace(pointer, directory / CURRENT)
    _prune(directory, state.generation)
    # A process killed while it built a generation leaves its draft (1.2 GB at 150 M
    # devices), and a job's retries could leave one each: those whose lock no process holds
    # go. A live process's draft stays; it finds the conflict at its own save.
    for partial in directory.glob(".gen-*.partial"):
        if _abandoned(partial):
            shutil.rmtree(partial, ignore_errors=True)
    return target


def prune_generations(directory: Path) -> int:
    """Generations older than the one before CURRENT's that no process holds, removed (the
    retention job's, and each save's); how many."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = snapshot_generation(directory)
        return 0 if current is None else _prune(directory, current)


def _prune(directory: Path, current: int) -> int:
    """Under the save lock. The one before `current` stays: a worker may be loading it,
    having read CURRENT just before; one a process maps stays until it lets go of it. A
    generation that cannot be removed (a permission, a lock the file system refuses) is
    said and left for the next run: the save that called it has happened."""
    older = sorted(path for path in directory.glob("gen-*")
                   if path.name < snapshot_dir_name(current))
    removed = 0
    for old in older[:-1]:
        try:
            removed += _remove_unless_held(old)
        except OSError as exc:
            log.warning("snapshot generation not removed", extra={
                "generation": old.name, "error": f"{type(exc).__name__}: {exc}"})
    return removed


def _remove_unless_held(generation: Path) -> bool:
    """The generation's directory removed, unless a process holds its `.held` file (locked
    meanwhile, so that no load takes it half-removed): whether it is gone. A generation this
    process maps is never tried: where the file system's locks are a process's own (Linux's
    NFS client makes flock POSIX locks), its own hold would not stop it, and closing the
    file would drop that hold."""
    if _held_here(generation):
        return False
    try:
        lock = os.open(generation / HELD, os.O_RDWR)
    except FileNotFoundError:  # saved before holds, or half-removed
        shutil.rmtree(generation, ignore_errors=True)
        return not generation.exists()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shutil.rmtree(generation, ignore_errors=True)
    except BlockingIOError:
        return False
    finally:
        os.close(lock)
    return not generation.exists()


# Generations this process maps, by directory: how many holds on each.
_HELD: dict[Path, int] = {}
_HELD_LOCK = threading.Lock()


def _held_here(generation: Path) -> bool:
    with _HELD_LOCK:
        return _HELD.get(generation.resolve(), 0) > 0


class GenerationHold:
    """A shared lock on a generation's `.held` file, kept while the load runs and then while
    any column mapped from the generation lives (each column's finalizer lets go of its
    share), so that no save prunes it from under a mapping. Without a `.held` file (a
    generation saved before holds) one is made beside the generation's files; where none
    can be (a read-only `state.dir`), nothing is held. `removed`: the generation was
    removed before its lock was taken (the load reads CURRENT again)."""

    def __init__(self, generation: Path) -> None:
        self._lock = threading.Lock()
        self._shares = 1  # the load's own, until `settle` or `close`
        self._fd: int | None = None
        self._generation = generation.resolve()
        self.removed = False
        try:
            self._fd = os.open(generation / HELD, os.O_RDONLY)
        except FileNotFoundError:
            if not (generation / "lists" / "lists.json").exists():
                self.removed = True  # or half-removed: nothing to hold
                return
            try:
                self._fd = os.open(generation / HELD, os.O_CREAT | os.O_RDWR, HELD_MODE)
            except OSError:
                return
        except OSError:
            return
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        if os.fstat(self._fd).st_nlink == 0:  # removed while the lock was awaited
            os.close(self._fd)
            self._fd = None
            self.removed = True
            return
        with _HELD_LOCK:
            _HELD[self._generation] = _HELD.get(self._generation, 0) + 1

    def keep_while(self, column: np.ndarray) -> np.ndarray:
        """`column`, with the hold kept while it lives."""
        if self._fd is not None and isinstance(column, np.memmap):
            with self._lock:
                self._shares += 1
            weakref.finalize(column, self._let_go_of_one)
        return column

    def settle(self) -> None:
        """The load is done: the hold stays only while a column mapped by it lives."""
        self._let_go_of_one()

    def close(self) -> None:
        """The load failed: nothing of it is held."""
        with self._lock:
            self._shares = 0
            self._close()

    def _let_go_of_one(self) -> None:
        with self._lock:
            self._shares -= 1
            if self._shares <= 0:
                self._close()

    def _close(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        with _HELD_LOCK:
            left = _HELD.get(self._generation, 0) - 1
            if left > 0:
                _HELD[self._generation] = left
            else:
                _HELD.pop(self._generation, None)


def _abandoned(partial: Path) -> bool:
    """Whether a draft's process is gone: its lock free, or never made (a save killed
    before its rename) and not just being made."""
    try:
        lock = os.open(partial / DRAFT_LOCK, os.O_RDWR)
    except FileNotFoundError:
        try:
            return time.time() - partial.stat().st_mtime > DRAFT_STARTING_S
        except FileNotFoundError:
            return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(lock)
    return True


def snapshot_generation(directory: Path) -> int | None:
    """The generation CURRENT points at, without loading it."""
    pointer = directory / CURRENT
    if not pointer.exists():
        return None
    return int(json.loads(pointer.read_text())["generation"])


def next_generation(directory: Path) -> int:
    return (snapshot_generation(directory) or 0) + 1


def load_snapshot(directory: Path, policy: Policy) -> EnforcementState:
    """The generation CURRENT points at, its registry's columns and white list's index
    mapped from the files, read-only, and held (`GenerationHold`) while any of them lives.
    Raises FileNotFoundError where there is none or its format is not one this version
    reads, ValueError when its white list's files are not one index's."""
    for _ in range(LOAD_TRIES):
        current = _current(directory)
        target = directory / current["dir"]
        hold = GenerationHold(target)
        if not hold.removed:
            break
    try:
        lists = _load_lists(target / "lists", current["format"], hold)
        give_back()  # the lists' transients, freed in pieces, before the registry's are made
        state = EnforcementState(lists, _load_devices(target / REGISTRY, current["format"], hold),
                                 policy, watermark=snapshot_watermark(target),
                                 tacs=_load_tacs(target / TACS),
                                 blocked_tacs=_load_blocked_tacs(target / BLOCKED_TACS))
    except BaseException:
        hold.close()
        raise
    hold.settle()
    return state


def _current(directory: Path) -> dict:
    """CURRENT's pointer. Raises FileNotFoundError as `load_snapshot`."""
    pointer = directory / CURRENT
    if not pointer.exists():
        raise FileNotFoundError(f"no snapshot in {directory} (no {CURRENT} file); build one "
                                "with 'eir-enforcer state build' or 'eir-enforcer state synth'")
    current = json.loads(pointer.read_text())
    if current.get("format") not in READABLE_FORMATS:
        raise FileNotFoundError(f"the snapshot in {directory} has format {current.get('format')}"
                                f", this version reads formats {READABLE_FORMATS}; rebuild it")
    return current


def load_tac_parts(directory: Path) -> tuple[TacDatabase | None, BlockedTacs | None]:
    """The current generation's TAC database and blocked TACs alone, without its lists (for
    a command that names models); (None, None) where there is no snapshot or it holds
    neither."""
    pointer = directory / CURRENT
    if not pointer.exists():
        return None, None
    target = directory / json.loads(pointer.read_text())["dir"]
    return _load_tacs(target / TACS), _load_blocked_tacs(target / BLOCKED_TACS)


def oldest_watermark(directory: Path) -> dict[int, LogPosition] | None:
    """The watermark of the oldest generation a start may load: the one before CURRENT's
    (a worker may be loading it, having read CURRENT just before a save), or CURRENT's. The
    stored registry events below it are read by nobody again: older generations still on
    disk are mapped by running processes, which read no stored event. None when that
    generation has none (built from files only) or there is none."""
    current = snapshot_generation(directory)
    if current is None:
        return None
    generations = sorted(path for path in directory.glob("gen-*")
                         if path.name <= snapshot_dir_name(current))
    return (snapshot_watermark(generations[-2:][0]) or None) if generations else None


def snapshot_watermark(target: Path) -> dict[int, LogPosition]:
    """The registry topic's positions whose events a generation's columns hold (a fold's);
    none for one built from files only."""
    path = target / WATERMARK
    if not path.exists():
        return {}
    return {int(partition): (int(mark[0]), int(mark[1]))
            for partition, mark in json.loads(path.read_text()).items()}


def _save_lists(lists: Lists, directory: Path, written: dict[str, np.ndarray],
                drafted: Path) -> None:
    """The lists' files; the white list's low bits, if `written` holds them (a draft's
    column, mapped from its file in `drafted`), moved into place rather than copied."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in WHITE_ARRAYS:
        path = directory / f"white-{name}.npy"
        array = getattr(lists.white_index, name)
        if name == "low" and written.get(WHITE_LOW_COLUMN) is array:
            os.replace(drafted / f"{WHITE_LOW_COLUMN}.npy", path)
        else:
            np.save(path, array)
    for reason, keys in lists.black_keys().items():
        (directory / f"black-{reason.value}.roaring").write_bytes(serialize_sorted_keys(keys))
    (directory / "cut-imeis.roaring").write_bytes(lists.cut_imeis.serialize())
    _save_pairs(lists.cut_pairs, "cut-pairs", directory)
    (directory / "lists.json").write_text(json.dumps({"generation": lists.generation}))


def _load_lists(directory: Path, snapshot_format: int, hold: GenerationHold) -> Lists:
    meta = json.loads((directory / "lists.json").read_text())

    def bitmap(name: str) -> BitMap64:
        path = directory / name
        return BitMap64.deserialize(path.read_bytes()) if path.exists() else BitMap64()

    def black_keys(name: str) -> np.ndarray:
        # Parsed to keys, not deserialized: black-listed IMEIs are scattered, a roaring
        # container each, and their bitmaps (some 70 bytes a key, 0.2 GB for 3 M) were a
        # transient of every load at 10 % of a national state (issue 21 part 4).
        path = directory / name
        return (KeyIndex.from_portable(path.read_bytes()).keys() if path.exists()
                else np.zeros(0, np.uint64))

    return Lists.from_black_keys(
        meta["generation"],
        (load_white_index(directory / "white.roaring")
         if snapshot_format in WHITE_ROARING_FORMATS else
         KeyIndex.from_arrays(*(hold.keep_while(np.load(directory / f"white-{name}.npy",
                                                        mmap_mode="r"))
                                for name in WHITE_ARRAYS))),
        {r: black_keys(f"black-{r.value}.roaring") for r in BLACK_REASONS},
        bitmap("cut-imeis.roaring"),
        _load_pairs("cut-pairs", directory, hold),
    )


def load_white_index(path: Path) -> KeyIndex:
    """The white list's index from a roaring file (formats 1 and 2), mapped and let go of a
    stretch at a time as it is read: read whole, the file was a transient as large as the
    index it makes (0.6 GB at 300 M IMEIs, in every load and adoption; issue 21 part 4)."""
    with path.open("rb") as f:
        if not os.fstat(f.fileno()).st_size:
            return KeyIndex.from_portable(b"")  # fails as read whole; mmap cannot map it
        # Not closed here but when unreferenced: a parse that fails may leave views of it in
        # its traceback, and closing a mapping with views raises BufferError over its error.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return KeyIndex.from_portable(mapped, LetGoBehind(mapped, LET_GO_BYTES).read_to)


def _save_devices(devices: Devices, directory: Path,
                  written: dict[str, np.ndarray]) -> None:
    """The registry's files; a column in `written` (mapped from its file already) is kept
    as it is, unless the devices hold another array under its name."""
    directory.mkdir(parents=True, exist_ok=True)
    _save_rank_bits(devices.first_slot, "first-slot", directory)
    _save_rank_bits(devices.other_slot, "other-slot", directory)
    np.save(directory / "other-code.npy", devices.others.code)
    _save_rank_bits(devices.others.far, "other-far", directory)
    np.save(directory / "other-far-device.npy", devices.others.far_device)
    for name in DEVICE_COLUMNS:
        column, path = getattr(devices, name), directory / f"{name}.npy"
        if written.get(name) is column:
            continue
        # Unlinked, not truncated: a mapping of it stays readable.
        path.unlink(missing_ok=True)
        np.save(path, column)
    np.save(directory / "cartable-msisdn.npy", devices.cartables.msisdn)
    np.save(directory / "cartable-id.npy", devices.cartables.cartable)
    _save_pairs(devices.operator_sims, "operator-sims", directory)
    np.save(directory / "device-id-name.npy", devices.ids.names)
    np.save(directory / "device-id-device.npy", devices.ids.device)


def _load_devices(directory: Path, snapshot_format: int, hold: GenerationHold) -> Devices:
    def column(name: str) -> np.ndarray:
        return hold.keep_while(np.load(directory / f"{name}.npy", mmap_mode="r"))

    first_slot = _load_rank_bits("first-slot", directory, hold)
    other_slot = _load_rank_bits("other-slot", directory, hold)
    if snapshot_format == 1:  # coded as it is read, from the files a step at a time
        others = OtherSlots.of_rows(column("other_device"), first_slot, other_slot)
        owner_source = _owner_source_of_format_1(column("owner"), column("source"))
    else:
        others = OtherSlots(column("other-code"), _load_rank_bits("other-far", directory, hold),
                            column("other-far-device"))
        owner_source = column("owner_source")
    return Devices(first_slot, other_slot, others, owner_source, column("registered_on"),
                   Cartables(column("cartable-msisdn"), column("cartable-id")),
                   _load_pairs("operator-sims", directory, hold), _load_ids(directory))


def _owner_source_of_format_1(owner: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Format 1's owners (48 bits: low 32, high 16) and sources packed together, a slice of
    devices at a time."""
    packed = np.empty(len(owner), dtype=OWNER_SOURCE_DTYPE)
    for start in range(0, len(owner), FORMAT_1_DEVICES_AT_ONCE):
        part = slice(start, start + FORMAT_1_DEVICES_AT_ONCE)
        packed[part] = pack_owners(owner["low"][part].astype(np.uint64)
                                   | owner["high"][part].astype(np.uint64) << np.uint64(32),
                                   source[part])
    return packed


def _load_ids(directory: Path) -> DeviceIds:
    names = directory / "device-id-name.npy"
    if not names.exists():  # written before folds existed: no ids
        return DeviceIds.empty()
    return DeviceIds(np.load(names), np.load(directory / "device-id-device.npy"))


def _save_columns(table: object, columns: tuple[str, ...], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in columns:
        np.save(directory / f"{name}.npy", getattr(table, name))


def _save_tacs(tacs: TacDatabase, directory: Path) -> None:
    _save_columns(tacs, TAC_COLUMNS, directory)
    for name in TAC_TABLES:
        table = getattr(tacs, name)
        np.save(directory / f"{name}-blob.npy", table.blob)
        np.save(directory / f"{name}-offsets.npy", table.offsets)


def _load_tacs(directory: Path) -> TacDatabase | None:
    if not directory.is_dir():
        return None

    def array(name: str) -> np.ndarray:
        return np.load(directory / f"{name}.npy")

    return TacDatabase(*(array(name) for name in TAC_COLUMNS),
                       *(StringTable(array(f"{name}-blob"), array(f"{name}-offsets"))
                         for name in TAC_TABLES))


def _load_blocked_tacs(directory: Path) -> BlockedTacs | None:
    if not directory.is_dir():
        return None
    return BlockedTacs(*(np.load(directory / f"{name}.npy") for name in BLOCKED_TAC_COLUMNS))


def _save_pairs(pairs: PairSet, stem: str, directory: Path) -> None:
    imeis, numbers = pairs.pairs()
    np.save(directory / f"{stem}-imei.npy", imeis)
    np.save(directory / f"{stem}-number.npy", numbers)


def _load_pairs(stem: str, directory: Path, hold: GenerationHold) -> PairSet:
    """Mapped, as the registry's columns: a snapshot's pairs come sorted, and their numbers
    are kept as the file holds them (read in, 3 M operator SIMs' were some 50 MB of
    transient beside the index made of them)."""
    return PairSet.from_pairs(
        *(hold.keep_while(np.load(directory / f"{stem}-{name}.npy", mmap_mode="r"))
          for name in ("imei", "number")))


def _save_rank_bits(bits: RankBits, stem: str, directory: Path) -> None:
    np.save(directory / f"{stem}-words.npy", bits.words)
    np.save(directory / f"{stem}-before.npy", bits.before)
    (directory / f"{stem}-rows.txt").write_text(str(bits.rows))


def _load_rank_bits(stem: str, directory: Path, hold: GenerationHold) -> RankBits:
    return RankBits(hold.keep_while(np.load(directory / f"{stem}-words.npy", mmap_mode="r")),
                    hold.keep_while(np.load(directory / f"{stem}-before.npy", mmap_mode="r")),
                    int((directory / f"{stem}-rows.txt").read_text()))
