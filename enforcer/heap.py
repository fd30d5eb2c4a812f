"""Memory given back to the kernel: the heap's freed pages after a large step (a generation
loaded, adopted or rebased to), and the pages of arrays mapped from files once read.

glibc keeps memory freed below its mmap threshold in the process's heap, resident, for
reuse; the threshold rises with each large block freed, up to 32 MB (mallopt(3),
M_MMAP_THRESHOLD). Loading a national generation frees hundreds of MB of such pieces, the
transients of work done a step at a time, and they would stay in the resident figure an
operator sizes the host by (0.23 GiB of a 2.6 GiB load at 300 M IMEIs). malloc_trim(3)
returns the heap's free pages; where the C library has none (musl), nothing is done.

Every process maps a generation's columns from the snapshot's files instead of reading them
in; the pages it has read count in its resident memory until it lets them go (`let_go`):
they stay in the page cache, and a later read maps them again. One that reads a generation
once, front to back (an import's or a fold's realign, a clone window's rebase off the old
generation), lets go behind it.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)
if _TRIM is not None:
    _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int


def give_back() -> None:
    """Return the heap's free pages to the kernel: a walk of the heap, some milliseconds a
    GB, so once a large step, never per batch."""
    if _TRIM is not None:
        _TRIM(0)


def let_go(*arrays: np.ndarray) -> None:
    """The pages of arrays mapped from files (np.load's mmap_mode, or views of them) dropped
    from this process's resident memory; arrays in memory are left as they are. A walk of
    the mapping's page table, some microseconds a MB mapped."""
    for array in arrays:
        mapping = _mapping(array)
        if mapping is not None:
            mapping.madvise(mmap.MADV_DONTNEED)


def _mapping(array: object) -> mmap.mmap | None:
    while array is not None:
        if isinstance(array, mmap.mmap):
            return array
        mapped = getattr(array, "_mmap", None)  # np.memmap's own
        if mapped is not None:
            return mapped
        array = getattr(array, "base", None)
    return None


class LetGoBehind:
    """A file mapped and read front to back once (a snapshot's white list parsed): the pages
    behind the reader dropped from this process's resident memory every `every` bytes
    read, so that the file is never resident whole beside what is made of it."""

    def __init__(self, mapped: mmap.mmap, every: int) -> None:
        self.mapped, self.every, self.done = mapped, every, 0

    def read_to(self, offset: int) -> None:
        """Nothing below `offset` is read again."""
        end = offset - offset % mmap.PAGESIZE
        if end - self.done >= self.every:
            self.mapped.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
            self.done = end
