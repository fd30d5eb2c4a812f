"""The subscribers' numbers by IMSI at a country's size: memory, a build, what a follow round
and a merge cost, and a batch's lookups.

    python bench/subscribers.py [--subscribers 80000000] [--learn 100000] [--batch 10000]

Makes `--subscribers` home IMSIs (432-11 and a 10-digit MSIN, unique) with numbers of Iran's
mobile range (98 9xx xxx xxxx), in IMSI order as `serve` reads them from PostgreSQL (in no
order with `--unsorted`), and builds the map `serve` holds
(`enforcer.engine.numbers.MsisdnsByImsi.of`). Then lays over it
`--learn` pairs in follow rounds of `--round` (half new IMSIs, half a new number), merges them,
and looks up a batch of `--batch` IMSIs (half known), as an S13 batch does. Prints the map's
bytes a subscriber, the RSS it holds once the inputs are freed, the peak while building; the
last line is JSON.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from measure import best_of, emit, peak_rss_mb, pin_to_one_core, rss_mb, say

from enforcer.engine.numbers import MsisdnsByImsi

HOME_PREFIX = 43211 * 10**10  # MCC 432, MNC 11, then a 10-digit MSIN
MSIN_SPACE = 10**10
MOBILE_RANGE = (989_000_000_000, 989_999_999_999)


def home_imsis(n: int, rng: np.random.Generator, shuffled: bool) -> np.ndarray:
    """n unique IMSIs spread over the MSIN space, in order or shuffled."""
    stride = MSIN_SPACE // n
    imsis = np.arange(n, dtype=np.uint64) * np.uint64(stride)
    imsis += rng.integers(0, stride, n, dtype=np.uint64)
    imsis += np.uint64(HOME_PREFIX)
    if shuffled:
        rng.shuffle(imsis)
    return imsis


def numbers(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(*MOBILE_RANGE, n, dtype=np.uint64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=80_000_000)
    parser.add_argument("--learn", type=int, default=100_000)
    parser.add_argument("--round", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--unsorted", action="store_true",
                        help="IMSIs in no order: the map sorts them")
    args = parser.parse_args()
    core = pin_to_one_core()
    rng = np.random.default_rng(1)
    n = args.subscribers

    baseline = rss_mb()
    imsis, msisdns = home_imsis(n, rng, args.unsorted), numbers(n, rng)
    inputs_mb = rss_mb() - baseline
    began = time.perf_counter()
    held = MsisdnsByImsi.of(imsis, msisdns)
    build_s = time.perf_counter() - began
    peak_mb = peak_rss_mb() - baseline
    known = imsis[rng.integers(0, n, args.learn + args.batch)]
    del imsis, msisdns  # sorted, they are the map's own keys now
    gc.collect()
    held_mb = rss_mb() - baseline - known.nbytes / 2**20
    per_subscriber = held.nbytes / n
    say(f"{n:,} subscribers (core {core}): built in {build_s:.1f} s, {per_subscriber:.2f} bytes "
        f"a subscriber ({held.nbytes / 2**20:,.0f} MiB of columns), RSS +{held_mb:,.0f} MiB "
        f"held; peak +{peak_mb:,.0f} MiB while building, the inputs' {inputs_mb:,.0f} MiB in it")

    # Follow rounds: half new subscribers, half a known IMSI with a new number.
    fresh = np.uint64(HOME_PREFIX) + rng.integers(0, MSIN_SPACE, args.learn // 2,
                                                  dtype=np.uint64)
    learned = np.concatenate([fresh, known[:args.learn - len(fresh)]])
    learned_numbers = numbers(len(learned), rng)
    rounds = []
    grown = held
    for start in range(0, len(learned), args.round):
        began = time.perf_counter()
        grown = grown.with_pairs(learned[start:start + args.round],
                                 learned_numbers[start:start + args.round])
        rounds.append(time.perf_counter() - began)
    merge_s, merged = best_of(1, grown.merged)
    say(f"{len(learned):,} pairs learned in rounds of {args.round:,}: a round "
        f"{np.median(rounds) * 1e3:.2f} ms (median), {max(rounds) * 1e3:.0f} ms at worst "
        f"(a merge at {grown.recent_max:,}); the merge of the last {grown.recent_size:,} "
        f"{merge_s:.2f} s")

    asked = np.concatenate([known[args.learn:args.learn + args.batch // 2],
                            np.uint64(HOME_PREFIX) + rng.integers(
                                0, MSIN_SPACE, args.batch - args.batch // 2, dtype=np.uint64)])
    lookup_s, _ = best_of(args.runs, lambda: merged.find(asked))
    say(f"a batch of {args.batch:,} IMSIs looked up in {lookup_s * 1e3:.2f} ms "
        f"({lookup_s / args.batch * 1e9:.0f} ns a key)")
    emit({"subscribers": n, "sorted": not args.unsorted, "build_s": round(build_s, 1),
          "bytes_per_subscriber": round(per_subscriber, 2),
          "columns_mib": round(held.nbytes / 2**20), "rss_held_mib": round(held_mb),
          "peak_build_mib": round(peak_mb), "inputs_mib": round(inputs_mb),
          "round": args.round, "round_ms_median": round(float(np.median(rounds)) * 1e3, 2),
          "round_ms_max": round(max(rounds) * 1e3), "merge_s": round(merge_s, 2),
          "batch": args.batch, "lookup_ms": round(lookup_s * 1e3, 3),
          "lookup_ns_per_key": round(lookup_s / args.batch * 1e9)})


if __name__ == "__main__":
    main()
