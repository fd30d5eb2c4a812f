"""The device and slot of each other slot (a multi-SIM device's IMEIs after its first), held
in a byte where the device's first IMEI sorts near it (`OtherSlots`).

Devices are numbered in the order of their first IMEI's row, so the first slots before an
other slot's row (their rank) place its device: the gap `rank - 1 - device` counts the
devices whose first IMEI lies between the two, negative when the other slot's IMEI sorts
before its first. A multi-SIM device's IMEIs share a TAC and are usually allocated from
nearby serial numbers (the synthetic country's are consecutive: gap 0), so the gap is
small: `(gap + NEAR_BEFORE) << SLOT_BITS | slot` fits a byte for gaps -NEAR_BEFORE ..
NEAR_AFTER. Other slots whose gap does not fit keep their `device << SLOT_BITS | slot` in
full, as a rank over a bit per other slot finds it: 5.1 bytes each, where all took 4
before. 150 M other slots with small gaps take 0.17 GB, where they took 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from enforcer.engine.rankbits import WORD_BITS, BitsDraft, RankBits

SLOT_BITS = 3
SLOT_MASK = np.uint32((1 << SLOT_BITS) - 1)
CODE_BITS = 8
GAP_CODES = 1 << (CODE_BITS - SLOT_BITS)  # 32: 31 near gaps and the far one
NEAR_BEFORE = (GAP_CODES - 1) // 2  # gaps -15 .. -1: the other slot's IMEI sorts first
NEAR_AFTER = GAP_CODES - 2 - NEAR_BEFORE  # gaps 0 .. 15
FAR_CODE = np.uint8((GAP_CODES - 1) << SLOT_BITS)
ENCODE_AT_ONCE = 1 << 20  # other slots coded a step at a time: some 40 bytes of transient each
SCAN_ROWS = 1 << 20  # rows a step of `scan_other_slots` reads (a multiple of WORD_BITS): ~25 MB


@dataclass(frozen=True, eq=False)
class OtherSlots:
    code: np.ndarray  # uint8 per other slot in row order: see the module; FAR_CODE: far
    far: RankBits  # per other slot: held in `far_device`
    far_device: np.ndarray  # uint32 device << SLOT_BITS | slot per far other slot, in order

    @classmethod
    def empty(cls) -> OtherSlots:
        return cls.from_steps(0, [])

    @classmethod
    def of_rows(cls, device_slots: np.ndarray, first_slot: RankBits, other_slot: RankBits
                ) -> OtherSlots:
        """Every other slot `other_slot` sets, its `device << SLOT_BITS | slot` given in row
        order (uint32), coded against `first_slot` a step of rows at a time."""
        return cls.from_steps(len(device_slots), (
            (device_slots[at:at + len(rows)], first_ranks)
            for at, rows, first_ranks in scan_other_slots(first_slot, other_slot)))

    @classmethod
    def from_steps(cls, count: int, steps: Iterable[tuple[np.ndarray, np.ndarray]]
                   ) -> OtherSlots:
        """`count` other slots given as consecutive steps of (each one's `device <<
        SLOT_BITS | slot` (uint32, in row order), the first slots before its row (int64,
        aligned)), so that no caller holds a rank for every other slot (8 bytes each).
        Raises ValueError when the steps do not hold `count` slots."""
        draft = OtherSlotsDraft(count)
        for device_slots, first_ranks in steps:
            draft.add(device_slots, first_ranks)
        if draft.count != count:
            raise ValueError(f"{draft.count} other slots given, {count} announced")
        return draft.finish()

    def __len__(self) -> int:
        return len(self.code)

    @property
    def nbytes(self) -> int:
        return self.code.nbytes + self.far.nbytes + self.far_device.nbytes

    def decode(self, at: np.ndarray, first_ranks: np.ndarray) -> np.ndarray:
        """`device << SLOT_BITS | slot` (uint32) of the other slots at `at` (their order
        among other slots), given the first slots before each one's row (int64, aligned)."""
        code = self.code[at]
        out = (((np.asarray(first_ranks, dtype=np.int64) - 1 + NEAR_BEFORE
                 - (code >> np.uint8(SLOT_BITS)).astype(np.int64)).astype(np.uint32)
                << np.uint32(SLOT_BITS)) | (code & np.uint8(SLOT_MASK)).astype(np.uint32))
        far = code == FAR_CODE
        if far.any():
            out[far] = self.far_device[self.far.rank(np.asarray(at)[far])]
        return out

    def decode_one(self, at: int, first_rank: int) -> int:
        """`decode` of one other slot, in plain Python."""
        code = int(self.code[at])
        if code == FAR_CODE:
            return int(self.far_device[self.far.bit_and_rank(at)[1]])
        return ((first_rank - 1 + NEAR_BEFORE - (code >> SLOT_BITS)) << SLOT_BITS
                | code & int(SLOT_MASK))


class OtherSlotsDraft:
    """Other slots coded as they come, a step at a time in row order, up to `capacity` of
    them: a stream that learns each slot's device as it goes (`realign`) holds no column of
    them in full (4 bytes an other slot)."""

    def __init__(self, capacity: int) -> None:
        self._code = np.empty(capacity, dtype=np.uint8)
        self._far = BitsDraft(capacity)
        self._far_device: list[np.ndarray] = [np.zeros(0, np.uint32)]
        self.count = 0

    def add(self, device_slots: np.ndarray, first_ranks: np.ndarray) -> None:
        """The next other slots: each one's `device << SLOT_BITS | slot` (uint32, in row
        order) and the first slots before its row (int64, aligned). Raises ValueError past
        the capacity."""
        if self.count + len(device_slots) > len(self._code):
            raise ValueError(f"more than {len(self._code)} other slots")
        for start in range(0, len(device_slots), ENCODE_AT_ONCE):
            values = np.asarray(device_slots[start:start + ENCODE_AT_ONCE], np.uint32)
            field = (np.asarray(first_ranks[start:start + ENCODE_AT_ONCE], np.int64)
                     - 1 - (values >> np.uint32(SLOT_BITS)).astype(np.int64) + NEAR_BEFORE)
            far = (field < 0) | (field > NEAR_BEFORE + NEAR_AFTER)
            self._code[self.count:self.count + len(values)] = np.where(
                far, FAR_CODE,
                (np.where(far, 0, field).astype(np.uint8) << np.uint8(SLOT_BITS))
                | (values & SLOT_MASK).astype(np.uint8))
            at = np.flatnonzero(far)
            self._far.set(self.count + at)
            self._far_device.append(values[at])
            self.count += len(values)

    def finish(self) -> OtherSlots:
        return OtherSlots(self._code[:self.count], self._far.finish(self.count),
                          np.concatenate(self._far_device))


def scan_other_slots(first_slot: RankBits, other_slot: RankBits
                     ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Every other slot in row order, SCAN_ROWS rows at a time: (the order among other
    slots of the step's first, their rows (int64), the first slots before each row
    (int64))."""
    for start in range(0, other_slot.rows, SCAN_ROWS):
        stop = min(start + SCAN_ROWS, other_slot.rows)
        rows = start + np.flatnonzero(other_slot.mask_between(start, stop))
        yield int(other_slot.before[start // WORD_BITS]), rows, first_slot.rank(rows)
