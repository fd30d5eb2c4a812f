"""Slot-usage history: which SIM used which IMEI, when first and last, on which days.

`aggregate` turns a decided batch into one row per (month, IMEI key, IMSI), pure numpy;
`enforcer.engine.usagecache` decides which of those rows the database does not hold yet, and
`learned_pairs` takes from them the subscribers' IMSI -> MSISDN pairs to store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from enforcer.engine.decide import Decisions
from enforcer.engine.events import NO_KEY, AttachBatch
from enforcer.engine.devices import NO_DEVICE, SLOT_MASK
from enforcer.engine.numbers import LearnedPairs, latest_pairs

NO_SLOT = -1


@dataclass(frozen=True, eq=False)
class SlotUsageRows:
    """Rows of slot_usage, as columns; unique on (month, imei_key, imsi)."""

    month: np.ndarray  # int32, the month's first day as days since 1970-01-01
    imei_key: np.ndarray  # uint64
    imsi: np.ndarray  # uint64
    msisdn: np.ndarray  # uint64, the number seen last
    slot: np.ndarray  # int16, the IMEI's slot in its device, NO_SLOT if unknown
    first_seen_ms: np.ndarray  # int64
    last_seen_ms: np.ndarray  # int64
    days: np.ndarray  # int32, bit d-1 for day d of the month

    def __len__(self) -> int:
        return len(self.imei_key)

    def take(self, which: np.ndarray) -> SlotUsageRows:
        return SlotUsageRows(*(getattr(self, f)[which] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Usage:
    """One SIM's use of one IMEI over all months, as slot_usage holds it."""

    imei_key: int
    imsi: int
    msisdn: int
    slot: int | None
    first_seen: datetime
    last_seen: datetime
    days_seen: int


def month_and_day_bit(ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    day = ts_ms.astype("datetime64[ms]").astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    day_of_month = (day - month.astype("datetime64[D]")).astype(np.int32)
    first_day = month.astype("datetime64[D]").astype(np.int64).astype(np.int32)
    return first_day, (np.int64(1) << day_of_month).astype(np.int32)


def aggregate(batch: AttachBatch, decisions: Decisions) -> SlotUsageRows:
    """The batch's attaches that their rule records, one row per (month, IMEI, IMSI)."""
    recorded = np.array([r.record for r in decisions.policy.rules], dtype=bool)[decisions.rule]
    keep = np.flatnonzero(recorded & (batch.imei_key != NO_KEY))
    ts = batch.ts_ms[keep]
    month, day_bit = month_and_day_bit(ts)
    key, imsi = batch.imei_key[keep], batch.imsi[keep]
    order = np.lexsort((ts, imsi, key, month))
    month, key, imsi, ts, day_bit = month[order], key[order], imsi[order], ts[order], \
        day_bit[order]
    msisdn = batch.msisdn[keep][order]
    device_slot = decisions.device_slot[keep][order]
    if not len(order):
        empty = np.zeros(0, np.int64)
        return SlotUsageRows(empty.astype(np.int32), empty.astype(np.uint64),
                             empty.astype(np.uint64), empty.astype(np.uint64),
                             empty.astype(np.int16), empty, empty, empty.astype(np.int32))
    starts = np.flatnonzero(np.r_[True, (month[1:] != month[:-1]) | (key[1:] != key[:-1])
                                  | (imsi[1:] != imsi[:-1])])
    ends = np.r_[starts[1:], len(order)] - 1
    slot = np.where(device_slot == NO_DEVICE, NO_SLOT,
                    (device_slot & SLOT_MASK).astype(np.int64)).astype(np.int16)
    return SlotUsageRows(
        month=month[starts], imei_key=key[starts], imsi=imsi[starts], msisdn=msisdn[ends],
        slot=slot[ends], first_seen_ms=ts[starts], last_seen_ms=ts[ends],
        days=np.bitwise_or.reduceat(day_bit, starts))


def learned_pairs(batch: AttachBatch, rows: SlotUsageRows, home_mcc: tuple[int, ...]
                  ) -> LearnedPairs:
    """The pairs of the slot-usage rows to be written (`rows`: those the database does not
    hold yet, so a pair already stored costs nothing), of home IMSIs only (`home_mcc`: an
    inbound roamer's IMSI would grow the map with every visitor, and no registered device's
    owner is found by it), the latest of each IMSI."""
    home = batch.imsi[np.isin(batch.mcc, np.array(home_mcc, np.uint16))]
    keep = np.flatnonzero(np.isin(rows.imsi, home))
    return latest_pairs(rows.imsi[keep], rows.msisdn[keep], rows.last_seen_ms[keep])
