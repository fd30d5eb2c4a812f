"""A national white list imported into a state with devices, and a year of registry changes
folded into it: time and peak memory, against reading the list line by line.

    python bench/importing.py --rows 300000000 [--dir DIR]

Stages, each in a fresh process so that one's memory does not count against another:
  prepare  builds a synthetic country of --rows registered IMEIs on --rows / 2 devices
           (`bench/country.py`'s) and writes its snapshot, lists and devices;
  list     writes the next national white list as CSV (15 digits with check digit, one a
           line): the country's IMEIs without every 1,000th (their devices leave) and 1 %
           more, new IMEIs of TACs the country does not use;
  import   `registry import --kind white` as the command runs it: load, stream the file,
           compare, check, realign the devices, save; wall time and peak resident memory,
           and where it peaks (the stack's project frames: `peak_at`);
  fold     the fold job's process: load the imported snapshot, lay a year of registry
           changes over it (the overlay's maps built from columns: `YEAR` below, scaled to
           --rows), fold, save; wall time and peak resident memory, and where
           (`fold_peak_at`);
  baseline the same file's first rows read line by line (the reader's general path), to
           give the block reader's speed-up measured in the same run.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np

from measure import PeakWhere, emit, peak_rss_mb, rss_mb, run_stage, say

from enforcer.engine.imei import imei_rules
from enforcer.config import load_config
from enforcer.engine.digits import luhn_digits
from enforcer.engine.imei import KEY_DIGITS, SNR_SPACE
from enforcer.engine.devices import NO_DEVICE, SLOT_BITS, SOURCES, Source
from enforcer.engine.fold import fold
from enforcer.engine.keyindex import sorted_unique
from enforcer.engine.overlay import _DAY_BITS, Overlay
from enforcer.files.importing import Kind, import_file
from enforcer.files.listfile import ListFileReader, LoadReport
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import SnapshotDraft, load_snapshot, save_snapshot
from enforcer.embedded.synth import MSISDN_BASE, MSISDN_SPAN, CountrySpec, build_country
from rules.policy import load_policy

NEW_EVERY = 100  # 1 % registered since the current snapshot: the import adds them
GONE_EVERY = 1000  # 0.1 % no longer registered: the import leaves their devices out
NATIONAL_ROWS = 300_000_000
# A year of registry changes at a national registry's 100,000 a day, at NATIONAL_ROWS:
# devices registered (half dual-SIM, each then activated: an owner), snapshot devices
# deregistered, repaired (one IMEI replaced), transferred (a new owner), IMEIs black-listed.
YEAR = {"registered": 8_000_000, "deregistered": 1_000_000, "repaired": 500_000,
        "transferred": 15_000_000, "black_listed": 1_500_000}
DAY_OF_THE_YEAR = date(2027, 1, 1)
BASELINE_ROWS = 2_000_000
WRITE_ROWS = 10_000_000  # keys turned into CSV lines at a time


def write_csv(keys: np.ndarray, path: Path) -> None:
    powers = np.uint64(10) ** np.arange(KEY_DIGITS - 1, -1, -1, dtype=np.uint64)
    with path.open("wb") as out:
        for start in range(0, len(keys), WRITE_ROWS):
            chunk = keys[start:start + WRITE_ROWS]
            digits = ((chunk[:, None] // powers) % np.uint64(10)).astype(np.uint8) + ord("0")
            lines = np.empty((len(chunk), KEY_DIGITS + 2), np.uint8)
            lines[:, :KEY_DIGITS] = digits
            lines[:, KEY_DIGITS] = luhn_digits(digits) + ord("0")
            lines[:, KEY_DIGITS + 1] = ord("\n")
            lines.tofile(out)


def new_keys(rng: np.random.Generator, tacs: np.ndarray, count: int) -> np.ndarray:
    """`count` distinct keys or a few fewer, sorted, of the TACs `tacs`."""
    return sorted_unique(tacs[rng.integers(0, len(tacs), count)] * np.uint64(SNR_SPACE)
                         + rng.integers(0, SNR_SPACE, count, dtype=np.uint64))


def stage_prepare(args: argparse.Namespace) -> dict:
    country = build_country(CountrySpec(devices=args.rows // 2, imeis=args.rows))
    save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                  args.dir / "state")
    np.save(args.dir / "spare-tacs.npy", country.unregistered_tacs)
    return {"imeis": len(country.lists.white_index), "devices": country.devices.count}


def stage_list(args: argparse.Namespace) -> dict:
    """The next white list, from the saved snapshot's: in a process of its own, so that the
    country's build (11.6 GB at its peak) has given its memory back."""
    keys = load_snapshot(args.dir / "state", load_policy()).lists.white_index.keys()
    kept = np.ones(len(keys), dtype=bool)
    kept[::GONE_EVERY] = False
    listed = keys[kept]
    del keys, kept
    # Sorted and deduplicated by sorting: numpy 2's union1d hashes, for ever at this size.
    listed = sorted_unique(np.concatenate([listed, new_keys(
        np.random.default_rng(1), np.load(args.dir / "spare-tacs.npy"),
        args.rows // NEW_EVERY)]))
    write_csv(listed, args.dir / "white.csv")
    return {"listed": len(listed), "file_bytes": (args.dir / "white.csv").stat().st_size}


def stage_import(args: argparse.Namespace) -> dict:
    config = load_config(environ={})
    started = time.perf_counter()
    state = load_snapshot(args.dir / "state", load_policy())  # as the command
    loaded = time.perf_counter()
    loaded_rss = rss_mb()
    with PeakWhere() as peak, SnapshotDraft(args.dir / "state",
                                            state.generation + 1) as draft:
        new, report = import_file(state, Kind.WHITE, args.dir / "white.csv", config,
                                  draft.column)
        imported = time.perf_counter()
        save_snapshot(new, args.dir / "state", draft)
    done = time.perf_counter()
    return {"load_s": round(loaded - started, 1),
            "read_diff_realign_s": round(imported - loaded, 1),
            "save_s": round(done - imported, 1), "total_s": round(done - started, 1),
            "loaded_rss_mb": round(loaded_rss), "peak_rss_mb": round(peak_rss_mb()),
            "peak_at": peak.at, "added": report.added, "removed": report.removed,
            "file_rows": report.file.rows,
            "devices": report.devices.devices,
            "devices_left_out": report.devices.left_out_unregistered}


def a_year(state: EnforcementState, spare_tacs: np.ndarray, scale: float) -> Overlay:
    """A year of registry changes (YEAR, times `scale`) as an overlay, its maps built from
    columns as a merge leaves them: applying tens of millions of events one by one would
    take the bench an hour and their objects more memory than the state."""
    rng = np.random.default_rng(2)
    year = {name: int(count * scale) for name, count in YEAR.items()}
    devices, index = state.devices, state.lists.white_index
    count = devices.count
    # Registered: new devices numbered after the snapshot's, half with a second IMEI.
    fresh = new_keys(rng, spare_tacs, year["registered"] * 3 // 2)
    fresh = fresh[~index.contains(fresh)]
    rng.shuffle(fresh)
    added = min(year["registered"], len(fresh) * 2 // 3)
    second = rng.random(added) < 0.5
    new_device = np.concatenate([np.arange(added), np.flatnonzero(second)]) + count
    new_slot = np.concatenate([np.zeros(added, np.uint32), np.ones(int(second.sum()),
                                                                    np.uint32)])
    new_keys_placed = fresh[:len(new_device)]
    # Deregistered and repaired: snapshot devices' IMEIs taken off, a repair's replaced.
    chosen = rng.choice(count, year["deregistered"] + year["repaired"], replace=False)
    rows = devices.first_slot.select_many(chosen)
    gone = index.keys_at(rows)
    dual = np.flatnonzero(devices.device_slots(np.minimum(rows + 1, len(index) - 1))
                          == (chosen.astype(np.uint32) << np.uint32(SLOT_BITS)) + 1)
    dual = dual[dual < year["deregistered"]]  # a repair replaces the first IMEI alone
    gone_keys = np.concatenate([gone, index.keys_at(rows[dual] + 1)])
    repaired = chosen[year["deregistered"]:]
    repair_keys = fresh[len(new_device):len(new_device) + len(repaired)]
    keys = np.concatenate([new_keys_placed, repair_keys, gone_keys])
    slots = np.concatenate([(new_device.astype(np.uint32) << np.uint32(SLOT_BITS)) | new_slot,
                            repaired[:len(repair_keys)].astype(np.uint32)
                            << np.uint32(SLOT_BITS),
                            np.full(len(gone_keys), NO_DEVICE, np.uint32)])
    order = np.argsort(keys)
    keys, slots = keys[order], slots[order]
    # Transferred, and every registered device activated: an owner each.
    owned = sorted_unique(np.concatenate([
        rng.integers(0, count, year["transferred"]), np.arange(count, count + added)]))
    black = new_keys(rng, spare_tacs, year["black_listed"])
    packed = np.uint64(SOURCES.index(Source.IMPORT) << _DAY_BITS
                       | DAY_OF_THE_YEAR.toordinal())
    none = np.zeros(0, np.uint64)
    return Overlay.from_frozen_arrays(count, {
        "imeis": (keys, slots),
        "owners": (owned.astype(np.uint64),
                   MSISDN_BASE + rng.integers(0, MSISDN_SPAN, len(owned), np.uint64)),
        "device_ids": (np.zeros(0, "U1"), none),
        "devices": (np.arange(count, count + added, dtype=np.uint64), np.full(added, packed)),
        "cartables": (none, np.zeros(0, np.uint32)),
        "operator_sims": (none, none, np.zeros(0, bool)),
        "black": (black, np.zeros(len(black), np.uint8))}, {})


def stage_fold(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    state = load_snapshot(args.dir / "state", load_policy())  # as the fold job
    loaded = time.perf_counter()
    overlay = a_year(state, np.load(args.dir / "spare-tacs.npy"), args.rows / NATIONAL_ROWS)
    state = replace(state, overlay=overlay)
    laid = time.perf_counter()
    laid_rss = rss_mb()
    with PeakWhere() as peak, SnapshotDraft(args.dir / "state",
                                            state.generation + 1) as draft:
        folded, report = fold(state, state.generation + 1, columns=draft.column,
                              spill=draft.spill)
        done_fold = time.perf_counter()
        save_snapshot(folded, args.dir / "state", draft)
    done = time.perf_counter()
    return {"fold_load_s": round(loaded - started, 1), "year_s": round(laid - loaded, 1),
            "fold_s": round(done_fold - laid, 1), "fold_save_s": round(done - done_fold, 1),
            "fold_total_s": round(loaded - started + done - laid, 1),
            "year_rss_mb": round(laid_rss), "fold_peak_rss_mb": round(peak_rss_mb()),
            "fold_peak_at": peak.at,
            "overlay_entries": report.entries, "fold_devices": report.devices,
            "devices_added": report.devices_added, "devices_gone": report.devices_gone}


def stage_baseline(args: argparse.Namespace) -> dict:
    config = load_config(environ={})
    sample = args.dir / "sample.csv"
    with (args.dir / "white.csv").open("rb") as src, sample.open("wb") as dst:
        for _ in range(BASELINE_ROWS):
            dst.write(src.readline())
    reader = ListFileReader(imei_rules(config), config.lists.csv_chunk_lines, 20)
    started = time.perf_counter()
    reader.read_white(sample)
    block_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in reader._chunks(sample, LoadReport(str(sample)), False, reader.zero_stripped()):
        pass
    line_s = time.perf_counter() - started
    return {"sample_rows": BASELINE_ROWS, "block_rows_per_s": round(BASELINE_ROWS / block_s),
            "line_rows_per_s": round(BASELINE_ROWS / line_s)}


STAGES = {"prepare": stage_prepare, "list": stage_list, "import": stage_import,
          "fold": stage_fold, "baseline": stage_baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--stage", choices=sorted(STAGES))
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args)))
        return
    scratch = args.dir or Path(tempfile.mkdtemp(prefix="eir-import-"))
    scratch.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {}
    try:
        for stage in ("prepare", "list", "import", "fold", "baseline"):
            say(f"{stage} ({args.rows:,} rows) ...")
            result = run_stage(__file__, stage, "--rows", str(args.rows), "--dir", str(scratch))
            say(f"  {result}")
            figures[stage] = result
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    speedup = figures["baseline"]["block_rows_per_s"] / figures["baseline"]["line_rows_per_s"]
    emit({"rows": args.rows, **figures["import"], **figures["fold"],
          "block_vs_line_reader": round(speedup, 1)})


if __name__ == "__main__":
    main()
