"""Numbers from fixed-width ASCII digit strings, a whole column at a time.

numpy's own bytes-to-integer cast parses each element through Python's int(); Horner's
rule over the columns of the byte matrix does the same in a dozen vector operations.
"""

from __future__ import annotations

import numpy as np

ZERO = ord("0")
TEN = np.uint64(10)
# The digit sum of twice each digit, as the Luhn algorithm counts a doubled digit.
_DOUBLED_DIGIT_SUM = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.uint8)


def decimal_values(texts: np.ndarray) -> np.ndarray:
    """uint64 values of numpy bytes strings ('S' dtype) holding ASCII digits, padded on the
    right with NUL as numpy pads them. The caller has checked they are digits and at most 19."""
    width = texts.dtype.itemsize
    matrix = np.frombuffer(texts.tobytes(), dtype=np.uint8).reshape(len(texts), width)
    values = np.zeros(len(texts), dtype=np.uint64)
    for column in matrix.T:
        values = np.where(column != 0, values * TEN + (column - ZERO).astype(np.uint64), values)
    return values


def matrix_values(matrix: np.ndarray) -> np.ndarray:
    """uint64 values of the rows of a matrix of ASCII digits (uint8), all of one width."""
    values = np.zeros(len(matrix), dtype=np.uint64)
    for column in matrix.T:
        values = values * TEN + (column - ZERO).astype(np.uint64)
    return values


def luhn_digits(matrix: np.ndarray) -> np.ndarray:
    """The Luhn check digit (uint8) of each row of 14 ASCII digits: every second digit from
    the second is doubled and its digits summed, as `enforcer.engine.imei.luhn_digit` does."""
    digits = matrix - np.uint8(ZERO)
    total = digits[:, 0::2].sum(axis=1, dtype=np.uint16) \
        + _DOUBLED_DIGIT_SUM[digits[:, 1::2]].sum(axis=1, dtype=np.uint16)
    return ((10 - total % 10) % 10).astype(np.uint8)
