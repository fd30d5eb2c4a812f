"""Clone detection's memory at national scale, and its speed, against the window before
issue 21 and a dict per IMEI.

    python bench/clones.py [--imeis 300000000] [--second-sim 0.08] [--clones 0.001] [--no-before]

Every IMEI attaches once with its own SIM on a day within the window; a share of them
(`--second-sim`: SIM swaps, a family phone) with a second SIM, and a few (`--clones`) with
two more, which flag them. The window's memory is read as the process's resident growth
while it fills, not from its arrays' sizes: untouched pages cost nothing, and the figure is
what the worker would hold (the heap's free pages given back first: the traffic's own
batches, freed, would count otherwise; before 2026-11-30 they did, some 0.4 GiB at 300 M).
The same traffic then goes through the window before issue 21 (tests/harness/clonewindow.py,
a row of fixed slots an IMEI), measured the same way once the compact one is freed
(`window_gib_before`; `--no-before` skips it), and the two must raise the same flags, but
for the IMEIs whose SIMs share a 16-bit fingerprint: the compact window counts those once
(`flags_differing_by_fingerprints`). The baseline is the obvious structure, {imei_key: {imsi:
last_day}}, measured on `--baseline-imeis` IMEIs with the same mix and scaled; the last line
is JSON.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import time
import tracemalloc
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from measure import emit, give_back_heap, peak_rss_mb, pin_to_one_core, reset_peak_rss, rss_mb, say

from enforcer.clock import MS_PER_DAY
from enforcer.engine.clones import CloneWindow, WindowSightings, fingerprint
from enforcer.engine.keyindex import KeyIndex
from rules.policy import default_clones
from tests.harness.clonewindow import ReferenceCloneWindow

DAY0 = 20_400
BATCH = 2_000_000
MIB = 1 << 20
NEXT_GONE_EVERY = 100  # the next generation: 1 % of the IMEIs gone, as many new
# Past the 256 days a day's code holds: the attach brings a sweep of every row.
SWEEP_AFTER_DAYS = 300


def own_imsi(rows: np.ndarray) -> np.ndarray:
    """Each IMEI's own SIM; its extra ones are the next three IMSIs."""
    return rows.astype(np.uint64) * np.uint64(4) + np.uint64(432_110_000_000_000)


def traffic(rows: np.ndarray, rng: np.random.Generator, second: float, clones: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, imsi, ts_ms) for these IMEIs: one own SIM each, then the extra SIMs, in time."""
    n = len(rows)
    days = rng.integers(0, default_clones().window_days // 2, n)
    own = own_imsi(rows)
    two = rng.random(n) < second
    three = rng.random(n) < clones
    extra_rows = np.r_[rows[two | three], rows[three], rows[three]]
    extra_imsi = np.r_[own[two | three] + np.uint64(1), own[three] + np.uint64(2),
                       own[three] + np.uint64(3)]
    extra_days = np.r_[days[two | three] + 1, days[three] + 2, days[three] + 3]
    row = np.r_[rows, extra_rows]
    imsi = np.r_[own, extra_imsi]
    ts = (DAY0 + np.r_[days, extra_days]).astype(np.int64) * MS_PER_DAY
    return row, imsi, ts


@dataclass(frozen=True)
class Filled:
    grown_mb: float  # the process's resident growth
    events: int
    flagged: np.ndarray  # rows of the IMEIs flagged
    seconds: float  # in observe
    nbytes: int  # the window's arrays
    more_sims: int  # IMEIs holding more than one SIM (the compact window's MoreSims)
    peak_rss_mb: float
    rebase: Rebased | None = None


@dataclass(frozen=True)
class Rebased:
    """The filled window moved to the next generation's white list (the worker does it when
    it adopts a fold or an import)."""

    seconds: float
    extra_mb: float  # the most the process held beyond the window and both white lists
    window_mb: float  # the moved window's resident size
    sweep_s: float  # an attach SWEEP_AFTER_DAYS later: the sweep of every row it brings


def fill(window: CloneWindow | ReferenceCloneWindow, imeis: int, second: float, clones: float
         ) -> tuple[int, np.ndarray, float]:
    """(events, rows of the IMEIs flagged, seconds) of the whole country through the window."""
    rng = np.random.default_rng(3)
    events = 0
    spent = 0.0
    done = np.zeros(0, dtype=np.int64)
    for start in range(0, imeis, BATCH):
        row, imsi, ts = traffic(np.arange(start, min(start + BATCH, imeis)), rng, second,
                                clones)
        order = np.argsort(ts, kind="stable")  # as they would arrive
        for part in np.array_split(order, 3):  # the extra SIMs come in later batches
            seen = WindowSightings(row[part], imsi[part], ts[part], np.zeros(len(part), np.uint32),
                                   np.zeros(len(part), np.uint32))
            began = time.perf_counter()
            # An IMEI flagged once is misused for the flag's life (a year, longer than this
            # bench's traffic); the worker records it once.
            flagged = np.unique(seen.row[window.observe(seen).event])
            done = np.union1d(done, flagged)
            spent += time.perf_counter() - began
        events += len(row)
    return events, done, spent


def measured(window: Callable[[], CloneWindow | ReferenceCloneWindow],
             args: argparse.Namespace, rebase: bool = False) -> Filled:
    """The window made and filled in a child of this process (forked: the white list is
    shared), so that each window's growth is its own and not what the one before it left in
    the allocator; and, if asked, moved to the next generation."""
    with mp.get_context("fork").Pool(1) as pool:
        return pool.apply(_filled, (window, args, rebase))


def _filled(window: Callable[[], CloneWindow | ReferenceCloneWindow],
            args: argparse.Namespace, rebase: bool = False) -> Filled:
    gc.collect()
    give_back_heap()
    start = rss_mb()
    made = window()
    events, flagged, seconds = fill(made, args.imeis, args.second_sim, args.clones)
    gc.collect()
    give_back_heap()  # the traffic's batches, freed: not the window's
    grown, peak = rss_mb() - start, peak_rss_mb()
    nbytes, more_sims = made.nbytes, getattr(made, "imeis_with_more_sims", 0)
    # Handed over, not passed: as in the worker, nothing else holds the old window once it
    # has moved (its MoreSims would count in the new one's memory).
    held = [made]
    del made
    return Filled(grown, events, flagged, seconds, nbytes, more_sims, peak,
                  rebased(held, args.imeis, grown) if rebase else None)


def rebased(held: list[CloneWindow], imeis: int, window_mb: float) -> Rebased:
    """The window `held` alone moved to a white list without every NEXT_GONE_EVERY-th IMEI
    and with as many new ones after the last: its time, and the resident memory it took
    beyond the window."""
    window = held.pop()
    keys = np.arange(imeis, dtype=np.uint64)
    gone = keys[::NEXT_GONE_EVERY]
    index = KeyIndex.from_sorted_keys(np.r_[np.delete(keys, np.s_[::NEXT_GONE_EVERY]),
                                            np.uint64(imeis) + np.arange(len(gone),
                                                                         dtype=np.uint64)])
    del keys, gone
    gc.collect()
    give_back_heap()
    before = rss_mb()
    reset_peak_rss()
    began = time.perf_counter()
    moved = window.rebase(index)
    seconds = time.perf_counter() - began
    extra = peak_rss_mb() - before
    del window
    gc.collect()
    give_back_heap()
    after_mb = window_mb - (before - rss_mb())
    later = np.array([(DAY0 + SWEEP_AFTER_DAYS) * MS_PER_DAY], dtype=np.int64)
    one = np.zeros(1, np.uint32)
    began = time.perf_counter()
    moved.observe(WindowSightings(np.zeros(1, np.int64), own_imsi(np.zeros(1)), later, one, one))
    return Rebased(seconds, extra, after_mb, time.perf_counter() - began)


def shared_fingerprints(before: np.ndarray, now: np.ndarray) -> int:
    """How many IMEIs one window flagged and the other did not; exits unless each saw SIMs
    that share a 16-bit fingerprint (which the compact window counts once: mostly a flag
    missed, now and then one raised later, by a SIM the window before had kept out)."""
    differ = np.setxor1d(before, now)
    sims = own_imsi(differ)[:, None] + np.arange(4, dtype=np.uint64)  # all four it may see
    fps = np.sort(fingerprint(sims.ravel()).reshape(sims.shape), axis=1)
    unexplained = differ[~(fps[:, 1:] == fps[:, :-1]).any(axis=1)]
    if len(unexplained):
        raise SystemExit(f"the windows disagree on {len(unexplained):,} IMEIs whose SIMs' "
                         f"fingerprints differ, rows {unexplained[:5].tolist()}")
    return len(differ)


def baseline_bytes_per_imei(imeis: int, second: float, clones: float) -> tuple[float, int]:
    """The dict-of-dicts window: bytes per IMEI, and the flags it raised."""
    rng = np.random.default_rng(3)
    row, imsi, ts = traffic(np.arange(imeis), rng, second, clones)
    gc.collect()
    tracemalloc.start()
    seen: dict[int, dict[int, int]] = {}
    flagged: set[int] = set()
    limit = default_clones().distinct_imsis
    for r, i, t in zip(row.tolist(), imsi.tolist(), (ts // MS_PER_DAY).tolist()):
        sims = seen.setdefault(r, {})
        if i not in sims and sum(1 for d in sims.values()
                                 if t - d < default_clones().window_days) + 1 >= limit:
            flagged.add(r)
            continue
        sims[i] = t
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size / imeis, len(flagged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imeis", type=int, default=300_000_000)
    parser.add_argument("--second-sim", type=float, default=0.08,
                        help="share of IMEIs that also see a second SIM within the window")
    parser.add_argument("--clones", type=float, default=0.001,
                        help="share that see three more SIMs: these must be flagged")
    parser.add_argument("--baseline-imeis", type=int, default=1_000_000)
    parser.add_argument("--no-before", dest="before", action="store_false",
                        help="skip the window before issue 21")
    args = parser.parse_args()
    core = pin_to_one_core()
    say(f"clone window: {args.imeis:,} IMEIs, {args.second_sim:.0%} with a second SIM, "
        f"{args.clones:.1%} cloned, core {core}")

    index = KeyIndex.from_sorted_keys(np.arange(args.imeis, dtype=np.uint64))
    now = measured(partial(CloneWindow, index, default_clones()), args, rebase=True)
    events, flags, seconds = now.events, len(now.flagged), now.seconds
    grown_mb, peak_mb = now.grown_mb, now.peak_rss_mb
    per_imei = grown_mb * MIB / args.imeis
    say(f"  window: {grown_mb / 1024:.2f} GiB resident ({per_imei:.1f} bytes an IMEI; "
        f"arrays {now.nbytes / MIB / 1024:.2f} GiB, {now.more_sims:,} IMEIs with more "
        f"SIMs), {events:,} events, {flags:,} flags, {events / seconds:,.0f} events/s")
    moved = now.rebase
    say(f"  moved to the next generation in {moved.seconds:.1f} s, holding at most "
        f"{moved.extra_mb:,.0f} MB more meanwhile; {moved.window_mb / 1024:.2f} GiB after; "
        f"an attach {SWEEP_AFTER_DAYS} days later swept every row in {moved.sweep_s:.1f} s")
    before: dict[str, object] = {}
    if args.before:
        then = measured(partial(ReferenceCloneWindow, index, default_clones()), args)
        peak_mb = max(peak_mb, then.peak_rss_mb)
        say(f"  before issue 21: {then.grown_mb / 1024:.2f} GiB resident "
            f"({then.grown_mb * MIB / args.imeis:.1f} bytes an IMEI), {len(then.flagged):,} "
            f"flags, {events / then.seconds:,.0f} events/s")
        differ = shared_fingerprints(then.flagged, now.flagged)
        say(f"  flagged by one window and not the other: {differ:,} IMEIs, every one seen "
            f"with SIMs that share a 16-bit fingerprint")
        before = {"flags_differing_by_fingerprints": differ,
                  "window_gib_before": round(then.grown_mb / 1024, 2),
                  "window_bytes_per_imei_before": round(then.grown_mb * MIB / args.imeis, 1),
                  "events_per_s_before": round(events / then.seconds)}

    base_per_imei, base_flags = baseline_bytes_per_imei(args.baseline_imeis, args.second_sim,
                                                        args.clones)
    scaled_gib = base_per_imei * args.imeis / MIB / 1024
    say(f"  baseline dict of dicts: {base_per_imei:.0f} bytes an IMEI "
        f"({base_flags:,} flags of {args.baseline_imeis:,}), {scaled_gib:.0f} GiB at "
        f"{args.imeis:,}: {base_per_imei / per_imei:.1f} x the window")
    expected = round(args.imeis * args.clones)
    emit({"imeis": args.imeis, "second_sim_share": args.second_sim,
          "clone_share": args.clones, "events": events, "flags": flags,
          "flags_expected_about": expected, "window_gib": round(grown_mb / 1024, 2),
          "window_bytes_per_imei": round(per_imei, 1),
          "window_array_gib": round(now.nbytes / MIB / 1024, 2),
          "imeis_with_more_sims": now.more_sims, "events_per_s": round(events / seconds),
          "rebase_s": round(moved.seconds, 1), "rebase_extra_mb": round(moved.extra_mb),
          "window_gib_after_rebase": round(moved.window_mb / 1024, 2),
          "sweep_s": round(moved.sweep_s, 2), **before,
          "peak_rss_gib": round(max(peak_mb, peak_rss_mb()) / 1024, 2),
          "baseline_bytes_per_imei": round(base_per_imei), "baseline_scaled_gib":
          round(scaled_gib, 1), "ratio": round(base_per_imei / per_imei, 1), "cores": 1})


if __name__ == "__main__":
    main()
