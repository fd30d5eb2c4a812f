"""Registry columns: devices in any order, their slots, owners and snapshots."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from enforcer.keyindex import KeyIndex
from enforcer.pairset import PairSet
from enforcer.rankbits import RankBits
from enforcer.registry import (Cartables, DeviceColumns, DeviceRecord, DeviceSlot, Registry,
                               Source, build_registry)

WHITE = np.array([11, 12, 20, 30, 31, 32, 40], dtype=np.uint64)
DAY = date(2025, 1, 2)


def build(records: list[DeviceRecord]) -> tuple[Registry, int, KeyIndex]:
    index = KeyIndex.from_sorted_keys(WHITE)
    registry, missing = build_registry(index, DeviceColumns.from_records(records),
                                       Cartables.empty(), PairSet.empty())
    return registry, missing, index


def test_devices_in_any_order_keep_their_slots_and_owners() -> None:
    registry, missing, index = build([
        DeviceRecord((32, 30, 31), 989120000003, Source.PASSENGER, DAY),
        DeviceRecord((20,), None, Source.IMPORT, DAY),
        DeviceRecord((12, 11), 989120000001, Source.REPAIR, date(2020, 5, 6)),
    ])
    assert missing == 0 and registry.devices == 3
    slots = registry.device_slots(index.rows(np.array([32, 30, 31, 20, 12, 11, 40], np.uint64)))
    devices, slot_numbers = slots[:-1] >> 3, slots[:-1] & 7
    assert slot_numbers.tolist() == [0, 1, 2, 0, 0, 1]
    assert devices[0] == devices[1] == devices[2] and devices[4] == devices[5]
    assert len({int(devices[0]), int(devices[3]), int(devices[4])}) == 3
    assert registry.owners(slots).tolist() == [989120000003] * 3 + [0] + [989120000001] * 2 + [0]
    view = registry.device(int(devices[4]), index)
    assert view.slots == (DeviceSlot(12, 0), DeviceSlot(11, 1))
    assert (view.owner, view.source, view.registered_on) == (989120000001, Source.REPAIR,
                                                             date(2020, 5, 6))
    assert registry.device(int(devices[3]), index).owner is None


def test_a_device_with_an_unregistered_imei_is_left_out_and_counted() -> None:
    registry, missing, index = build([DeviceRecord((40, 99), 989120000001, Source.IMPORT, DAY),
                                      DeviceRecord((20,), 989120000002, Source.IMPORT, DAY)])
    assert missing == 1 and registry.devices == 1
    assert registry.owners(registry.device_slots(index.rows(
        np.array([40, 20], np.uint64)))).tolist() == [0, 989120000002]


def test_registry_snapshot_round_trip(tmp_path: Path) -> None:
    registry, _, index = build([DeviceRecord((32, 30), 989120000003, Source.IMPORT, DAY)])
    registry.save(tmp_path)
    again = Registry.load(tmp_path)
    rows = np.arange(len(WHITE))
    assert again.device_slots(rows).tolist() == registry.device_slots(rows).tolist()
    assert again.device(0, index) == registry.device(0, index)


@given(st.lists(st.booleans(), max_size=300))
def test_rank_bits_agree_with_counting(bits: list[bool]) -> None:
    ranked = RankBits.from_mask(np.array(bits, dtype=bool))
    rows = np.arange(len(bits))
    assert ranked.test(rows).tolist() == bits
    assert ranked.rank(rows).tolist() == [sum(bits[:i]) for i in range(len(bits))]
    assert ranked.count == sum(bits)
    assert [ranked.select(k) for k in range(sum(bits))] == [i for i, b in enumerate(bits) if b]
