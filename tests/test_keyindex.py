"""The vectorized index and the roaring format conversion, against plain Python sets."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap64

from enforcer.keyindex import ABSENT, KeyIndex
from enforcer.pairset import PairSet
from enforcer.roaringfmt import bitmap_from_sorted_keys, index_arrays

KEY_LIMIT = 10**14 - 1
# Keys bunched near a few bases, so chunks get dense (bitset containers) and runs appear.
clustered = st.builds(
    lambda base, offs: [base + o for o in offs],
    st.sampled_from([0, 35_000_000 * 10**6, 2**32 - 40, KEY_LIMIT - 70_000]),
    st.lists(st.integers(0, 70_000), max_size=300))
key_sets = st.builds(
    lambda a, b: sorted(set(a) | set(b)),
    st.lists(st.integers(0, KEY_LIMIT), max_size=200), clustered)


@given(key_sets, st.lists(st.integers(0, KEY_LIMIT), max_size=100))
@settings(max_examples=300)
def test_rows_are_ranks_in_the_set(keys: list[int], others: list[int]) -> None:
    index = KeyIndex.from_sorted_keys(np.array(keys, dtype=np.uint64))
    queries = keys[::3] + others + [k + 1 for k in keys[:20]]
    rank = {k: i for i, k in enumerate(keys)}
    got = index.rows(np.array(queries, dtype=np.uint64))
    assert got.tolist() == [rank.get(q, ABSENT) for q in queries]
    assert index.keys().tolist() == keys


@given(key_sets)
@settings(max_examples=200)
def test_bulk_bitmap_equals_pyroaring(keys: list[int]) -> None:
    built = bitmap_from_sorted_keys(np.array(keys, dtype=np.uint64))
    assert built == BitMap64(keys)


@given(key_sets, st.booleans())
@settings(max_examples=200)
def test_index_read_from_any_pyroaring_bitmap(keys: list[int], optimize: bool) -> None:
    bitmap = BitMap64(keys)
    if optimize:
        bitmap.run_optimize()
    index = KeyIndex.from_bitmap(bitmap)
    assert index.keys().tolist() == keys
    rows = np.arange(len(keys))
    assert index.keys_at(rows).tolist() == keys


def test_dense_chunk_becomes_a_bitset_container_and_reads_back() -> None:
    keys = np.arange(10**12, 10**12 + 20_000, dtype=np.uint64)
    bitmap = bitmap_from_sorted_keys(keys)
    assert bitmap.get_statistics()["n_bitset_containers"] >= 1
    high, start, low = index_arrays(bitmap.serialize())
    assert int(start[-1]) == len(keys)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=80),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=40))
def test_pair_set_membership(pairs: list[tuple[int, int]], probes: list[tuple[int, int]]) -> None:
    pair_set = PairSet.from_pairs(np.array([p[0] for p in pairs], np.uint64),
                                  np.array([p[1] for p in pairs], np.uint64))
    got = pair_set.contains(np.array([p[0] for p in probes], np.uint64),
                            np.array([p[1] for p in probes], np.uint64))
    assert got.tolist() == [p in set(pairs) for p in probes]
    assert len(pair_set) == len(set(pairs))
