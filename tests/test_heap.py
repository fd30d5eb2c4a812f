"""Freed memory given back to the kernel (enforcer/heap.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consumers.attach import AttachWorker
from enforcer.clock import ManualClock
from enforcer.config import load_config
from enforcer.engine.imei import imei_rules
from enforcer.engine.state import StateHolder
from enforcer.heap import give_back, let_go
from metrics.worker import WorkerMetrics
from tests.test_decide import make_state

BLOCK = 64 * 1024  # under glibc's smallest mmap threshold: always from the heap
BLOCKS = 3_000  # some 190 MB
COLUMN_WORDS = 8 << 20  # a mapped column of 64 MB
WORDS_A_PAGE = 512  # of 4 KB


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
