"""Freed memory given back to the kernel after a large step (a generation loaded, adopted or
rebased to).

glibc keeps memory freed below its mmap threshold in the process's heap, resident, for
reuse; the threshold rises with each large block freed, up to 32 MB (mallopt(3),
M_MMAP_THRESHOLD). Loading a national generation frees hundreds of MB of such pieces, the
transients of work done a step at a time, and they would stay in the resident figure an
operator sizes the host by (0.23 GiB of a 2.6 GiB load at 300 M IMEIs). malloc_trim(3)
returns the heap's free pages; where the C library has none (musl), nothing is done.
"""

from __future__ import annotations

import ctypes

_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)
if _TRIM is not None:
    _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int


def give_back() -> None:
    """Return the heap's free pages to the kernel: a walk of the heap, some milliseconds a
    GB, so once a large step, never per batch."""
    if _TRIM is not None:
        _TRIM(0)
