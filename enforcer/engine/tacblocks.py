"""The regulator's blocked TACs: whole models it forbids on the network (never type-approved,
recalled, ...), each with its reason, as the condition `tac_blocked` reads them.

A few thousand TACs at most, held as two sorted numpy columns and looked up a batch at a
time like the TAC database (`enforcer.engine.tacs`); the list stands on its own: a TAC the
GSMA database does not hold can be blocked all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from enforcer.engine.imei import SNR_SPACE
from enforcer.engine.tacs import TAC_SPACE


class TacBlockReason(StrEnum):
    """Why a regulator blocks a model (the `reason` column of its file)."""

    NOT_TYPE_APPROVED = "not_type_approved"  # never certified for this country's networks
    RECALLED = "recalled"  # withdrawn by its maker or the regulator (a safety fault)
    NON_COMPLIANT = "non_compliant"  # certified, then found outside its approval (radio, SAR)
    COURT_ORDER = "court_order"


TAC_BLOCK_REASONS: tuple[TacBlockReason, ...] = tuple(TacBlockReason)
NOT_BLOCKED = 255  # `BlockedTacs.reasons` where a TAC is not blocked


@dataclass(frozen=True, eq=False)
class BlockedTacs:
    """One row a blocked TAC, in TAC order. Build with `BlockedTacs.build`."""

    tac: np.ndarray  # uint32, sorted, unique, each below TAC_SPACE
    reason: np.ndarray  # uint8 index into TAC_BLOCK_REASONS

    @classmethod
    def build(cls, tacs: np.ndarray, reasons: np.ndarray) -> BlockedTacs:
        """From one entry a TAC (unique TACs), in any order."""
        tacs = np.asarray(tacs, dtype=np.uint32)
        order = np.argsort(tacs, kind="stable")
        return cls(tacs[order], np.asarray(reasons, dtype=np.uint8)[order])

    @classmethod
    def empty(cls) -> BlockedTacs:
        return cls.build(np.zeros(0, np.uint32), np.zeros(0, np.uint8))

    def __len__(self) -> int:
        return len(self.tac)

    @property
    def nbytes(self) -> int:
        return self.tac.nbytes + self.reason.nbytes

    def reasons(self, imei_keys: np.ndarray) -> np.ndarray:
        """uint8 TAC_BLOCK_REASONS index of each IMEI key's (uint64, 14 digits) TAC,
        NOT_BLOCKED where it is not blocked or the key is no IMEI's."""
        tacs = np.minimum(np.asarray(imei_keys, dtype=np.uint64) // np.uint64(SNR_SPACE),
                          TAC_SPACE).astype(np.uint32)  # NO_KEY: beyond every TAC
        if not len(self.tac):
            return np.full(len(tacs), NOT_BLOCKED, dtype=np.uint8)
        at = np.minimum(np.searchsorted(self.tac, tacs), len(self.tac) - 1)
        return np.where(self.tac[at] == tacs, self.reason[at], np.uint8(NOT_BLOCKED))

    def reason_of_key(self, imei_key: int) -> TacBlockReason | None:
        code = int(self.reasons(np.array([imei_key], dtype=np.uint64))[0])
        return None if code == NOT_BLOCKED else TAC_BLOCK_REASONS[code]

    def changed_rows(self, other: BlockedTacs) -> int:
        """How many TACs both lists block for another reason."""
        _, here, there = np.intersect1d(self.tac, other.tac, assume_unique=True,
                                        return_indices=True)
        return int(np.count_nonzero(self.reason[here] != other.reason[there]))
