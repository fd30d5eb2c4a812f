"""A KeyIndex built in two passes over blocks of keys (enforcer/engine/keysort.py), against
the index of the keys sorted and made distinct whole."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from enforcer.engine.keyindex import KeyIndex, sorted_unique
from enforcer.engine.keysort import ChunkTally
from tests.test_keyindex import KEY_LIMIT, clustered

# Keys in file order: any order, repeats, dense runs beside scattered keys.
file_keys = st.builds(lambda a, b, repeats: a + b + a[:repeats],
                      st.lists(st.integers(0, KEY_LIMIT), max_size=200), clustered,
                      st.integers(0, 50))


def blocks_of(keys: list[int], cuts: list[int]) -> list[np.ndarray]:
    bounds = sorted({0, len(keys), *(cut % (len(keys) + 1) for cut in cuts)})
    return [np.array(keys[lo:hi], dtype=np.uint64) for lo, hi in zip(bounds, bounds[1:])]


@given(file_keys, st.lists(st.integers(0, 10**6), max_size=8),
       st.lists(st.integers(0, 10**6), max_size=8), st.randoms(use_true_random=False),
       st.sampled_from([1, 3, 64, 1 << 20]), st.sampled_from([1, 2, 5, 1 << 20]))
@settings(max_examples=300)
def test_keys_counted_then_placed_are_the_index_of_them_sorted_and_distinct(
        keys: list[int], cuts: list[int], other_cuts: list[int], order, sort_rows: int,
        pending: int) -> None:
    """The blocks of the second pass may be cut and ordered otherwise than the first's (the
    same keys all the same); chunks sorted a few rows at a time, or all at once; the
    tally's pieces added up often or once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("enforcer.engine.keysort.SORT_ROWS", sort_rows)
        patch.setattr("enforcer.engine.keysort.TALLY_PENDING", pending)
        tally = ChunkTally()
        for block in blocks_of(keys, cuts):
            tally.add(block)
        placement = tally.placement()
        second = blocks_of(keys, other_cuts)
        order.shuffle(second)
        for block in second:
            placement.add(block)
        index = placement.index()
    expected = KeyIndex.from_sorted_keys(sorted_unique(np.array(keys, dtype=np.uint64)))
    assert index.keys().tolist() == expected.keys().tolist()
    assert (index.chunk_high.tolist(), index.chunk_start.tolist(), index.search_steps) == (
        expected.chunk_high.tolist(), expected.chunk_start.tolist(), expected.search_steps)
    assert index.rows(np.array(keys, dtype=np.uint64)).tolist() == expected.rows(
        np.array(keys, dtype=np.uint64)).tolist()


def test_no_keys_are_an_empty_index() -> None:
    tally = ChunkTally()
    tally.add(np.zeros(0, np.uint64))
    index = tally.placement().index()
    assert (len(index), index.rows(np.array([5], np.uint64)).tolist()) == (0, [-1])


@pytest.mark.parametrize("second", [
    [35209900176148, 35209900176149, 35209900176149],  # one more than counted
    [35209900176148, 99999900000000],  # a chunk never counted
    [35209900176148],  # fewer than counted
])
def test_keys_that_differ_between_the_passes_are_refused(second: list[int]) -> None:
    """The second pass must read what the first counted (a file rewritten between them)."""
    tally = ChunkTally()
    tally.add(np.array([35209900176148, 35209900176149], np.uint64))
    placement = tally.placement()
    with pytest.raises(ValueError, match="changed between the two passes"):
        placement.add(np.array(second, np.uint64))
        placement.index()


def test_keys_mostly_repeated_leave_no_room_unused() -> None:
    """A list delivered twice over is indexed in rows of its distinct keys."""
    keys = np.arange(35209900000000, 35209900001000, dtype=np.uint64)
    tally = ChunkTally()
    for _ in range(3):
        tally.add(keys)
    placement = tally.placement()
    for _ in range(3):
        placement.add(keys)
    index = placement.index()
    assert (len(index), index.low.base is None) == (1000, True)
