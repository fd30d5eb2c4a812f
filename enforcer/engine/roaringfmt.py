"""Bulk conversion between sorted numpy keys and pyroaring's 64-bit portable format.

Building a BitMap64 from a numpy array goes through CRoaring one key at a time (measured
0.4-0.8 µs per key, minutes for a national list), while `BitMap64.deserialize` takes about
1 ns per key. So bulk builds write the documented portable format here
(https://github.com/RoaringBitmap/RoaringFormatSpec: a uint64 bucket count, then per
bucket its high 32 bits and a 32-bit roaring bitmap) and let pyroaring deserialize it.
Reading goes the other way, straight into the arrays of a KeyIndex, so that a 300 M-key
list never exists as a 2.4 GB array of uint64.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap64

COOKIE_NO_RUNS = 12346
COOKIE_RUNS = 12347
NO_OFFSET_THRESHOLD = 4
ARRAY_MAX = 4096
BITSET_BYTES = 8192
CONTAINER_BITS = 16
BUCKET_BITS = 32
LOW16 = 0xFFFF
LOW32 = 0xFFFFFFFF
COOKIE_HEADER_BYTES = 8  # cookie and container count, in the format without runs
DESCRIPTION_BYTES = 4  # per container: uint16 key and uint16 cardinality - 1
OFFSET_BYTES = 4  # per container: uint32 offset
RUN_BYTES = 4  # per run: uint16 start and uint16 length - 1
Buffer = bytes | mmap.mmap  # a file's bytes read, or the file mapped


def bitmap_from_sorted_keys(keys: np.ndarray) -> BitMap64:
    """A BitMap64 of strictly increasing uint64 keys."""
    return BitMap64.deserialize(serialize_sorted_keys(keys))


def serialize_sorted_keys(keys: np.ndarray) -> bytes:
    keys = np.asarray(keys, dtype=np.uint64)
    high = (keys >> np.uint64(BUCKET_BITS)).astype(np.uint32)
    bucket_starts = run_starts(high)
    bounds = np.append(bucket_starts, len(keys))
    parts = [struct.pack("<Q", len(bucket_starts))]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        parts.append(struct.pack("<I", int(high[lo])))
        parts.append(_serialize32((keys[lo:hi] & np.uint64(LOW32)).astype(np.uint32)))
    return b"".join(parts)


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins, in a sorted array."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def serialize_chunks(chunk_high: np.ndarray, chunk_start: np.ndarray, low: np.ndarray
                     ) -> Iterator[bytes]:
    """The portable BitMap64 of a set held as a KeyIndex's arrays (each chunk's high 48
    bits, its first row, and the keys' low 16 bits), in parts to be written one after the
    other: a 32-bit bucket at a time from the low bits as they are, without the set's keys
    (8 bytes each) in between."""
    bucket = (chunk_high >> np.uint64(BUCKET_BITS - CONTAINER_BITS)).astype(np.uint32)
    bucket_starts = run_starts(bucket)
    bounds = np.append(bucket_starts, len(chunk_high))
    yield struct.pack("<Q", len(bucket_starts))
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        rows = chunk_start[first:last + 1]
        yield struct.pack("<I", int(bucket[first]))
        yield _serialize_containers(
            (chunk_high[first:last] & np.uint64(LOW16)).astype(np.uint16),
            rows[:-1] - rows[0], np.diff(rows), low[rows[0]:rows[-1]])


def _serialize32(values: np.ndarray) -> bytes:
    container = (values >> np.uint32(CONTAINER_BITS)).astype(np.uint16)
    starts = run_starts(container)
    cards = np.diff(np.append(starts, len(values)))
    return _serialize_containers(container[starts], starts, cards,
                                 (values & np.uint32(LOW16)).astype("<u2"))


def _serialize_containers(keys16: np.ndarray, starts: np.ndarray, cards: np.ndarray,
                          low: np.ndarray) -> bytes:
    """A 32-bit roaring bitmap: containers keyed `keys16`, the i-th of `cards[i]` values
    low[starts[i]:...] (uint16, ascending)."""
    n = len(starts)
    header = np.empty(2 * n, dtype="<u2")
    header[0::2] = keys16
    header[1::2] = cards - 1
    sizes = np.where(cards > ARRAY_MAX, BITSET_BYTES, 2 * cards)
    first = COOKIE_HEADER_BYTES + (DESCRIPTION_BYTES + OFFSET_BYTES) * n
    offsets = (first + np.concatenate(([0], np.cumsum(sizes)[:-1]))).astype("<u4")
    body = []
    for i in np.flatnonzero(cards > ARRAY_MAX):
        bits = np.zeros(1 << CONTAINER_BITS, dtype=np.uint8)
        bits[low[starts[i]:starts[i] + cards[i]]] = 1
        body.append((int(i), np.packbits(bits, bitorder="little").tobytes()))
    data = _interleave(low, starts, cards, body)
    return struct.pack("<II", COOKIE_NO_RUNS, n) + header.tobytes() + offsets.tobytes() + data


def _interleave(low: np.ndarray, starts: np.ndarray, cards: np.ndarray,
                bitsets: list[tuple[int, bytes]]) -> bytes:
    if not bitsets:
        return low.tobytes()
    out, pos = [], 0
    for i, packed in bitsets:
        out.append(low[starts[pos]:starts[i]].tobytes() if i > pos else b"")
        out.append(packed)
        pos = i + 1
    out.append(low[starts[pos]:].tobytes() if pos < len(starts) else b"")
    return b"".join(out)


@dataclass(frozen=True)
class _Bucket:
    """The header of one 32-bit bitmap inside a portable BitMap64."""

    high: int
    keys16: np.ndarray
    card: np.ndarray  # int64
    is_run: np.ndarray
    offsets: np.ndarray | None  # absolute; None for a small run-format bitmap
    data: int  # where the containers start


def index_arrays(buf: Buffer, read_to: Callable[[int], None] = lambda offset: None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunk_high, chunk_start, low) of a KeyIndex, read from a portable BitMap64 (bytes,
    or a file mapped); `read_to` is told, after each 32-bit bucket, the offset below which
    `buf` is not read again (a mapped file's pages can go). The arrays are copies: none
    refers to `buf`.

    Headers first, then the containers straight into one preallocated array: building
    pieces and concatenating them leaves the heap fragmented by hundreds of MB at scale."""
    (n_buckets,) = struct.unpack_from("<Q", buf, 0)
    pos = 8
    buckets, ends = [], []
    for _ in range(n_buckets):
        (high,) = struct.unpack_from("<I", buf, pos)
        bucket = _read_header(buf, pos + 4, high)
        buckets.append(bucket)
        pos = _containers_end(buf, bucket)
        ends.append(pos)
    if not buckets:
        return np.zeros(0, np.uint64), np.zeros(1, np.int64), np.zeros(0, np.uint16)
    card = np.concatenate([b.card for b in buckets])
    chunk_start = np.concatenate(([0], np.cumsum(card))).astype(np.int64)
    chunk_high = np.concatenate([
        (np.uint64(b.high) << np.uint64(CONTAINER_BITS)) | b.keys16.astype(np.uint64)
        for b in buckets])
    low = np.empty(int(chunk_start[-1]), dtype=np.uint16)
    at = 0
    for bucket, end in zip(buckets, ends):
        at = _fill_containers(buf, bucket, low, at)
        read_to(end)
    return chunk_high, chunk_start, low


def _read_header(buf: Buffer, pos: int, high: int) -> _Bucket:
    start = pos
    (cookie,) = struct.unpack_from("<I", buf, pos)
    if cookie == COOKIE_NO_RUNS:
        (n,) = struct.unpack_from("<I", buf, pos + 4)
        pos += COOKIE_HEADER_BYTES
        is_run = np.zeros(n, dtype=bool)
    elif cookie & LOW16 == COOKIE_RUNS:
        n = (cookie >> 16) + 1
        pos += 4
        flag_bytes = (n + 7) // 8
        flags = np.frombuffer(buf, np.uint8, flag_bytes, pos)
        is_run = np.unpackbits(flags, bitorder="little")[:n].astype(bool)
        pos += flag_bytes
    else:
        raise ValueError(f"not a portable roaring bitmap (cookie {cookie})")
    header = np.frombuffer(buf, "<u2", 2 * n, pos)
    keys16, card = header[0::2].copy(), header[1::2].astype(np.int64) + 1
    pos += DESCRIPTION_BYTES * n
    offsets = None
    if cookie == COOKIE_NO_RUNS or n >= NO_OFFSET_THRESHOLD:
        offsets = start + np.frombuffer(buf, "<u4", n, pos).astype(np.int64)
        pos += OFFSET_BYTES * n
    return _Bucket(high, keys16, card, is_run, offsets, pos)


def _container_spans(buf: Buffer, bucket: _Bucket) -> tuple[np.ndarray, np.ndarray]:
    """Offset and size in bytes of each container of the bucket."""
    card = bucket.card
    size = np.where(card <= ARRAY_MAX, 2 * card, BITSET_BYTES)
    if bucket.offsets is not None:
        for i in np.flatnonzero(bucket.is_run):
            size[i] = _run_container_bytes(buf, int(bucket.offsets[i]))
        return bucket.offsets, size
    offsets = np.empty(len(card), dtype=np.int64)  # a small run-format bitmap: walk it
    pos = bucket.data
    for i in range(len(card)):
        offsets[i] = pos
        if bucket.is_run[i]:
            size[i] = _run_container_bytes(buf, pos)
        pos += int(size[i])
    return offsets, size


def _run_container_bytes(buf: Buffer, offset: int) -> int:
    (n_runs,) = struct.unpack_from("<H", buf, offset)
    return 2 + RUN_BYTES * n_runs


def _containers_end(buf: Buffer, bucket: _Bucket) -> int:
    if not len(bucket.card):
        return bucket.data
    offsets, size = _container_spans(buf, bucket)
    return int(offsets[-1] + size[-1])


def _fill_containers(buf: Buffer, bucket: _Bucket, low: np.ndarray, at: int) -> int:
    card = bucket.card
    offsets, _ = _container_spans(buf, bucket)
    starts = at + np.concatenate(([0], np.cumsum(card)))
    special = np.flatnonzero(bucket.is_run | (card > ARRAY_MAX)).tolist()
    # Array containers between two special ones lie back to back: one copy for each stretch.
    begin = 0
    for end in special + [len(card)]:
        if end > begin:
            total = int(starts[end] - starts[begin])
            low[starts[begin]:starts[end]] = np.frombuffer(buf, "<u2", total, int(offsets[begin]))
        if end < len(card):
            _fill_special(buf, bucket, end, int(offsets[end]), low[starts[end]:starts[end + 1]])
        begin = end + 1
    return int(starts[-1])


def _fill_special(buf: Buffer, bucket: _Bucket, i: int, offset: int, out: np.ndarray) -> None:
    if bucket.is_run[i]:
        (n_runs,) = struct.unpack_from("<H", buf, offset)
        runs = np.frombuffer(buf, "<u2", 2 * n_runs, offset + 2).astype(np.int64)
        begin, length = runs[0::2], runs[1::2] + 1
        shift = np.repeat(begin - np.concatenate(([0], np.cumsum(length)[:-1])), length)
        out[:] = shift + np.arange(len(out))
    else:
        bits = np.unpackbits(np.frombuffer(buf, np.uint8, BITSET_BYTES, offset),
                             bitorder="little")
        out[:] = np.flatnonzero(bits)
