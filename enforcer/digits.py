"""Numbers from fixed-width ASCII digit strings, a whole column at a time.

numpy's own bytes-to-integer cast parses each element through Python's int(); Horner's
rule over the columns of the byte matrix does the same in a dozen vector operations.
"""

from __future__ import annotations

import numpy as np

ZERO = ord("0")
TEN = np.uint64(10)


def decimal_values(texts: np.ndarray) -> np.ndarray:
    """uint64 values of numpy bytes strings ('S' dtype) holding ASCII digits, padded on the
    right with NUL as numpy pads them. The caller has checked they are digits and at most 19."""
    width = texts.dtype.itemsize
    matrix = np.frombuffer(texts.tobytes(), dtype=np.uint8).reshape(len(texts), width)
    values = np.zeros(len(texts), dtype=np.uint64)
    for column in matrix.T:
        values = np.where(column != 0, values * TEN + (column - ZERO).astype(np.uint64), values)
    return values
