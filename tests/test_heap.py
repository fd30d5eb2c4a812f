"""Freed memory given back to the kernel (enforcer/heap.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consumers.attach import AttachWorker
from enforcer.clock import ManualClock
from enforcer.config import load_config
from enforcer.engine.digits import ZERO, luhn_digits
from enforcer.engine.imei import imei_rules
from enforcer.engine.keyindex import KeyIndex
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import StateHolder
from enforcer.files.listfile import ListFileReader
from enforcer.files.snapshots import load_white_index
from enforcer.heap import give_back, let_go
from metrics.worker import WorkerMetrics
from tests.test_decide import make_state

BLOCK = 64 * 1024  # under glibc's smallest mmap threshold: always from the heap
BLOCKS = 3_000  # some 190 MB
COLUMN_WORDS = 8 << 20  # a mapped column of 64 MB
WORDS_A_PAGE = 512  # of 4 KB
# A white list of 20 M keys, 40 MB as a file: array containers (a key every 20), 400 buckets.
WHITE_BUCKETS, KEYS_A_BUCKET, KEY_SPACING = 400, 50_000, 20
# A delivery of 8 M IMEIs, 128 MB as a file: a key every 20 in 160 stretches of 2^20.
DELIVERY_BUCKETS = 160


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def test_the_heap_s_free_pages_leave_the_resident_set() -> None:
    """Every other block freed: each a hole between blocks still held, which no free() can
    hand back (nor merge into the heap's top, whatever earlier tests left in the heap). The
    resident set keeps them until the heap is given back."""
    blocks = [bytearray(b"\x01" * BLOCK) for _ in range(2 * BLOCKS)]  # written: resident
    del blocks[::2]
    before = resident_kib()
    give_back()
    assert before - resident_kib() > BLOCK * BLOCKS // 1024 // 2


def test_a_mapped_column_s_pages_leave_the_resident_set_once_let_go(tmp_path: Path) -> None:
    """Read through a view, as a realign reads a chunk: the view finds its file's mapping.
    The column reads the same afterwards (from the page cache); arrays in memory are left
    as they are."""
    path = tmp_path / "column.npy"
    np.save(path, np.arange(COLUMN_WORDS, dtype=np.uint64))
    column = np.load(path, mmap_mode="r")
    before = resident_kib()
    want = int(column[::WORDS_A_PAGE].sum())  # a word a page: every page mapped in
    read = resident_kib()
    assert read - before > COLUMN_WORDS * 8 // 1024 // 2
    in_memory = np.ones(3)
    let_go(column[WORDS_A_PAGE:], in_memory)
    assert read - resident_kib() > COLUMN_WORDS * 8 // 1024 // 2
    assert int(column[::WORDS_A_PAGE].sum()) == want and in_memory.tolist() == [1.0] * 3


def peak_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def test_a_white_list_loads_without_its_file_resident_whole(tmp_path: Path,
                                                            monkeypatch) -> None:
    """A snapshot's white list is read from its file mapped, let go of behind the reader:
    the load's peak is the index it makes and a stretch of the file, where reading the file
    whole made a transient as large as the index. Keys spread over many 32-bit buckets, as
    IMEIs are (the reader lets go after each)."""
    monkeypatch.setattr("enforcer.files.snapshots.LET_GO_BYTES", 1 << 20)
    keys = ((np.arange(WHITE_BUCKETS, dtype=np.uint64)[:, None] << np.uint64(32))
            | np.arange(0, KEYS_A_BUCKET * KEY_SPACING, KEY_SPACING,
                        dtype=np.uint64)[None, :]).ravel()
    path = tmp_path / "white.roaring"
    with path.open("wb") as f:
        f.writelines(KeyIndex.from_sorted_keys(keys).portable_parts())
    first, last = int(keys[0]), int(keys[-1])
    del keys
    give_back()
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now (proc(5))
    before = peak_kib()
    index = load_white_index(path)
    grew = peak_kib() - before
    assert (len(index), int(index.keys_between(0, 1)[0]),
            int(index.keys_between(len(index) - 1, len(index))[0])) == (
        WHITE_BUCKETS * KEYS_A_BUCKET, first, last)
    assert grew < index.nbytes // 1024 + path.stat().st_size // 1024 // 2


def test_a_national_bitmap_is_indexed_without_its_serialization() -> None:
    """A white list's bitmap (a delivery's) is indexed a step at a time: the peak grows by
    the index and a step, where serializing the bitmap whole first made a transient as large
    as the index."""
    keys = ((np.arange(WHITE_BUCKETS, dtype=np.uint64)[:, None] << np.uint64(32))
            | np.arange(0, KEYS_A_BUCKET * KEY_SPACING, KEY_SPACING,
                        dtype=np.uint64)[None, :]).ravel()
    bitmap = bitmap_from_sorted_keys(keys)
    serialized_kib = len(bitmap.serialize()) // 1024
    first, last = int(keys[0]), int(keys[-1])
    del keys
    give_back()
    Path("/proc/self/clear_refs").write_text("5")
    before = peak_kib()
    index = KeyIndex.from_bitmap(bitmap, whole=0, step=1 << 16)
    grew = peak_kib() - before
    assert (len(index), int(index.keys_between(0, 1)[0]),
            int(index.keys_between(len(index) - 1, len(index))[0])) == (len(bitmap), first, last)
    assert grew < index.nbytes // 1024 + serialized_kib // 2


def test_a_delivery_is_indexed_with_no_set_of_it_beside_the_index(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A white list's file is read twice, its keys counted by chunk, then placed in the
    index's rows and sorted a step at a time: the peak grows by the index, a block and a
    step, where a bitmap of the file was about as large as the index again before it became
    one (issue 21 part 4)."""
    monkeypatch.setattr("enforcer.engine.keysort.SORT_ROWS", 1 << 16)
    keys = ((np.arange(DELIVERY_BUCKETS, dtype=np.uint64)[:, None] << np.uint64(20))
            | np.arange(0, KEYS_A_BUCKET * KEY_SPACING, KEY_SPACING,
                        dtype=np.uint64)[None, :]).ravel() + np.uint64(35209900000000)
    path = tmp_path / "white.csv"
    with path.open("wb") as f:
        for start in range(0, len(keys), 1 << 20):
            imei_lines(keys[start:start + (1 << 20)]).tofile(f)
    del keys
    give_back()
    Path("/proc/self/clear_refs").write_text("5")
    before = peak_kib()
    index, report = ListFileReader(imei_rules(load_config()), 1 << 12, 5).read_white(path)
    grew = peak_kib() - before
    assert (len(index), report.bad) == (DELIVERY_BUCKETS * KEYS_A_BUCKET, 0)
    assert grew < index.nbytes // 1024 * 3 // 2


def imei_lines(keys: np.ndarray) -> np.ndarray:
    """The lines of a file of 15-digit IMEIs, those of 14-digit keys with their check digits
    (3GPP TS 23.003 Annex B) added: a row of bytes a line."""
    lines = np.full((len(keys), 16), ord("\n"), dtype=np.uint8)
    lines[:, :14] = (keys[:, None] // (10 ** np.arange(13, -1, -1, dtype=np.uint64))) % 10 \
        + np.uint64(ZERO)
    lines[:, 14] = luhn_digits(lines[:, :14]) + ZERO
    return lines


class Unread:
    """A consumer that has read nothing: no lag to report."""

    def lag(self) -> dict:
        return {}


def attach_worker(policy) -> AttachWorker:
    config = load_config(environ={})
    return AttachWorker(config, StateHolder(make_state(policy)), imei_rules(config),
                        ManualClock(0), WorkerMetrics(), Unread(), None, lambda: None)


def test_the_attach_loop_gives_the_heap_back_once_a_while(policy, monkeypatch) -> None:
    """Between polls, at most once every HEAP_EVERY_S: the walk of a heap costs some 10 ms
    at national scale (measured), too much for every poll of a busy worker."""
    calls = []
    monkeypatch.setattr("consumers.attach.give_back", lambda: calls.append(1))
    worker = attach_worker(policy)
    for _ in range(3):
        worker._turned()
    assert calls == []
    monkeypatch.setattr("consumers.attach.HEAP_EVERY_S", 0.0)
    for _ in range(3):
        worker._turned()
    assert len(calls) == 3
