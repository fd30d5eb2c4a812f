"""Large arrays worked on a step at a time, so that a lookup's temporaries are a step's, not
the whole array's (issue 21 part 4)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def in_steps(lookup: Callable[[np.ndarray], np.ndarray], values: np.ndarray, step: int,
             dtype: type, out: np.ndarray | None = None) -> np.ndarray:
    """`lookup` of `values`, `step` of them at a time, each step's answers written into one
    array of `dtype`, or into `out` (one a fold spills; `values` itself may be): a list of
    them joined would be as large again."""
    out = np.empty(len(values), dtype=dtype) if out is None else out
    for start in range(0, len(values), step):
        out[start:start + step] = lookup(values[start:start + step])
    return out
