"""The registry's device ids as sorted columns: a fold's changes laid over them in numpy give
what the dict of every id gave."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enforcer.engine.deviceids import DeviceIds
from enforcer.engine.devices import NO_DEVICE_INT

# Ids are the registry's text: any character but NUL (numpy's bytes drop a trailing one).
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1,
                max_size=12)
DEVICES = st.integers(0, 50)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(NAMES, DEVICES, max_size=30),
       st.dictionaries(NAMES, st.one_of(DEVICES, st.just(NO_DEVICE_INT)), max_size=30))
@example({"D9": 1}, {"D90": 2})  # a prefix of another, each way, wider and narrower
@example({"D90": 1}, {"D9": 2, "D900000": NO_DEVICE_INT})
@example({"D9": 1, "é": 3}, {"D9": NO_DEVICE_INT, "ü": 4})  # gone, and two bytes a character
@example({}, {"D1": 1})
@example({"D1": 1}, {})
def test_changes_laid_over_the_ids_are_what_a_dict_of_them_gives(
        snapshot: dict[str, int], changes: dict[str, int]) -> None:
    ids = DeviceIds.from_mapping(snapshot)
    names = np.array(list(changes), dtype=str)
    devices = np.array(list(changes.values()), np.uint64)
    merged = ids.with_changes(names, devices, gone=NO_DEVICE_INT)
    expected = {name: device for name, device in {**snapshot, **changes}.items()
                if device != NO_DEVICE_INT}
    assert dict(merged.items()) == expected
    assert all(merged.get(name) == device for name, device in expected.items())
    assert all(merged.get(name) is None for name in {*snapshot, *changes} - set(expected))
