"""A registry delivery's safety checks, pure: counts in, the reason for a refusal out."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap64

from enforcer.engine.keyindex import KeyIndex
from enforcer.files.delivery import (ZERO_TAC_BELOW, file_refusal, leading_zero_count,
                                     leading_zero_refusal)
from enforcer.files.listfile import LoadReport


@given(st.sets(st.integers(0, 10**14 - 1), max_size=50) | st.sets(
    st.integers(ZERO_TAC_BELOW - 5, ZERO_TAC_BELOW + 5), max_size=11))
def test_the_count_of_a_bitmap_is_that_of_its_keys(keys: set[int]) -> None:
    expected = sum(k < ZERO_TAC_BELOW for k in keys)
    assert leading_zero_count(KeyIndex.from_bitmap(BitMap64(keys))) == expected
    assert leading_zero_count(np.array(sorted(keys), np.uint64)) == expected
    index = KeyIndex.from_sorted_keys(np.array(sorted(keys), np.uint64))
    assert leading_zero_count(index) == expected


def test_the_imeis_starting_with_0_may_fall_by_as_many_as_allowed_not_more() -> None:
    assert leading_zero_refusal("white", 3000, 1500, 0.5) is None
    assert leading_zero_refusal("white", 3000, 1499, 0.5) == (
        "the white IMEIs that start with 0 would fall from 3,000 to 1,499, by more than the 50%"
        " allowed: leading zeros stripped by a spreadsheet?")
    assert leading_zero_refusal("white", 0, 0, 0.5) is None  # none before: nothing to lose
    assert leading_zero_refusal("black", 10, 90, 0.5) is None


def test_a_list_that_grows_with_other_tacs_keeps_its_imeis_starting_with_0() -> None:
    """20 of 1,000 black-listed IMEIs start with 0; a sweep black-lists 30,000 phones of TAC
    35…: their share falls from 2 % to 0.07 %, their number stays 20."""
    before = np.array([*range(20), *(ZERO_TAC_BELOW * 3 + i for i in range(980))], np.uint64)
    swept = np.arange(30_000, dtype=np.uint64) + ZERO_TAC_BELOW * 3 + 10**6
    after = np.concatenate([before, swept])
    assert leading_zero_refusal("black", leading_zero_count(before), leading_zero_count(after),
                                0.5) is None


def test_a_file_of_bad_rows_says_how_many_lost_their_leading_zero() -> None:
    assert file_refusal(LoadReport("f", rows=0), 0.01) == "the file has no rows"
    assert file_refusal(LoadReport("f", rows=100, bad=1), 0.01) is None
    assert file_refusal(LoadReport("f", rows=100, bad=2), 0.01) == (
        "2 of 100 rows are bad (2.00%), more than the 1.00% allowed")
    assert file_refusal(LoadReport("f", rows=300, bad=100, leading_zero_stripped=100), 0.01) == (
        "100 of 300 rows are bad (33.33%, 100 of them with a leading zero stripped), more than "
        "the 1.00% allowed")
