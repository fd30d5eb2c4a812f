"""The devices' columns (engine/devices.py): devices in any order, their slots, owners and
snapshots."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from enforcer.engine.keyindex import ABSENT, KeyIndex
from enforcer.engine.realign import realign_white
from enforcer.engine.lists import Lists
from enforcer.engine.pairset import PairSet
from enforcer.engine.otherslots import NEAR_AFTER, NEAR_BEFORE, SLOT_BITS, SLOT_MASK, OtherSlots
from enforcer.engine.rankbits import FEW_ROWS, WORD_BITS, BitsDraft, RankBits
from enforcer.engine.state import EnforcementState
from enforcer.heap import let_go
from enforcer.files.snapshots import (CURRENT, DRAFT_LOCK, SNAPSHOT_FORMAT, WHITE_ARRAYS,
                                      SnapshotDraft, load_snapshot, save_snapshot)
from enforcer.engine.devices import (NO_DEVICE, OWNER_LIMIT, SOURCES, Cartables,
                                     DeviceColumns, DeviceRecord, DeviceSlot, Devices,
                                     DevicesBuild, Source, build_devices)

WHITE = np.array([11, 12, 20, 30, 31, 32, 40], dtype=np.uint64)
DAY = date(2025, 1, 2)


def build(records: list[DeviceRecord] | DeviceColumns
          ) -> tuple[Devices, DevicesBuild, KeyIndex]:
    index = KeyIndex.from_sorted_keys(WHITE)
    columns = records if isinstance(records, DeviceColumns) else \
        DeviceColumns.from_records(records)
    devices, built = build_devices(index, columns, Cartables.empty(), PairSet.empty())
    return devices, built, index


def owners_of(devices: Devices, index: KeyIndex, keys: list[int]) -> list[int]:
    rows = index.rows(np.array(keys, dtype=np.uint64))
    return devices.owners(devices.device_slots(rows)).tolist()


def test_devices_in_any_order_keep_their_slots_and_owners() -> None:
    devices, built, index = build([
        DeviceRecord((32, 30, 31), 989120000003, Source.PASSENGER, DAY),
        DeviceRecord((20,), None, Source.IMPORT, DAY),
        DeviceRecord((12, 11), 989120000001, Source.REPAIR, date(2020, 5, 6)),
    ])
    assert built == DevicesBuild(3, 0, 0)
    assert owners_of(devices, index, [32, 30, 31, 20, 12, 11, 40]) == \
        [989120000003] * 3 + [0] + [989120000001] * 2 + [0]
    views = {devices.device(d, index).slots[0].imei_key: devices.device(d, index)
             for d in range(3)}
    assert views[32].slots == (DeviceSlot(32, 0), DeviceSlot(30, 1), DeviceSlot(31, 2))
    assert views[12].slots == (DeviceSlot(12, 0), DeviceSlot(11, 1))
    assert (views[12].owner, views[12].source, views[12].registered_on) == (
        989120000001, Source.REPAIR, date(2020, 5, 6))
    assert views[20].owner is None and views[20].slots == (DeviceSlot(20, 0),)


def test_an_imei_claimed_by_two_devices_stays_with_the_first() -> None:
    devices, built, index = build([DeviceRecord((11,), 111, Source.IMPORT, DAY),
                                   DeviceRecord((11,), 222, Source.IMPORT, DAY),
                                   DeviceRecord((30,), 333, Source.IMPORT, DAY),
                                   DeviceRecord((40, 20), 444, Source.IMPORT, DAY),
                                   DeviceRecord((31, 20), 555, Source.IMPORT, DAY),
                                   DeviceRecord((32,), 666, Source.IMPORT, DAY)])
    assert built == DevicesBuild(4, 0, 2)
    assert owners_of(devices, index, [11, 30, 40, 20, 31, 32]) == [111, 333, 444, 444, 0, 666]


def test_a_device_without_a_first_slot_is_left_out() -> None:
    columns = DeviceColumns(np.array([30, 31, 40], np.uint64), np.array([0, 0, 1], np.int64),
                            np.array([1, 2, 0], np.uint8), np.array([111, 222], np.uint64),
                            np.zeros(2, np.uint8), np.zeros(2, np.uint16))
    devices, built, index = build(columns)
    assert built == DevicesBuild(1, 0, 1)
    assert owners_of(devices, index, [30, 31, 40]) == [0, 0, 222]


def test_a_device_with_an_unregistered_imei_is_left_out_and_counted() -> None:
    devices, built, index = build([DeviceRecord((40, 99), 989120000001, Source.IMPORT, DAY),
                                   DeviceRecord((20,), 989120000002, Source.IMPORT, DAY)])
    assert built == DevicesBuild(1, 1, 0)
    assert owners_of(devices, index, [40, 20]) == [0, 989120000002]


def test_owners_of_thirteen_digits_and_every_source_share_six_bytes() -> None:
    """The owner's number and the device's source packed together read back apart, in the
    vectorized and the one-by-one lookups; a longer number is refused."""
    owners = [OWNER_LIMIT - 1, 989120000001, None, 1]
    devices, _, index = build([DeviceRecord((key,), owner, source, DAY) for key, owner, source
                               in zip((11, 12, 20, 30), owners, SOURCES)])
    slots = devices.device_slots(index.rows(np.array([11, 12, 20, 30] * 6, np.uint64)))
    want = [owner or 0 for owner in owners] * 6
    assert devices.owners(slots).tolist() == want
    assert [devices.owner_of(d) for d in slots.tolist()] == want
    views = [devices.device(d, index) for d in range(4)]
    assert [(v.owner, v.source) for v in views] == list(zip(owners, SOURCES))
    with pytest.raises(ValueError, match="more than 13 digits"):
        build([DeviceRecord((11,), OWNER_LIMIT, Source.IMPORT, DAY)])


def test_device_slots_looked_up_a_step_at_a_time_are_each_row_s(monkeypatch) -> None:
    """Many rows are looked up SLOTS_AT_ONCE at a time (a fold's overlay IMEIs), with the
    answers of one row at a time: first and other slots, no device, ABSENT."""
    devices, _, index = build([DeviceRecord((32, 30, 31), 989120000003, Source.PASSENGER, DAY),
                               DeviceRecord((12, 40), 989120000001, Source.REPAIR, DAY),
                               DeviceRecord((11,), None, Source.IMPORT, DAY)])
    rows = np.array([*range(len(WHITE)), ABSENT] * 7)
    monkeypatch.setattr("enforcer.engine.devices.SLOTS_AT_ONCE", FEW_ROWS + 3)
    assert devices.device_slots(rows).tolist() == [devices.device_slot(int(row))
                                                   for row in rows]


def test_an_empty_registry_answers_no_device() -> None:
    empty = Devices.empty(0)
    assert empty.device_slots(np.array([-1, -1])).tolist() == [int(NO_DEVICE)] * 2


def test_registry_snapshot_round_trip(tmp_path: Path, policy) -> None:
    devices, _, index = build([DeviceRecord((32, 30), 989120000003, Source.IMPORT, DAY)])
    save_snapshot(EnforcementState(Lists.from_keys(1, WHITE), devices,
                                   policy), tmp_path)
    again = load_snapshot(tmp_path, policy).devices
    rows = np.arange(len(WHITE))
    assert again.device_slots(rows).tolist() == devices.device_slots(rows).tolist()
    assert again.device(0, index) == devices.device(0, index)


def test_a_registry_written_into_its_files_as_it_is_built_saves_as_one_held_whole(
        tmp_path: Path, policy) -> None:
    """As `registry import` runs a white import: the old generation mapped, the realigned
    columns mapped from the files a SnapshotDraft saves as they are. It loads as the same
    realign held in memory, the draft's files kept as written. A draft a killed process left
    goes at the next save, a live one stays; one not saved goes on the way out."""
    devices, _, index = build([DeviceRecord((32, 30, 31), 989120000003, Source.PASSENGER, DAY),
                               DeviceRecord((12, 40), 989120000001, Source.REPAIR, DAY),
                               DeviceRecord((20,), None, Source.IMPORT, DAY)])
    save_snapshot(EnforcementState(Lists.from_keys(1, WHITE), devices, policy), tmp_path)
    old = load_snapshot(tmp_path, policy)
    gone = np.array([12], dtype=np.uint64)  # its device leaves
    lists = old.lists.with_white(2, KeyIndex.from_sorted_keys(np.setdiff1d(WHITE, gone)))
    want, _ = realign_white(old.devices, old.lists.white_index, lists.white_index, gone)
    killed = tmp_path / ".gen-00000002.k1ll3d.partial"  # its process gone: its lock free
    (killed / "registry").mkdir(parents=True)
    (killed / DRAFT_LOCK).touch()
    with SnapshotDraft(tmp_path, 2) as live, SnapshotDraft(tmp_path, 2) as draft:
        got, _ = realign_white(old.devices, old.lists.white_index, lists.white_index, gone,
                               columns=draft.column)
        with pytest.raises(ValueError, match="made already"):
            draft.column("owner_source", 1, got.owner_source.dtype)
        written = (draft.scratch / "registry" / "owner_source.npy").stat().st_ino
        target = save_snapshot(EnforcementState(lists, got, policy), tmp_path, draft)
        assert (target / "registry" / "owner_source.npy").stat().st_ino == written  # kept
        assert live.scratch.is_dir() and not killed.exists()
    with SnapshotDraft(tmp_path, 3):
        pass
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    again = load_snapshot(tmp_path, policy).devices
    assert again.owner_source.tobytes() == want.owner_source.tobytes()
    assert again.registered_on.tolist() == want.registered_on.tolist()
    assert [again.device(d, lists.white_index) for d in range(want.count)] == [
        want.device(d, lists.white_index) for d in range(want.count)]
    assert want.count == 2


def test_a_draft_s_spill_is_a_mapped_file_already_removed_that_keeps_what_is_written(
        tmp_path: Path) -> None:
    """A fold's scratch arrays: mapped from files of the draft's own, which no save or
    listing sees; what is written survives its pages being let go of (a shared mapping,
    written back to the file, not dropped)."""
    with SnapshotDraft(tmp_path, 2) as draft:
        spilled = draft.spill("rows", 1 << 16, np.dtype(np.int64))
        spilled[:] = np.arange(1 << 16)
        let_go(spilled)
        assert not list(draft.scratch.rglob("*.spill"))
        assert spilled.tolist() == list(range(1 << 16))
        assert len(draft.spill("none", 0, np.dtype(np.uint8))) == 0
        assert draft.written() == {}


def test_a_snapshot_of_the_format_before_coded_other_slots_still_loads(tmp_path: Path,
                                                                        policy) -> None:
    """Format 1 held each other slot's `device << SLOT_BITS | slot` in full, and owners and
    sources apart: an operator's snapshot from before the upgrade loads, coded as it is
    read."""
    devices, _, index = build([DeviceRecord((32, 30, 31), 989120000003, Source.PASSENGER, DAY),
                               DeviceRecord((12, 40), 989120000001, Source.REPAIR, DAY),
                               DeviceRecord((11,), None, Source.IMPORT, DAY)])
    target = save_snapshot(EnforcementState(Lists.from_keys(1, WHITE), devices, policy),
                           tmp_path)
    registry = target / "registry"
    rows = np.arange(len(WHITE))
    slots = devices.device_slots(rows)
    np.save(registry / "other_device.npy", slots[devices.other_slot.test(rows)])
    owners = devices.owners(np.arange(3, dtype=np.uint32) << np.uint32(SLOT_BITS))
    format_1_owner = np.empty(3, dtype=[("low", "<u4"), ("high", "<u2")])
    format_1_owner["low"], format_1_owner["high"] = owners & 0xFFFFFFFF, owners >> 32
    np.save(registry / "owner.npy", format_1_owner)
    np.save(registry / "source.npy", np.array([SOURCES.index(devices.device(d, index).source)
                                               for d in range(3)], np.uint8))
    for name in ("other-code.npy", "other-far-device.npy", "other-far-words.npy",
                 "other-far-before.npy", "other-far-rows.txt", "owner_source.npy"):
        (registry / name).unlink()
    as_roaring(target / "lists")
    pointer = tmp_path / CURRENT
    pointer.write_text(pointer.read_text().replace(f'"format": {SNAPSHOT_FORMAT}',
                                                   '"format": 1'))
    again = load_snapshot(tmp_path, policy).devices
    assert again.device_slots(rows).tolist() == slots.tolist()
    assert [again.device(d, index) for d in range(3)] == [devices.device(d, index)
                                                         for d in range(3)]


def as_roaring(lists: Path) -> None:
    """A generation's white list written as formats 1 and 2 held it."""
    index = KeyIndex.from_arrays(*(np.load(lists / f"white-{name}.npy")
                                   for name in WHITE_ARRAYS))
    (lists / "white.roaring").write_bytes(b"".join(index.portable_parts()))
    for name in WHITE_ARRAYS:
        (lists / f"white-{name}.npy").unlink()


def test_a_snapshot_whose_white_list_is_a_roaring_file_still_loads(tmp_path: Path,
                                                                   policy) -> None:
    """Format 2 held the white list as a roaring bitmap: an operator's snapshot from before
    the upgrade loads, and decides alike."""
    devices, _, index = build([DeviceRecord((32, 30, 31), 989120000003, Source.PASSENGER, DAY),
                               DeviceRecord((11,), None, Source.IMPORT, DAY)])
    state = EnforcementState(Lists.from_keys(1, WHITE), devices, policy)
    target = save_snapshot(state, tmp_path)
    as_roaring(target / "lists")
    pointer = tmp_path / CURRENT
    pointer.write_text(pointer.read_text().replace(f'"format": {SNAPSHOT_FORMAT}',
                                                   '"format": 2'))
    again = load_snapshot(tmp_path, policy)
    assert again.lists.white_index.keys().tolist() == state.lists.white_index.keys().tolist()
    rows = np.arange(len(WHITE))
    assert again.devices.device_slots(rows).tolist() == devices.device_slots(rows).tolist()


@given(st.lists(st.tuples(st.integers(-NEAR_BEFORE - 3, NEAR_AFTER + 3), st.integers(1, 7),
                          st.integers(0, 3)), max_size=120),
       st.integers(1, 40))
def test_other_slots_decode_what_they_were_coded_from(slots, step) -> None:
    """Gaps of every size, near (a byte) and far (held in full, negative too), coded in
    steps of any length and decoded a batch at a time or one by one."""
    ranks = np.cumsum([0] + [advance for _, _, advance in slots])[:len(slots)] + 40
    values = np.array([(rank - 1 - gap) << SLOT_BITS | slot
                       for (gap, slot, _), rank in zip(slots, ranks.tolist())], np.uint32)
    with patch("enforcer.engine.otherslots.ENCODE_AT_ONCE", 3):
        coded = OtherSlots.from_steps(len(values), [
            (values[at:at + step], ranks[at:at + step]) for at in range(0, len(values), step)])
    at = np.arange(len(values))
    assert coded.decode(at, ranks).tolist() == values.tolist()
    assert [coded.decode_one(i, r) for i, r in zip(at.tolist(), ranks.tolist())] == \
        values.tolist()
    far = [not -NEAR_BEFORE <= gap <= NEAR_AFTER for gap, _, _ in slots]
    assert coded.far.count == sum(far) and len(coded.far_device) == sum(far)


@given(st.lists(st.lists(st.integers(0, 299), min_size=1, max_size=4), max_size=80))
def test_devices_read_in_steps_of_rows_find_every_slot(records) -> None:
    """`Devices.device` and the other slots scanned a step of rows at a time (64 rows here,
    so that a country's worth of steps is crossed) agree with the row lookups."""
    index = KeyIndex.from_sorted_keys(np.arange(300, dtype=np.uint64))
    devices, _ = build_devices(index, DeviceColumns.from_records(
        [DeviceRecord(tuple(keys), None, Source.IMPORT, DAY) for keys in records]),
        Cartables.empty(), PairSet.empty())
    rows = np.arange(300)
    slots = devices.device_slots(rows)
    with patch("enforcer.engine.otherslots.SCAN_ROWS", 64):
        scanned = list(devices.other_device_slots())
        views = [devices.device(d, index) for d in range(devices.count)]
    found = np.concatenate([np.zeros(0, np.int64), *(r for r, _ in scanned)])
    assert found.tolist() == np.flatnonzero(devices.other_slot.test(rows)).tolist()
    assert np.concatenate([np.zeros(0, np.uint32), *(v for _, v in scanned)]).tolist() == \
        slots[found].tolist()
    for device, view in enumerate(views):
        assert sorted((s.slot, s.imei_key) for s in view.slots) == sorted(
            (int(v) & int(SLOT_MASK), int(r)) for r, v in zip(rows.tolist(), slots.tolist())
            if v != NO_DEVICE and v >> SLOT_BITS == device)


def test_other_slots_at_the_edges_of_a_byte_s_gap(monkeypatch) -> None:
    """Sixty devices' first IMEIs at the even keys (device d at 2d); some have a second IMEI
    just after device d + gap's first (before its own first for a negative gap): gaps
    -15, 0 and 15 fit a byte, -16 and 16 do not. A device's slots are read from the rows
    near it and the few held in full, never from a scan of every other slot."""
    white = np.arange(120, dtype=np.uint64)
    second = {20: 0, 22: NEAR_AFTER, 24: NEAR_AFTER + 1, 40: -NEAR_BEFORE,
              42: -NEAR_BEFORE - 1}  # device -> gap
    records = [DeviceRecord((2 * d, 2 * (d + second[d]) + 1) if d in second else (2 * d,),
                            None, Source.IMPORT, DAY) for d in range(60)]
    index = KeyIndex.from_sorted_keys(white)
    devices, built = build_devices(index, DeviceColumns.from_records(records),
                                   Cartables.empty(), PairSet.empty())
    assert built == DevicesBuild(60, 0, 0)
    assert devices.others.far.count == 2
    monkeypatch.setattr("enforcer.engine.devices.scan_other_slots", None)
    for d, gap in second.items():
        key = 2 * (d + gap) + 1
        assert devices.device(d, index).slots == (DeviceSlot(2 * d, 0), DeviceSlot(key, 1))
        assert devices.device_slot(key) == d << SLOT_BITS | 1
        assert devices.device_slots(np.full(30, key)).tolist() == [d << SLOT_BITS | 1] * 30
    for d in (0, 1, 59):
        assert devices.device(d, index).slots == (DeviceSlot(2 * d, 0),)


@given(st.lists(st.booleans(), max_size=300))
def test_rank_bits_agree_with_counting(bits: list[bool]) -> None:
    ranked = RankBits.from_mask(np.array(bits, dtype=bool))
    rows = np.arange(len(bits))
    assert ranked.test(rows).tolist() == bits
    assert ranked.rank(rows).tolist() == [sum(bits[:i]) for i in range(len(bits))]
    assert ranked.count == sum(bits)
    assert [ranked.select(k) for k in range(sum(bits))] == [i for i, b in enumerate(bits) if b]
    with patch("enforcer.engine.rankbits.POSITIONS_AT_ONCE", 7), \
            patch("enforcer.engine.rankbits.SELECTS_AT_ONCE", 5):  # several steps
        assert ranked.select_many(np.arange(sum(bits))).tolist() == [
            i for i, b in enumerate(bits) if b]
        assert ranked.test(rows).tolist() == bits
        assert ranked.rank(rows).tolist() == [sum(bits[:i]) for i in range(len(bits))]
    for start in range(0, len(bits), 37):
        assert ranked.mask_between(start, len(bits)).tolist() == bits[start:]
        assert ranked.mask_between(0, start).tolist() == bits[:start]
    assert [ranked.bit_and_rank(i) for i in range(len(bits))] == list(
        zip(bits, ranked.rank(rows).tolist()))


@given(st.integers(0, 700), st.lists(st.integers(0, 699), max_size=200))
def test_rank_bits_set_by_position_are_the_mask_s(rows: int, positions: list[int]) -> None:
    """The bits set in place, in steps, against the byte-a-row mask they replace."""
    positions = [p for p in positions if p < rows]
    mask = np.zeros(rows, dtype=bool)
    mask[positions] = True
    want = RankBits.from_mask(mask)
    with patch("enforcer.engine.rankbits.POSITIONS_AT_ONCE", 7):  # several steps
        got = RankBits.from_positions(rows, np.array(positions, dtype=np.int64))
    assert got.words.tolist() == want.words.tolist()
    assert got.before.tolist() == want.before.tolist()
    assert (got.rows, got.count) == (want.rows, want.count)


@given(st.lists(st.booleans(), max_size=400), st.lists(st.integers(0, 400), max_size=8),
       st.integers(0, 400))
def test_a_draft_ranks_its_settled_rows_as_the_finished_bits(bits: list[bool], cuts: list[int],
                                                             kept: int) -> None:
    """Rows set a step at a time, each step's rows ranked once every bit below them is set
    (as `realign` codes a chunk's other slots), against the finished bits; and the bits
    finished at fewer rows."""
    want = RankBits.from_mask(np.array(bits, dtype=bool))
    draft = BitsDraft(len(bits))
    ranked: list[int] = []
    done = 0
    for cut in sorted(c for c in cuts if c <= len(bits)) + [len(bits)]:
        draft.set(np.flatnonzero(bits[done:cut]) + done)
        ranked += draft.rank_settled(np.arange(done, cut)).tolist()
        done = max(done, cut)
    assert ranked == want.rank(np.arange(len(bits))).tolist()
    kept = min(kept, len(bits))
    cut = BitsDraft(len(bits))
    cut.set(np.flatnonzero(bits[:kept]))
    short, whole = cut.finish(kept), RankBits.from_mask(np.array(bits[:kept], dtype=bool))
    assert (short.rows, short.words.tolist(), short.before.tolist()) == (
        whole.rows, whole.words.tolist(), whole.before.tolist())


def test_a_draft_refuses_to_rank_rows_before_those_it_counted_to() -> None:
    draft = BitsDraft(3 * WORD_BITS)
    draft.set(np.array([1, WORD_BITS + 1]))
    assert draft.rank_settled(np.array([2 * WORD_BITS])).tolist() == [2]
    with pytest.raises(ValueError, match="ascending"):
        draft.rank_settled(np.array([WORD_BITS + 5]))


@given(st.lists(st.tuples(st.lists(st.integers(0, 199), min_size=1, max_size=3),
                          st.integers(1, OWNER_LIMIT - 1)), max_size=60),
       st.lists(st.integers(-1, 220), min_size=21, max_size=80))
def test_a_few_rows_read_one_by_one_as_many_are_read_at_once(records, asked) -> None:
    index = KeyIndex.from_sorted_keys(np.arange(200, dtype=np.uint64))
    devices, _ = build_devices(index, DeviceColumns.from_records(
        [DeviceRecord(tuple(keys), owner, Source.IMPORT, DAY) for keys, owner in records]),
        Cartables.empty(), PairSet.empty())
    rows = np.array([r if r < 200 else -1 for r in asked], dtype=np.int64)
    slots = devices.device_slots(rows)  # more than FEW_ROWS: the vectorized lookups
    assert slots.tolist() == [devices.device_slot(r) for r in rows.tolist()]
    assert devices.owners(slots).tolist() == [devices.owner_of(d) for d in slots.tolist()]
