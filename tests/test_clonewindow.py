"""The compact clone window (issue 21 part 2) against the window before it: on random traffic
(any mix of IMEIs, SIMs, days, minutes, operators, cells and radios, batches split anywhere,
replayed, the white list moved to a new generation between them, months or years passing
between batches) it flags exactly what the reference flags, for attaches no older than its
late_days behind the newest, where no two SIMs of an IMEI share a 16-bit fingerprint; and it
holds more than one SIM only for the IMEIs seen with more, forgetting them as the window
moves."""

from __future__ import annotations

from dataclasses import dataclass, replace
from unittest.mock import patch

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.clock import MS_PER_DAY
from enforcer.engine import clones
from enforcer.engine.clones import CloneRules, CloneWindow, WindowSightings
from enforcer.engine.keyindex import KeyIndex
from tests.harness.clonewindow import ReferenceCloneWindow
from tests.test_clones import CELLS, DAY0, MINUTE, RULES, flagged

KEYS = np.arange(1, 13, dtype=np.uint64) * np.uint64(1000) + np.uint64(35_000_000_000_000)
OPERATORS = (0, 43211, 43235)
DAYS = 24  # several windows, so that entries are forgotten and slots come free


@dataclass(frozen=True)
class Attach:
    key: int  # index into KEYS
    imsi: int
    day: int
    minute: int
    operator: int
    cell: int
    off_radio: bool


attaches = st.builds(
    Attach, key=st.integers(0, len(KEYS) - 1), imsi=st.integers(1, 5),
    day=st.integers(0, DAYS), minute=st.integers(0, 40), operator=st.sampled_from(OPERATORS),
    cell=st.integers(0, len(CELLS.codes)), off_radio=st.booleans())
# A step: a batch of new attaches, a replay of an earlier batch, a new generation of the
# white list (these keys of KEYS in it), or days passing before the next batch: past the 256
# a day's code holds, so that the window sweeps and reads codes that wrapped.
steps = st.one_of(
    st.tuples(st.just("batch"), st.lists(attaches, max_size=12)),
    st.tuples(st.just("replay"), st.integers(0, 20)),
    st.tuples(st.just("rebase"), st.sets(st.integers(0, len(KEYS) - 1), min_size=1)),
    st.tuples(st.just("later"), st.one_of(st.integers(1, 600), st.integers(225, 260),
                                          st.sampled_from([256, 512]))))
rules = st.builds(
    CloneRules, distinct_imsis=st.integers(2, 4), window_days=st.integers(1, 5),
    operators_within_minutes=st.sampled_from([0, 10]), far_cells_km=st.just(300.0),
    far_cells_within_minutes=st.sampled_from([0, 10]),
    rat_inconsistent_attaches=st.integers(0, 3))


def sightings(batch: list[Attach], index: KeyIndex) -> WindowSightings:
    ts = np.array([(DAY0 // MS_PER_DAY + a.day) * MS_PER_DAY + a.minute * MINUTE
                   for a in batch], dtype=np.int64)
    return WindowSightings(
        index.rows(KEYS[[a.key for a in batch]]) if batch else np.zeros(0, np.int64),
        np.array([a.imsi for a in batch], np.uint64), ts,
        np.array([a.operator for a in batch], np.uint32),
        np.array([a.cell for a in batch], np.uint32),
        np.array([a.off_radio for a in batch], bool))


@settings(max_examples=600, deadline=None)
@given(rules=rules, late_days=st.one_of(st.none(), st.integers(0, 4), st.just(200)),
       script=st.lists(steps, max_size=14), chunk_rows=st.integers(1, len(KEYS)))
def test_the_compact_window_flags_what_the_reference_flags(
        rules: CloneRules, late_days: int | None, script: list, chunk_rows: int) -> None:
    # A rebase moves the rows a chunk at a time: chunks of every size, edges anywhere. A
    # late_days of 200 keeps the days' codes in two bytes.
    with patch.object(clones, "REBASE_CHUNK_ROWS", chunk_rows):
        compare(rules, late_days, script)


def compare(rules: CloneRules, late_days: int | None, script: list) -> None:
    index = KeyIndex.from_sorted_keys(KEYS[::2].copy())
    compact = CloneWindow(index, rules, CELLS, late_days)
    reference = ReferenceCloneWindow(index, rules, CELLS)
    late = compact.late_days
    batches: list[list[Attach]] = []
    newest = None
    passed = 0  # days
    for kind, what in script:
        if kind == "later":
            passed += what
            continue
        if kind == "rebase":
            index = KeyIndex.from_sorted_keys(KEYS[sorted(what)].copy())
            compact, reference = compact.rebase(index), reference.rebase(index)
            continue
        if kind == "replay":
            if what >= len(batches):
                continue
            batch = batches[what]
            if newest is not None and any(a.day < newest - late for a in batch):
                continue  # older than the window promises to answer as the reference does
        else:
            floor = 0 if newest is None else newest - late
            batch = [Attach(a.key, a.imsi, max(passed + a.day, floor), a.minute, a.operator,
                            a.cell, a.off_radio) for a in what]
            batches.append(batch)
        got = compact.observe(sightings(batch, index))
        want = reference.observe(sightings(batch, index))
        assert got.event.tolist() == want.event.tolist()
        assert got.reason.tolist() == want.reason.tolist()
        if batch:
            newest = max([a.day for a in batch] + ([] if newest is None else [newest]))


def test_the_small_imsis_of_the_traffic_have_distinct_fingerprints() -> None:
    """What the differential test's exactness rests on."""
    assert len(set(clones.fingerprint(np.arange(1, 6, dtype=np.uint64)).tolist())) == 5


IMSIS = np.arange(432_110_000_000_000, 432_110_000_200_000, dtype=np.uint64)
TWIN = int(IMSIS[np.flatnonzero(clones.fingerprint(IMSIS) == clones.fingerprint(IMSIS[:1]))[1]])
SIMS_RULES = CloneRules(distinct_imsis=2, window_days=20, operators_within_minutes=0,
                        far_cells_km=300.0, far_cells_within_minutes=0,
                        rat_inconsistent_attaches=0)


def test_two_sims_sharing_a_fingerprint_count_once() -> None:
    """One pair of SIMs in 65,535 shares a 16-bit fingerprint: the compact window counts them
    as one SIM and flags less, where the window before (32 bits) flags."""
    assert TWIN != int(IMSIS[0])
    index = KeyIndex.from_sorted_keys(KEYS.copy())
    twins = [(0, int(IMSIS[0]), DAY0), (0, TWIN, DAY0 + MINUTE)]
    assert flagged(CloneWindow(index, SIMS_RULES, CELLS), *twins) == []
    assert flagged(ReferenceCloneWindow(index, SIMS_RULES, CELLS), *twins) == [(1, "imsis")]
    others = [(1, int(IMSIS[0]), DAY0), (1, int(IMSIS[1]), DAY0 + MINUTE)]
    assert flagged(CloneWindow(index, SIMS_RULES, CELLS), *others) == [(1, "imsis")]


def test_sims_sharing_a_fingerprint_may_flag_a_later_attach_than_the_reference() -> None:
    """The twins fill one slot where the reference fills two, so the SIM the reference
    flagged (and kept out) is kept, and the window flags two SIMs later."""
    rules = replace(SIMS_RULES, distinct_imsis=3)
    sims = [(int(IMSIS[0]), 0), (TWIN, 1), (int(IMSIS[1]), 10), (int(IMSIS[2]), 21),
            (int(IMSIS[3]), 22)]
    for window, flagged_on in ((CloneWindow, 22), (ReferenceCloneWindow, 10)):
        w = window(KeyIndex.from_sorted_keys(KEYS.copy()), rules, CELLS)
        seen = [day for imsi, day in sims if flagged(w, (0, imsi, DAY0 + day * MS_PER_DAY))]
        assert seen == [flagged_on]


@settings(max_examples=300)
@given(reach=st.sampled_from([1, 81, 128, 129, 200, 32_768, 40_000]),
       reference=st.integers(0, 10**6), data=st.data())
def test_a_day_s_code_reads_back_while_less_than_a_span_old(reach: int, reference: int,
                                                            data) -> None:
    codes = clones.DayCodes(reach)
    assert codes.span >= 2 * reach
    ages = np.array(data.draw(st.lists(st.integers(0, codes.span - 1), min_size=1)), np.int64)
    code = codes.encode(reference - ages)
    assert codes.decode(code, reference).tolist() == (reference - ages).tolist()
    for days in (-1, 0, 1, reach, codes.span - 1, codes.span):
        assert codes.aged(code, reference, days).tolist() == (ages >= days).tolist()


def test_a_sweep_keeps_the_sims_a_late_attach_can_still_see() -> None:
    """SIMs seen 24 days before the newest attach (20 days' window, 5 late) are still in
    reach of an attach 5 days behind it: the sweep that a batch 251 days on brings must not
    empty them."""
    index = KeyIndex.from_sorted_keys(KEYS.copy())
    compact = CloneWindow(index, RULES, CELLS, late_days=5)
    reference = ReferenceCloneWindow(index, RULES, CELLS)
    got = []
    for batch in [[(0, 1, DAY0), (0, 2, DAY0)], [(5, 51, DAY0 + 24 * MS_PER_DAY)],
                  [(0, 3, DAY0 + 19 * MS_PER_DAY), (5, 51, DAY0 + 251 * MS_PER_DAY)]]:
        got.append(flagged(compact, *batch))
        assert got[-1] == flagged(reference, *batch)
    assert got == [[], [], [(0, "imsis")]]


def test_a_jump_of_exactly_a_span_reads_no_sim_as_seen_today() -> None:
    """256 days on, a day's code is the same: the SIMs seen then (in the row and in
    MoreSims) are emptied before they could be read as seen today, with or without a batch
    between."""
    for between in ([], [[(5, 51, DAY0 + 10 * MS_PER_DAY)]]):
        index = KeyIndex.from_sorted_keys(KEYS.copy())
        compact = CloneWindow(index, RULES, CELLS, late_days=5)
        reference = ReferenceCloneWindow(index, RULES, CELLS)
        later = DAY0 + 256 * MS_PER_DAY
        for batch in [[(0, 1, DAY0), (0, 2, DAY0)], *between,
                      [(0, 3, later), (0, 4, later + MINUTE)], [(0, 5, later + 2 * MINUTE)]]:
            assert flagged(compact, *batch) == flagged(reference, *batch)


def test_a_sim_seen_512_days_ago_is_not_read_as_seen_today() -> None:
    """Days are kept modulo 256: a SIM seen once and never again would read as seen today
    512 days later, unless the window had emptied its slot as the days went by."""
    index = KeyIndex.from_sorted_keys(KEYS.copy())
    w = CloneWindow(index, RULES, CELLS, late_days=5)  # 20 + 5 days in reach
    assert flagged(w, (0, 1, DAY0), (5, 51, DAY0)) == []
    for days in range(10, 511, 10):  # another IMEI attaching every ten days
        assert flagged(w, (5, 51, DAY0 + days * MS_PER_DAY)) == []
    today = DAY0 + 512 * MS_PER_DAY
    assert flagged(w, (0, 3, today), (0, 4, today + MINUTE)) == []  # SIM 1 long gone
    assert flagged(w, (0, 5, today + 2 * MINUTE)) == [(0, "imsis")]


def test_an_attach_older_than_the_window_answers_for_is_not_read_back_256_days_on() -> None:
    """An attach further behind the newest than late_days (the worker's decoder lets none
    through) is judged, but its SIM is not kept where its day's code would be read wrong."""
    index = KeyIndex.from_sorted_keys(KEYS.copy())
    w = CloneWindow(index, RULES, CELLS, late_days=5)
    assert flagged(w, (0, 1, DAY0)) == []
    # Sweeps on days 10, 240 and 470 (each once the codes could be read wrong): the last
    # empties every slot seen on day 435 or before.
    for days in range(10, 481, 10):
        assert flagged(w, (5, 51, DAY0 + days * MS_PER_DAY)) == []
    assert flagged(w, (0, 2, DAY0 + 400 * MS_PER_DAY)) == []  # 80 days late
    for days in range(490, 651, 10):
        assert flagged(w, (5, 51, DAY0 + days * MS_PER_DAY)) == []
    today = DAY0 + 656 * MS_PER_DAY  # 400 + 256, before the next sweep
    assert flagged(w, (0, 3, today), (0, 4, today + MINUTE)) == []
    assert flagged(w, (0, 5, today + 2 * MINUTE)) == [(0, "imsis")]


def test_one_sim_an_imei_takes_no_more_than_its_row() -> None:
    w = CloneWindow(KeyIndex.from_sorted_keys(KEYS.copy()), RULES, CELLS)
    assert flagged(w, *((row, 100 + row, DAY0) for row in range(len(KEYS)))) == []
    assert flagged(w, (1, 101, DAY0 + MS_PER_DAY)) == []  # its own SIM again
    assert w.imeis_with_more_sims == 0
    assert flagged(w, (1, 12, DAY0 + MS_PER_DAY), (2, 13, DAY0 + MS_PER_DAY)) == []
    assert w.imeis_with_more_sims == 2


def test_the_imeis_with_more_sims_are_forgotten_as_the_window_moves() -> None:
    w = CloneWindow(KeyIndex.from_sorted_keys(KEYS.copy()), RULES, CELLS, late_days=5)
    flagged(w, (1, 11, DAY0), (1, 12, DAY0))
    flagged(w, (3, 31, DAY0 + 24 * MS_PER_DAY))  # 20 days' window and 5 late: still held
    assert w.imeis_with_more_sims == 1
    # The latest attach it answers as the reference does, 5 days late: both SIMs in reach.
    assert flagged(w, (1, 13, DAY0 + 19 * MS_PER_DAY)) == [(0, "imsis")]
    flagged(w, (3, 31, DAY0 + 25 * MS_PER_DAY))
    assert w.imeis_with_more_sims == 0
    # Still its row's SIM, and the window counts from there as the reference does.
    assert flagged(w, (1, 13, DAY0 + 25 * MS_PER_DAY), (1, 14, DAY0 + 25 * MS_PER_DAY),
                   (1, 15, DAY0 + 25 * MS_PER_DAY + 1)) == [(2, "imsis")]


def test_a_place_without_an_operator_or_a_cell_is_not_kept() -> None:
    w = CloneWindow(KeyIndex.from_sorted_keys(KEYS.copy()), RULES, CELLS)
    flagged(w, (4, 41, DAY0))
    assert not w._minute.any()  # noqa: SLF001 - what is written is what is resident
    flagged(w, (4, 41, DAY0 + MINUTE, 43211))
    flagged(w, (4, 41, DAY0 + 2 * MINUTE))
    assert not (w._minute.any() or w._operator.any())  # noqa: SLF001


def test_the_imeis_lately_with_more_sims_are_found_as_the_others() -> None:
    keys = np.arange(1, 61, dtype=np.uint64) + np.uint64(35_000_000_000_000)
    compact = CloneWindow(KeyIndex.from_sorted_keys(keys), RULES, CELLS)
    reference = ReferenceCloneWindow(KeyIndex.from_sorted_keys(keys), RULES, CELLS)
    many = [(row, sim, DAY0 + row) for row in range(40) for sim in (1, 2)]
    lately = [(row, sim, DAY0 + MINUTE) for row in (50, 51) for sim in (1, 2)]
    third = [(row, 3, DAY0 + 2 * MINUTE) for row in (7, 50, 55)]
    for batch in (many, lately, third, lately + third):
        assert flagged(compact, *batch) == flagged(reference, *batch)
    assert compact.imeis_with_more_sims == 42
    assert flagged(compact, *third) == [(0, "imsis"), (1, "imsis")]


def test_a_window_of_many_pages_moved_in_odd_chunks_flags_what_the_reference_flags() -> None:
    """Every group of columns written over many pages, then moved to a new generation in
    chunks that end mid-page (the pages given back at each chunk's edges), flags on the new
    list what the reference flags: nothing the window saw is lost or shifted."""
    rng = np.random.default_rng(5)
    keys = np.sort(rng.choice(10**9, 60_000, replace=False).astype(np.uint64)) \
        + np.uint64(35_000_000_000_000)
    rules = CloneRules(distinct_imsis=3, window_days=5, operators_within_minutes=10,
                       far_cells_km=300.0, far_cells_within_minutes=10,
                       rat_inconsistent_attaches=2)
    index = KeyIndex.from_sorted_keys(keys)
    compact = CloneWindow(index, rules, CELLS)
    reference = ReferenceCloneWindow(index, rules, CELLS)

    def attaches(index: KeyIndex, seen: np.ndarray, minute: int) -> WindowSightings:
        n = len(seen)
        return WindowSightings(
            index.rows(seen), rng.integers(1, 4, n, dtype=np.uint64),
            np.full(n, DAY0 + minute * MINUTE, np.int64),
            rng.choice(np.array(OPERATORS, np.uint32), n),
            rng.integers(0, len(CELLS.codes) + 1, n).astype(np.uint32),
            rng.random(n) < 0.3)

    first = attaches(index, rng.choice(keys, 150_000), 0)
    assert compact.observe(first).event.tolist() == reference.observe(first).event.tolist()
    kept = np.delete(keys, np.s_[::97])
    new = KeyIndex.from_sorted_keys(np.sort(np.r_[kept, keys[::97] + np.uint64(1)]))
    with patch.object(clones, "REBASE_CHUNK_ROWS", 1531):
        compact, reference = compact.rebase(new), reference.rebase(new)
    again = attaches(new, rng.choice(kept, 150_000), 5)
    got, want = compact.observe(again), reference.observe(again)
    assert len(want.event) > 1_000
    assert got.event.tolist() == want.event.tolist()
    assert got.reason.tolist() == want.reason.tolist()
