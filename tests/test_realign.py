"""The registry realigned in chunks of rows (engine/realign.py), held to the whole-array path
it replaced (tests/harness/wholearray.py) on random registries: a white import's new list and
a fold's random registry changes give the same devices, numbers, owners, ids and counts,
with chunks of 64 rows that cut through devices' IMEIs and of 7 devices."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.config import load_config
from enforcer.engine.deviceids import DeviceIds
from enforcer.engine.devices import (KEYLESS_DEVICE, SOURCES, Cartables, DeviceColumns,
                                     Devices, build_devices)
from enforcer.engine.fold import fold
from enforcer.engine.keyindex import KeyIndex
from enforcer.engine.lists import Lists
from enforcer.engine.pairset import PairSet
from enforcer.engine.rankbits import WORD_BITS, RankBits
from enforcer.engine.realign import Rebuilt, realign, realign_white
from enforcer.engine.registry_events import (Device, DeviceDeregistered, DeviceRegistered,
                                             ImeiReplaced, OwnershipSet, RegistryEvent,
                                             TopicPlace, Via)
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import EnforcementState
from enforcer.files.importing import Kind, import_file
from rules.policy import load_policy
from tests.harness.wholearray import folded_devices, realigned_white
from tests.test_decide import CLONED, STOLEN, make_state

CHUNK = WORD_BITS  # the least chunk: a device's IMEIs fall in several
DEVICES = 7  # devices' columns copied, laid in and given owners this many at a time
# Keys over four roaring containers (the key index's chunks), a few hundred of them.
SPACE = 4 << 16
MSISDN = 989_120_000_000
IDS = tuple(f"D{i}" for i in range(6))


def random_registry(rng: np.random.Generator, keys: int, devices: int,
                    unregistered: float) -> tuple[np.ndarray, Devices]:
    """A white list of `keys` keys and a registry built from `devices` random devices of
    1-3 IMEIs, a share of them not registered and some claimed twice (left out by the
    build), with owners, days and ids naming some devices."""
    white = np.unique(rng.integers(0, SPACE, keys).astype(np.uint64))
    imeis = rng.integers(1, 4, devices)
    device = np.repeat(np.arange(devices), imeis)
    slot = np.concatenate([np.arange(n) for n in imeis]).astype(np.uint8) \
        if devices else np.zeros(0, np.uint8)
    outside = rng.random(len(device)) < unregistered
    key = np.where(outside, rng.integers(0, SPACE, len(device)).astype(np.uint64),
                   rng.choice(white, len(device)) if len(white) else np.uint64(0))
    owner = np.where(rng.random(devices) < 0.8, MSISDN + rng.integers(0, 50, devices), 0)
    columns = DeviceColumns(key.astype(np.uint64), device.astype(np.int64), slot,
                            owner.astype(np.uint64),
                            rng.integers(0, len(SOURCES), devices).astype(np.uint8),
                            rng.integers(0, 20000, devices).astype(np.uint16))
    built, _ = build_devices(KeyIndex.from_sorted_keys(white), columns, Cartables.empty(),
                             PairSet.empty())
    named = {name: int(rng.integers(0, built.count)) if built.count and rng.random() < 0.8
             else KEYLESS_DEVICE for name in IDS[:int(rng.integers(0, len(IDS) + 1))]}
    return white, replace(built, ids=DeviceIds.from_mapping(named))


def noise(name: str, count: int, dtype: np.dtype) -> np.ndarray:
    """A spill whose arrays start as noise, not zeros: the fold reads only what it wrote."""
    return np.frombuffer(np.random.default_rng(count).bytes(count * dtype.itemsize),
                         dtype).copy()


def assert_same(got: Devices, want: Devices) -> None:
    for bits in ("first_slot", "other_slot"):
        a, b = getattr(got, bits), getattr(want, bits)
        assert a.rows == b.rows
        assert a.words.tolist() == b.words.tolist() and a.before.tolist() == b.before.tolist()
    for column in ("registered_on",):
        assert getattr(got, column).tolist() == getattr(want, column).tolist(), column
    for column in ("code", "far_device"):
        assert getattr(got.others, column).tolist() == getattr(want.others, column).tolist()
    assert got.others.far.words.tolist() == want.others.far.words.tolist()
    assert got.owner_source.tobytes() == want.owner_source.tobytes()
    assert list(got.ids.items()) == list(want.ids.items())
    assert got.cartables is want.cartables or (
        got.cartables.msisdn.tolist() == want.cartables.msisdn.tolist())


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), keys=st.integers(0, 400), devices=st.integers(0, 150),
       unregistered=st.sampled_from([0.0, 0.05, 0.3]), removed=st.floats(0, 0.3),
       added=st.integers(0, 100))
def test_a_white_import_realigns_as_the_whole_array_path_builds(
        seed, keys, devices, unregistered, removed, added) -> None:
    rng = np.random.default_rng(seed)
    white, registry = random_registry(rng, keys, devices, unregistered)
    new_white = np.union1d(white[rng.random(len(white)) >= removed],
                           rng.integers(0, SPACE, added).astype(np.uint64))
    old_index, new_index = KeyIndex.from_sorted_keys(white), KeyIndex.from_sorted_keys(new_white)
    with patch("enforcer.engine.realign.DEVICES_AT_ONCE", DEVICES):
        got, built = realign_white(registry, old_index, new_index,
                                   np.setdiff1d(white, new_white), CHUNK)
    want, want_built = realigned_white(registry, old_index, new_index)
    assert built == want_built
    assert_same(got, want)


def events_of(changes: list) -> list[RegistryEvent]:
    return [RegistryEvent(f"e{i}", i, change, TopicPlace(0, 0, i))
            for i, change in enumerate(changes)]


def random_changes(rng: np.random.Generator, white: np.ndarray, count: int) -> list:
    """Registrations (of old and new IMEIs, by id or not), deregistrations, transfers and
    repairs, naming devices by their IMEIs or their ids."""
    universe = np.union1d(white, rng.integers(0, SPACE, 40).astype(np.uint64)).tolist()

    def some_keys(most: int) -> tuple[int, ...]:
        return tuple(int(k) for k in rng.choice(universe, int(rng.integers(1, most + 1)),
                                                replace=False))

    def a_device() -> Device:
        name = IDS[int(rng.integers(0, len(IDS)))] if rng.random() < 0.4 else None
        return Device(name, () if name and rng.random() < 0.5 else some_keys(1))

    made = []
    for kind in rng.integers(0, 4, count).tolist():
        if kind == 0:
            made.append(DeviceRegistered(Device(
                IDS[int(rng.integers(0, len(IDS)))] if rng.random() < 0.5 else None,
                some_keys(3)), SOURCES[int(rng.integers(0, len(SOURCES)))], date(2026, 9, 1)))
        elif kind == 1:
            made.append(DeviceDeregistered(a_device()))
        elif kind == 2:
            made.append(OwnershipSet(a_device(), MSISDN + int(rng.integers(0, 50)),
                                     Via.ACTIVATION))
        else:
            made.append(ImeiReplaced(*(int(k) for k in rng.choice(universe, 2))))
    return made


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), keys=st.integers(1, 400), devices=st.integers(0, 150),
       changes=st.integers(0, 40))
def test_a_fold_realigns_as_the_whole_array_path_builds(seed, keys, devices, changes) -> None:
    rng = np.random.default_rng(seed)
    white, registry = random_registry(rng, keys, devices, 0.05)
    state = EnforcementState(Lists.build(1, bitmap_from_sorted_keys(white)), registry,
                             load_policy())
    overlay, _ = state.overlay.apply_all(events_of(random_changes(rng, white, changes)),
                                         state.lists, state.devices)
    state = replace(state, overlay=overlay)
    with patch("enforcer.engine.realign.DEVICES_AT_ONCE", DEVICES), \
            patch("enforcer.engine.realign.POSITIONS_AT_ONCE", DEVICES), \
            patch("enforcer.engine.realign.OWNERS_AT_ONCE", DEVICES), \
            patch("enforcer.engine.fold.NUMBERED_AT_ONCE", DEVICES):
        folded, report = fold(state, 2, CHUNK, spill=noise)
    want, gone = folded_devices(state, folded.lists.white_index)
    assert (report.devices, report.devices_gone) == (want.count, gone)
    assert_same(folded.devices, want)


def test_an_untouched_device_with_an_imei_gone_is_refused() -> None:
    white = np.array([1, 2, 3], np.uint64)
    registry, _ = build_devices(KeyIndex.from_sorted_keys(white), DeviceColumns.from_records(
        []), Cartables.empty(), PairSet.empty())
    registry = replace(registry, first_slot=RankBits.from_mask(np.array([1, 0, 0], bool)),
                       owner_source=registry.owner_source.repeat(0))
    with pytest.raises(ValueError, match="new white list lacks"):
        realign(replace(registry, owner_source=np.zeros(1, registry.owner_source.dtype),
                        registered_on=np.zeros(1, np.uint16)),
                KeyIndex.from_sorted_keys(white), KeyIndex.from_sorted_keys(white[1:]),
                np.zeros(0, np.int64), Rebuilt.none(), Cartables.empty(), PairSet.empty())


def test_a_chunk_is_whole_words_of_rows() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        realign(Devices.empty(0), KeyIndex.from_sorted_keys(np.zeros(0, np.uint64)),
                KeyIndex.from_sorted_keys(np.zeros(0, np.uint64)), np.zeros(0, np.int64),
                Rebuilt.none(), Cartables.empty(), PairSet.empty(), chunk_rows=100)


def test_a_black_import_keeps_the_devices_as_they_are(tmp_path) -> None:
    """The white list is the same: the devices are aligned to it already, and nothing of
    them is rebuilt (at 300 M IMEIs, 2.1 GB that would be built again)."""
    state = make_state(load_policy())
    path = tmp_path / "black.csv"
    path.write_text(f"imei,reason\n{STOLEN:014d},fraud\n{CLONED:014d},cloned\n")
    new, report = import_file(state, Kind.BLACK, path, load_config(environ={}))
    assert new is not None and new.devices is state.devices
    assert report.devices.as_json() == {"devices": 5, "left_out_unregistered": 0,
                                        "left_out_conflicting": 0}
