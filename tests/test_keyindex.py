"""The vectorized index and the roaring format conversion, against plain Python sets."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap64

from enforcer.engine.keyindex import ABSENT, KeyIndex, missing_from, sorted_unique
from enforcer.engine.pairset import PairSet
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys

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
    # A few keys at a time take the bisecting path (FEW_KEYS), with the same answers.
    few = [index.rows(np.array(queries[i:i + 3], dtype=np.uint64)).tolist()
           for i in range(0, len(queries), 3)]
    assert sum(few, []) == got.tolist()
    assert index.keys().tolist() == keys
    # Many keys are searched a step at a time (LOOKUP_KEYS), with the same answers.
    probes = np.array(queries, dtype=np.uint64)
    with patch("enforcer.engine.keyindex.LOOKUP_KEYS", 9):
        assert index.rows(probes).tolist() == got.tolist()
        stepped = index.ranks(probes).tolist()
    assert stepped == index.ranks(probes).tolist()


@given(key_sets, st.integers(0, 400), st.integers(0, 400))
@settings(max_examples=300)
def test_any_range_of_rows_even_empty_or_past_the_end(keys: list[int], start: int,
                                                     end: int) -> None:
    """keys_between as a slice of the whole index takes it, whatever the bounds."""
    index = KeyIndex.from_sorted_keys(np.array(keys, dtype=np.uint64))
    assert index.keys_between(start, end).tolist() == keys[start:end]


@given(key_sets)
@settings(max_examples=200)
def test_bulk_bitmap_equals_pyroaring(keys: list[int]) -> None:
    built = bitmap_from_sorted_keys(np.array(keys, dtype=np.uint64))
    assert built == BitMap64(keys)


@given(key_sets)
@settings(max_examples=200)
def test_an_index_written_as_a_bitmap_is_pyroaring_s_bitmap_of_its_keys(keys: list[int]) -> None:
    index = KeyIndex.from_sorted_keys(np.array(keys, dtype=np.uint64))
    portable = b"".join(index.portable_parts())
    assert BitMap64.deserialize(portable) == BitMap64(keys)
    assert KeyIndex.from_portable(portable).keys().tolist() == keys


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


@given(key_sets, st.integers(1, 9))
@settings(max_examples=200)
def test_an_index_of_sorted_keys_made_a_step_at_a_time_is_the_bitmap_s(
        keys: list[int], step: int) -> None:
    """Steps of a few keys, chunks going on from one step to the next, against the
    bitmap's own serialization parsed."""
    with patch("enforcer.engine.keyindex.LOOKUP_KEYS", step):
        index = KeyIndex.from_sorted_keys(np.array(keys, dtype=np.uint64))
    expected = KeyIndex.from_portable(BitMap64(keys).serialize())
    assert index.keys().tolist() == keys
    assert (index.chunk_high.tolist(), index.chunk_start.tolist(), index.search_steps) == (
        expected.chunk_high.tolist(), expected.chunk_start.tolist(), expected.search_steps)


@given(key_sets, st.integers(0, 40), st.integers(1, 40))
@settings(max_examples=200)
def test_an_index_read_from_a_bitmap_a_step_at_a_time_is_the_whole_read(
        keys: list[int], whole: int, step: int) -> None:
    """Small bitmaps are read whole, larger ones a step at a time; a step that ends inside
    a chunk gives it in two pieces, which the index adds up."""
    bitmap = BitMap64(keys)
    index = KeyIndex.from_bitmap(bitmap, whole=whole, step=step)
    assert list(bitmap) == keys
    expected = KeyIndex.from_sorted_keys(np.array(keys, dtype=np.uint64))
    assert index.keys().tolist() == keys
    assert (index.chunk_high.tolist(), index.chunk_start.tolist(), index.search_steps) == (
        expected.chunk_high.tolist(), expected.chunk_start.tolist(), expected.search_steps)


@given(key_sets, st.lists(st.integers(0, KEY_LIMIT), max_size=50), st.integers(1, 20),
       key_sets, st.booleans(), st.integers(1, 40))
@settings(max_examples=300)
def test_the_keys_missing_from_another_index_are_the_sets_difference(
        old: list[int], added: list[int], every: int, other: list[int], related: bool,
        step: int) -> None:
    """A new list is most often the old one less some keys, with others (a delivery); or
    any other set, denser or sparser than the old one (searched by the index then)."""
    new = sorted(set(old) - set(old[::every]) | set(added)) if related else other
    pieces = list(missing_from(KeyIndex.from_sorted_keys(np.array(old, dtype=np.uint64)),
                               KeyIndex.from_sorted_keys(np.array(new, dtype=np.uint64)),
                               step))
    assert all(piece.dtype == np.uint64 for piece in pieces)
    assert np.concatenate([np.zeros(0, np.uint64), *pieces]).tolist() == sorted(
        set(old) - set(new))


def dense_keys(seed: int) -> np.ndarray:
    """Chunks holding more than 4,096 keys (bitset containers) next to sparse ones, across
    two 32-bit buckets, with whole runs of consecutive keys."""
    rng = np.random.default_rng(seed)
    parts = [
        35_000_000 * 10**6 + rng.choice(65_536, 20_000, replace=False),  # dense, random
        35_000_000 * 10**6 + 65_536 + rng.choice(65_536, 300, replace=False),  # sparse
        (7 << 32) + np.arange(1_000, 9_000),  # a run
        (7 << 32) + 70_000 + rng.choice(65_536, 4_097, replace=False),  # just over 4,096
        rng.integers(0, 10**14, 500),
    ]
    return np.unique(np.concatenate(parts).astype(np.uint64))


@pytest.mark.parametrize("seed", range(4))
def test_bulk_build_of_dense_chunks_equals_pyroaring(seed: int) -> None:
    keys = dense_keys(seed)
    assert bitmap_from_sorted_keys(keys) == BitMap64(keys.tolist())
    assert BitMap64.deserialize(b"".join(KeyIndex.from_sorted_keys(keys).portable_parts())) == (
        BitMap64(keys.tolist()))


@pytest.mark.parametrize(("seed", "optimize"), [(s, o) for s in range(4) for o in (False, True)])
def test_index_reads_bitset_and_run_containers(seed: int, optimize: bool) -> None:
    bitmap = BitMap64(dense_keys(seed).tolist())
    if optimize:
        bitmap.run_optimize()
    index = KeyIndex.from_bitmap(bitmap)
    expected = np.frombuffer(bitmap.to_array(), dtype=np.uint64)
    assert np.array_equal(index.keys(), expected)
    probes = np.concatenate([expected[::7], expected[::11] + np.uint64(1)])
    rank = {int(k): i for i, k in enumerate(expected)}
    assert index.rows(probes).tolist() == [rank.get(int(p), ABSENT) for p in probes]


def test_keys_must_be_strictly_increasing() -> None:
    with pytest.raises(ValueError):
        KeyIndex.from_sorted_keys(np.array([3, 3, 4], np.uint64))


def test_an_absent_row_has_no_key() -> None:
    with pytest.raises(IndexError):
        KeyIndex.from_sorted_keys(np.array([10, 20], np.uint64)).keys_at(np.array([ABSENT]))


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=80),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=40))
def test_pair_set_membership(pairs: list[tuple[int, int]], probes: list[tuple[int, int]]) -> None:
    pair_set = PairSet.from_pairs(np.array([p[0] for p in pairs], np.uint64),
                                  np.array([p[1] for p in pairs], np.uint64))
    got = pair_set.contains(np.array([p[0] for p in probes], np.uint64),
                            np.array([p[1] for p in probes], np.uint64))
    assert got.tolist() == [p in set(pairs) for p in probes]
    assert [bool(pair_set.contains(np.array([k], np.uint64), np.array([n], np.uint64))[0])
            for k, n in probes] == got.tolist()
    assert len(pair_set) == len(set(pairs))
    # Pairs given sorted and distinct (a snapshot's) are taken as they are: the same set.
    again = PairSet.from_pairs(*(np.array(column, np.uint64)
                                 for column in zip(*sorted(set(pairs)))) if pairs else
                               (np.zeros(0, np.uint64), np.zeros(0, np.uint64)))
    assert again.pairs()[0].tolist() == pair_set.pairs()[0].tolist()
    assert again.pairs()[1].tolist() == pair_set.pairs()[1].tolist()
    assert again.start.tolist() == pair_set.start.tolist()


@given(st.lists(st.integers(0, 2**63 - 1), max_size=300))
def test_sorted_unique_is_numpys_unique(keys: list[int]) -> None:
    array = np.array(keys, dtype=np.int64)
    assert np.array_equal(sorted_unique(array), np.unique(array))
    assert sorted_unique(array).dtype == array.dtype


@settings(max_examples=200)
@given(st.lists(st.integers(0, (3 << 16) + 100), max_size=300),
       st.lists(st.integers(0, (3 << 16) + 200), max_size=100), st.data())
def test_ranks_and_slices_of_keys_are_the_sorted_array_s(keys, probes, data) -> None:
    """Across roaring containers: keys below each probe (in the set or not) and the keys of
    any run of rows, as a sorted array gives them."""
    keys = np.array(sorted(set(keys)), dtype=np.uint64)
    index = KeyIndex.from_sorted_keys(keys)
    probes = np.array(probes, dtype=np.uint64)
    assert index.ranks(probes).tolist() == np.searchsorted(keys, probes).tolist()
    if len(keys):
        start = data.draw(st.integers(0, len(keys) - 1))
        stop = data.draw(st.integers(start + 1, len(keys)))
        assert index.keys_between(start, stop).tolist() == keys[start:stop].tolist()


@settings(max_examples=300)
@given(key_sets, st.data())
def test_keys_added_or_kept_give_the_index_of_the_keys_built_afresh(keys, data) -> None:
    """with_keys, compress and from_chunks (pieces of a chunk in any order) against an index
    built from the sorted keys themselves."""
    keys = np.array(keys, dtype=np.uint64)
    index = KeyIndex.from_sorted_keys(keys)
    more = np.array(sorted(set(data.draw(st.lists(
        st.one_of(st.integers(0, KEY_LIMIT), st.sampled_from(
            [int(k) + d for k in keys[:50] for d in (1, 2, 70_000)] or [0])),
        max_size=60))) - set(keys.tolist())), dtype=np.uint64)
    more = more[more <= KEY_LIMIT]
    both = np.union1d(keys, more)
    assert_same(index.with_keys(more), KeyIndex.from_sorted_keys(both))
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(both),
                                       max_size=len(both))), dtype=bool)
    assert_same(KeyIndex.from_sorted_keys(both).compress(keep),
                KeyIndex.from_sorted_keys(both[keep]))
    cut = data.draw(st.integers(0, len(both)))
    pieces = [KeyIndex.from_sorted_keys(both[:cut]), KeyIndex.from_sorted_keys(both[cut:])]
    assert_same(KeyIndex.from_chunks(
        np.concatenate([p.chunk_high for p in reversed(pieces)]),
        np.concatenate([np.diff(p.chunk_start) for p in reversed(pieces)]),
        np.concatenate([p.low for p in pieces])), KeyIndex.from_sorted_keys(both))


@settings(max_examples=300)
@given(key_sets, st.data())
def test_keys_removed_and_added_give_the_index_of_the_keys_built_afresh(keys, data) -> None:
    """`changed` (a fold's white list) against the set built afresh: keys removed in the set
    or not, keys added new or already there; slices of rows and steps of keys that cut
    through chunks."""
    keys = np.array(keys, dtype=np.uint64)
    index = KeyIndex.from_sorted_keys(keys)
    near = [int(k) + d for k in keys[:50] for d in (0, 1, 70_000)] or [0]
    drawn = data.draw(st.lists(st.one_of(st.integers(0, KEY_LIMIT), st.sampled_from(near)),
                               max_size=120))
    changes = np.array(sorted({k for k in drawn if k <= KEY_LIMIT}), dtype=np.uint64)
    removing = np.array(data.draw(st.lists(st.booleans(), min_size=len(changes),
                                           max_size=len(changes))), dtype=bool)
    want = KeyIndex.from_sorted_keys(np.union1d(np.setdiff1d(keys, changes[removing]),
                                                changes[~removing]))
    with patch("enforcer.engine.keyindex.CHANGED_ROWS", 7), \
            patch("enforcer.engine.keyindex.CHANGED_KEYS", 5), \
            patch("enforcer.engine.keyindex.LOOKUP_KEYS", 9):
        assert_same(index.changed(changes, removing), want)


def test_keys_changed_must_come_in_increasing_order_one_flag_each() -> None:
    index = KeyIndex.from_sorted_keys(np.array([1, 2, 3, 4], dtype=np.uint64))
    for keys in ([1, 1], [5, 5], [51, 3]):
        with pytest.raises(ValueError, match="strictly increasing"):
            index.changed(np.array(keys, np.uint64), np.zeros(len(keys), bool))
    with pytest.raises(ValueError, match="flags"):
        index.changed(np.array([1, 5], np.uint64), np.zeros(1, bool))


def assert_same(got: KeyIndex, want: KeyIndex) -> None:
    assert got.keys().tolist() == want.keys().tolist()
    assert got.chunk_high.tolist() == want.chunk_high.tolist()
    assert got.chunk_start.tolist() == want.chunk_start.tolist()
    assert got.search_steps == want.search_steps
    probes = np.r_[want.keys(), want.keys() + np.uint64(1)]
    assert got.rows(probes).tolist() == want.rows(probes).tolist()


def test_chunks_that_do_not_add_up_to_the_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="add up"):
        KeyIndex.from_chunks(np.array([1], np.uint64), np.array([2]), np.zeros(1, np.uint16))


def test_arrays_that_are_not_one_index_are_refused() -> None:
    """A snapshot's white list files mixed by hand (two generations', say) would answer
    wrongly, silently: refused as they are read."""
    one = KeyIndex.from_sorted_keys(np.array([1, 2, 70000, 70001, 2**40], np.uint64))
    other = KeyIndex.from_sorted_keys(np.array([5, 6], np.uint64))
    again = KeyIndex.from_arrays(one.chunk_high, one.chunk_start, one.low)
    assert again.keys().tolist() == one.keys().tolist()
    with pytest.raises(ValueError, match="do not cover"):
        KeyIndex.from_arrays(one.chunk_high, one.chunk_start, other.low)
    with pytest.raises(ValueError, match="do not cover"):
        KeyIndex.from_arrays(other.chunk_high, one.chunk_start, one.low)
    with pytest.raises(ValueError, match="uint64, int64 and uint16"):
        KeyIndex.from_arrays(one.chunk_high, one.chunk_start, one.low.astype(np.uint32))
