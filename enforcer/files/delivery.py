"""The safety checks a registry delivery passes before it becomes the next generation, the
way DIRBS-Core checks an import before it touches its tables (`dirbs/importer`): a file
with no rows or too many bad ones, a list that shrinks too much (a truncated file), a
list whose IMEIs starting with 0 fall sharply in number (leading zeros stripped by a
spreadsheet). Each check gives the reason for a refusal, or None. Pure: counts in.

DIRBS-Core refuses an operator's file that holds more IMEIs starting with 1 than with 0;
a national list has no such fixed proportion (TACs of reporting bodies 35 and 86 are most
of it), so the delivery is compared with the current generation instead, as DIRBS compares
a delivery's counts with the history. What is compared is the number of IMEIs that start
with 0, not their share: stripping takes IMEIs out of that set, while a list that grows
with other TACs (a black-listing sweep of 30,000 phones of TAC 35…) leaves it as it was.
"""

from __future__ import annotations

import numpy as np

from enforcer.engine.imei import KEY_DIGITS
from enforcer.engine.keyindex import KeyIndex
from enforcer.files.listfile import LoadReport

ZERO_TAC_BELOW = 10 ** (KEY_DIGITS - 1)  # IMEI keys below this start with 0 (e.g. TAC 01…)


def leading_zero_count(keys: np.ndarray | KeyIndex) -> int:
    """How many of the IMEI keys (uint64 array or index) start with 0."""
    if isinstance(keys, KeyIndex):
        return int(keys.ranks(np.array([ZERO_TAC_BELOW], np.uint64))[0])
    return int(np.count_nonzero(keys < ZERO_TAC_BELOW))


def file_refusal(file: LoadReport, max_bad_share: float) -> str | None:
    """A file that could not be read to its end (whatever rows came before: the rest of the
    delivery is unknown), with no data rows, or with more than `max_bad_share` (0 to 1) of
    them bad."""
    if file.unreadable is not None:
        return f"not readable: {file.unreadable}"
    if file.rows == 0:
        return "the file has no rows"
    bad_share = file.bad / file.rows
    if bad_share > max_bad_share:
        stripped = (f", {file.leading_zero_stripped:,} of them with a leading zero stripped"
                    if file.leading_zero_stripped else "")
        return (f"{file.bad:,} of {file.rows:,} rows are bad ({bad_share:.2%}{stripped}), "
                f"more than the {max_bad_share:.2%} allowed")
    return None


def shrink_refusal(kind: str, before: int, after: int, max_shrink_share: float) -> str | None:
    """A list of `kind` that would lose more than `max_shrink_share` (0 to 1) of its
    `before` entries."""
    if not before:
        return None
    shrink = (before - after) / before
    if shrink > max_shrink_share:
        return (f"the {kind} list would shrink from {before:,} to {after:,} ({shrink:.2%}), "
                f"more than the {max_shrink_share:.2%} allowed: a truncated file?")
    return None


def leading_zero_refusal(kind: str, before: int, after: int, max_fall: float) -> str | None:
    """A list of `kind` whose IMEIs starting with 0 would fall from `before` to `after` (how
    many) by more than `max_fall` (0 to 1) of them."""
    if not before or (before - after) / before <= max_fall:
        return None
    return (f"the {kind} IMEIs that start with 0 would fall from {before:,} to {after:,}, by "
            f"more than the {max_fall:.0%} allowed: leading zeros stripped by a spreadsheet?")
