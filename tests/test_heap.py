"""Freed memory given back to the kernel (enforcer/heap.py)."""

from __future__ import annotations

from enforcer.heap import give_back

BLOCK = 64 * 1024  # under glibc's smallest mmap threshold: always from the heap
BLOCKS = 3_000  # some 190 MB


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def test_the_heap_s_free_pages_leave_the_resident_set() -> None:
    """Blocks freed between blocks still held are holes no free() can hand back: the
    resident set keeps them until the heap is given back."""
    blocks, kept = [], []
    for _ in range(BLOCKS):
        blocks.append(bytearray(b"\x01" * BLOCK))  # written: resident
        kept.append(bytearray(1024))  # over pymalloc's 512 bytes: from the heap too
    del blocks
    before = resident_kib()
    give_back()
    assert before - resident_kib() > BLOCK * BLOCKS // 1024 // 2
