"""National-scale state: build time, snapshot load time and resident memory.

    python bench/country.py --imeis 300000000 [--devices N] [--dir DIR]

Three stages, each in a fresh process so that one's memory does not count against another:
  build  builds a synthetic country (default: every device dual-SIM, devices = imeis / 2)
         and writes its snapshot;
  load   loads the snapshot the way the worker starts, measures resident memory, and
         decides 1 M attach events against it;
  dicts  the baseline: the same registry as Python dicts (IMEI -> device, device -> owner)
         for 1 M devices, its memory extrapolated to the country.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from measure import best_of, emit, peak_rss_mb, pin_to_one_core, rss_mb, run_stage, say

from enforcer.engine.decide import decide
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import load_snapshot, save_snapshot
from enforcer.embedded.synth import (CountrySpec, TrafficMix, attach_traffic, build_country,
                                     country_from_state)
from rules.policy import load_policy

DICT_SAMPLE_DEVICES = 1_000_000
DECIDE_EVENTS = 1_000_000
START_MS = 1_790_000_000_000


def stage_build(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    country = build_country(CountrySpec(devices=args.devices, imeis=args.imeis))
    build_s = time.perf_counter() - started
    state = EnforcementState(country.lists, country.devices, load_policy())
    started = time.perf_counter()
    target = save_snapshot(state, args.dir)
    save_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return {"build_s": round(build_s, 1), "save_s": round(save_s, 1),
            "snapshot_bytes": size, "build_peak_rss_mb": round(peak_rss_mb())}


def stage_load(args: argparse.Namespace) -> dict:
    pin_to_one_core()
    before = rss_mb()
    started = time.perf_counter()
    state = load_snapshot(args.dir, load_policy())
    load_s = time.perf_counter() - started
    resident, load_peak = rss_mb(), peak_rss_mb()
    stats = state.lists.stats()
    country = country_from_state(state)
    batch = attach_traffic(country, DECIDE_EVENTS, TrafficMix(), seed=1, start_ms=START_MS)
    del country
    took, _ = best_of(3, lambda: decide(batch, state))
    return {"load_s": round(load_s, 1), "rss_mb": round(resident),
            "interpreter_mb": round(before), "load_peak_rss_mb": round(load_peak),
            "white_index_mb": round(stats["white"]["index_bytes"] / 2**20),
            "registry_mb": round(state.devices.nbytes / 2**20),
            "decisions_per_s_national": round(DECIDE_EVENTS / took),
            "imeis": stats["white"]["count"], "devices": state.devices.count}


def stage_dicts(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(3)
    n = DICT_SAMPLE_DEVICES
    per_device = args.imeis / args.devices
    keys = rng.integers(35 * 10**12, 36 * 10**12, int(n * per_device), dtype=np.uint64).tolist()
    owners = rng.integers(989 * 10**9, 990 * 10**9, n, dtype=np.uint64).tolist()
    before = rss_mb()
    device_of = {k: i % n for i, k in enumerate(keys)}
    owner_of = {i: o for i, o in enumerate(owners)}
    white = set(keys)
    used = rss_mb() - before
    return {"dict_entries": len(device_of) + len(owner_of) + len(white),
            "dict_mb_per_million_devices": round(used),
            "dict_mb_extrapolated": round(used * args.devices / n)}


def stage(name: str, args: argparse.Namespace) -> dict:
    return run_stage(__file__, name, "--imeis", str(args.imeis), "--devices", str(args.devices),
                     "--dir", str(args.dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imeis", type=int, default=300_000_000)
    parser.add_argument("--devices", type=int, help="default: imeis / 2")
    parser.add_argument("--dir", type=Path, help="snapshot directory (default: a temporary one)")
    parser.add_argument("--stage", choices=("build", "load", "dicts"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.devices = args.devices or args.imeis // 2
    if args.stage:
        emit({"build": stage_build, "load": stage_load, "dicts": stage_dicts}[args.stage](args))
        return
    scratch = args.dir is None
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="eir-country-"))
    try:
        say(f"building {args.devices:,} devices with {args.imeis:,} IMEIs ...")
        built = stage("build", args)
        say(f"  built in {built['build_s']} s, snapshot written in {built['save_s']} s "
            f"({built['snapshot_bytes'] / 2**30:.2f} GiB)")
        loaded = stage("load", args)
        say(f"  snapshot loaded in {loaded['load_s']} s; resident {loaded['rss_mb']:,} MB "
            f"(white list {loaded['white_index_mb']} MB as its index, registry "
            f"{loaded['registry_mb']:,} MB); "
            f"{loaded['decisions_per_s_national']:,} decisions/s at this scale")
        dicts = stage("dicts", args)
        say(f"  baseline: Python dicts take {dicts['dict_mb_per_million_devices']} MB per "
            f"million devices, {dicts['dict_mb_extrapolated']:,} MB for this country")
        emit({"imeis": args.imeis, "devices": args.devices, **built, **loaded, **dicts,
              "memory_ratio_vs_dicts": round(dicts["dict_mb_extrapolated"]
                                             / loaded["rss_mb"], 1)})
    finally:
        if scratch:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
