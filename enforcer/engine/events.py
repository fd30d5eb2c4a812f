"""Attach events: one parsed event, and a batch of them as columns for the decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from enforcer.engine.imei import ImeiParse
from enforcer.engine.subscriber import Imsi
from enforcer.engine.tacs import rat_of

# No IMEI key is this large (keys are below 10^14), so it is in no list and no registry.
NO_KEY = np.uint64(np.iinfo(np.uint64).max)
# An equipment check's SIM identities when it names none (N5g-eir without a SUPI or GPSI, S13
# without an MSISDN): 0 is nobody's IMSI or number, so never in a cut pair, never the owner.
NO_IMSI = 0
NO_MSISDN = 0
NO_OPERATOR = 0
MCC_MNC_DIGITS = (5, 6)


def operator_code(mcc_mnc: str | None) -> int:
    """MCC-MNC as a number (43211), NO_OPERATOR when absent or not 5-6 digits: the field
    is informative, never a reason to refuse the attach."""
    if mcc_mnc and len(mcc_mnc) in MCC_MNC_DIGITS and mcc_mnc.isascii() and mcc_mnc.isdigit():
        return int(mcc_mnc)
    return NO_OPERATOR


class AttachEvent(NamedTuple):
    """One parsed attach (a NamedTuple: one is built per event on the hot path)."""

    imei: ImeiParse
    imsi: Imsi
    msisdn: int
    ts_ms: int
    emergency: bool = False
    mcc_mnc: str | None = None  # the serving network, as the core reports it
    cell: str | None = None
    rat: str | None = None  # the radio of the attach, as the core names it ("NR", "EUTRA")


@dataclass(frozen=True, eq=False)
class AttachBatch:
    imei_key: np.ndarray  # uint64, NO_KEY where the IMEI yielded no key
    malformed: np.ndarray  # bool
    imsi: np.ndarray  # uint64
    mcc: np.ndarray  # uint16, the IMSI's country
    msisdn: np.ndarray  # uint64
    ts_ms: np.ndarray  # int64, event time
    emergency: np.ndarray  # bool
    # For clone detection, where the core reports them; NO_OPERATOR and None where not.
    operator: np.ndarray = field(default=None)  # type: ignore[assignment]  # uint32 MCC-MNC
    cell: np.ndarray = field(default=None)  # type: ignore[assignment]  # object: str | None
    # uint8 Rat bits of the attach's radio (enforcer.engine.tacs.rat_of); 0 where not told
    rat: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.operator is None:
            object.__setattr__(self, "operator", np.zeros(len(self.imei_key), dtype=np.uint32))
        if self.cell is None:
            object.__setattr__(self, "cell", np.full(len(self.imei_key), None, dtype=object))
        if self.rat is None:
            object.__setattr__(self, "rat", np.zeros(len(self.imei_key), dtype=np.uint8))

    def __len__(self) -> int:
        return len(self.imei_key)

    @classmethod
    def from_events(cls, events: Sequence[AttachEvent]) -> AttachBatch:
        return cls(
            imei_key=np.fromiter(
                (NO_KEY if e.imei.key is None else int(e.imei.key) for e in events),
                dtype=np.uint64, count=len(events)),
            malformed=np.fromiter((e.imei.malformed for e in events), bool, len(events)),
            imsi=np.fromiter((e.imsi.value for e in events), np.uint64, len(events)),
            mcc=np.fromiter((e.imsi.mcc for e in events), np.uint16, len(events)),
            msisdn=np.fromiter((e.msisdn for e in events), np.uint64, len(events)),
            ts_ms=np.fromiter((e.ts_ms for e in events), np.int64, len(events)),
            emergency=np.fromiter((e.emergency for e in events), bool, len(events)),
            operator=np.fromiter((operator_code(e.mcc_mnc) for e in events), np.uint32,
                                 len(events)),
            cell=np.array([e.cell for e in events] + [None], dtype=object)[:-1],
            rat=np.fromiter((rat_of(e.rat) for e in events), np.uint8, len(events)),
        )

    @classmethod
    def empty(cls) -> AttachBatch:
        none = np.zeros(0, dtype=np.uint64)
        return cls(none, none.astype(bool), none, none.astype(np.uint16), none,
                   none.astype(np.int64), none.astype(bool))

    def take(self, order: np.ndarray) -> AttachBatch:
        return AttachBatch(*(getattr(self, f)[order] for f in self.__dataclass_fields__))
