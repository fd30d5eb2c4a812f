"""The sighting cache against a plain dictionary that never forgets: with room for every pair
it answers exactly as the dictionary does; when it must forget, it may ask for a write the
dictionary would skip, but never skips one the dictionary would make."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.history import SlotUsageRows
from enforcer.engine.usagecache import UsageCache

RESOLUTION_MS = 3_600_000
MONTH = 20_393

# Few distinct values, so that batches repeat pairs and collide in the table.
sighting = st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(0, 3),
                     st.integers(0, 3 * RESOLUTION_MS), st.integers(0, 30), st.integers(1, 3))
batches = st.lists(st.lists(sighting, max_size=30), max_size=12)


def rows_of(batch: list[tuple[int, int, int, int, int, int]]) -> SlotUsageRows:
    unique = {(m, k, i): (t, d, s) for m, k, i, t, d, s in batch}  # one row per pair
    n = len(unique)
    keys, values = list(unique), list(unique.values())
    return SlotUsageRows(
        month=np.array([MONTH + k[0] for k in keys], dtype=np.int32),
        imei_key=np.array([35_000_000_000_000 + k[1] for k in keys], dtype=np.uint64),
        imsi=np.array([432_110_000_000_000 + k[2] for k in keys], dtype=np.uint64),
        msisdn=np.array([989_120_000_000 + v[2] for v in values], dtype=np.uint64),
        slot=np.zeros(n, dtype=np.int16),
        first_seen_ms=np.array([v[0] for v in values], dtype=np.int64),
        last_seen_ms=np.array([v[0] for v in values], dtype=np.int64),
        days=np.array([1 << v[1] for v in values], dtype=np.int32))


class Model:
    """(last bucket, days, number, first sighting) per pair, as the database holds them.
    Batches come in no time order, as partitions read side by side do."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, int, int], tuple[int, int, int, int]] = {}

    def _columns(self, rows: SlotUsageRows):
        return zip(rows.month.tolist(), rows.imei_key.tolist(), rows.imsi.tolist(),
                   rows.first_seen_ms.tolist(), rows.last_seen_ms.tolist(),
                   rows.days.tolist(), rows.msisdn.tolist())

    def needed(self, rows: SlotUsageRows) -> list[bool]:
        out = []
        for m, k, i, first, last, d, s in self._columns(rows):
            held = self.held.get((m, k, i))
            out.append(held is None or last // RESOLUTION_MS > held[0] or d & ~held[1] != 0
                       or s != held[2] or first < held[3])
        return out

    def remember(self, rows: SlotUsageRows) -> None:
        for m, k, i, first, last, d, s in self._columns(rows):
            bucket, days = last // RESOLUTION_MS, d
            if (m, k, i) in self.held:
                old = self.held[(m, k, i)]
                bucket, days, first = max(bucket, old[0]), days | old[1], min(first, old[3])
            self.held[(m, k, i)] = (bucket, days, s, first)


def replay(cache: UsageCache, model: Model, stream, exact: bool) -> None:
    for batch in stream:
        rows = rows_of(batch)
        got, want = cache.needed(rows).tolist(), model.needed(rows)
        if exact:
            assert got == want
        else:
            assert all(g or not w for g, w in zip(got, want))
        chosen = rows.take(np.flatnonzero(cache.needed(rows)))
        cache.remember(chosen)
        model.remember(chosen)


@settings(max_examples=300, deadline=None)
@given(batches)
def test_with_room_for_every_pair_it_answers_as_a_dictionary_does(stream) -> None:
    replay(UsageCache(10_000, RESOLUTION_MS), Model(), stream, exact=True)


@settings(max_examples=300, deadline=None)
@given(batches, st.integers(2, 40))
def test_when_it_forgets_it_never_skips_a_needed_write(stream, capacity: int) -> None:
    replay(UsageCache(capacity, RESOLUTION_MS), Model(), stream, exact=False)


def test_a_batch_larger_than_a_generation_leaves_nothing_stale() -> None:
    cache = UsageCache(2, RESOLUTION_MS)
    first = rows_of([(0, 1, 1, 0, 1, 1)])
    cache.remember(first)
    # The same pair with another number, among more pairs than one generation holds.
    cache.remember(rows_of([(0, 2, 1, 0, 1, 1), (0, 3, 1, 0, 1, 1), (0, 1, 1, 0, 1, 2)]))
    assert cache.needed(first).tolist() == [True]
