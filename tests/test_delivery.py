"""A registry delivery's safety checks, pure: counts in, the reason for a refusal out."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap64

from enforcer.delivery import (ZERO_TAC_BELOW, file_refusal, leading_zero_refusal,
                               leading_zero_share)
from enforcer.listfile import LoadReport


@given(st.sets(st.integers(0, 10**14 - 1), max_size=50) | st.sets(
    st.integers(ZERO_TAC_BELOW - 5, ZERO_TAC_BELOW + 5), max_size=11))
def test_the_share_of_a_bitmap_is_that_of_its_keys(keys: set[int]) -> None:
    expected = sum(k < ZERO_TAC_BELOW for k in keys) / len(keys) if keys else 0.0
    assert leading_zero_share(BitMap64(keys)) == expected
    assert leading_zero_share(np.array(sorted(keys), np.uint64)) == expected


def test_a_share_may_fall_by_as_much_as_allowed_not_more() -> None:
    assert leading_zero_refusal("white", 0.3, 0.15, 0.5) is None
    assert leading_zero_refusal("white", 0.3, 0.1499, 0.5).startswith(
        "the share of white IMEIs that start with 0 would fall from 30.00% to 14.99%")
    assert leading_zero_refusal("white", 0.0, 0.0, 0.5) is None  # none before: nothing to lose
    assert leading_zero_refusal("black", 0.1, 0.9, 0.5) is None


def test_a_file_of_bad_rows_says_how_many_lost_their_leading_zero() -> None:
    assert file_refusal(LoadReport("f", rows=0), 0.01) == "the file has no rows"
    assert file_refusal(LoadReport("f", rows=100, bad=1), 0.01) is None
    assert file_refusal(LoadReport("f", rows=100, bad=2), 0.01) == (
        "2 of 100 rows are bad (2.00%), more than the 1.00% allowed")
    assert file_refusal(LoadReport("f", rows=300, bad=100, leading_zero_stripped=100), 0.01) == (
        "100 of 300 rows are bad (33.33%, 100 of them with a leading zero stripped), more than "
        "the 1.00% allowed")
