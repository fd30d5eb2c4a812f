"""A national white list imported: time and peak memory, against reading it line by line.

    python bench/importing.py --rows 300000000 [--dir DIR]

Stages, each in a fresh process so that one's memory does not count against another:
  prepare  builds a synthetic country of --rows registered IMEIs and writes (a) a snapshot
           of its white list without every 100th of them, with no devices, and (b) the
           national white list of all of them as CSV (15 digits with check digit, one a line);
  import   `registry import --kind white` as the command runs it: stream the file, compare,
           check, swap; wall time and peak resident memory;
  baseline the same file's first rows read line by line (the reader's general path), to
           give the block reader's speed-up measured in the same run.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from measure import emit, peak_rss_mb, say

from enforcer.engine.imei import imei_rules
from enforcer.config import load_config
from enforcer.engine.digits import luhn_digits
from enforcer.engine.imei import KEY_DIGITS
from enforcer.files.importing import Kind, import_file
from enforcer.files.listfile import ListFileReader, LoadReport
from enforcer.engine.lists import Lists, keys_of
from enforcer.engine.devices import Devices
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import load_snapshot, save_snapshot
from enforcer.embedded.synth import CountrySpec, build_country
from rules.policy import load_policy

MISSING_EVERY = 100  # 1 % registered since the current snapshot: the import adds them
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


def stage_prepare(args: argparse.Namespace) -> dict:
    keys = keys_of(build_country(CountrySpec(devices=args.rows // 2, imeis=args.rows))
                   .lists.white).copy()  # the country goes: only its keys are needed
    write_csv(keys, args.dir / "white.csv")
    current = keys[np.arange(len(keys)) % MISSING_EVERY != 0]  # sorted, as keys are
    del keys
    lists = Lists.build(1, bitmap_from_sorted_keys(current))
    save_snapshot(EnforcementState(lists, Devices.empty(len(lists.white_index)),
                                   load_policy()), args.dir / "state")
    return {"current": len(current),
            "file_bytes": (args.dir / "white.csv").stat().st_size}


def stage_import(args: argparse.Namespace) -> dict:
    config = load_config(environ={})
    started = time.perf_counter()
    state = load_snapshot(args.dir / "state", load_policy())
    loaded = time.perf_counter()
    new, report = import_file(state, Kind.WHITE, args.dir / "white.csv", config)
    imported = time.perf_counter()
    save_snapshot(new, args.dir / "state")
    done = time.perf_counter()
    return {"load_s": round(loaded - started, 1), "read_and_diff_s": round(imported - loaded, 1),
            "save_s": round(done - imported, 1), "total_s": round(done - started, 1),
            "peak_rss_mb": round(peak_rss_mb()), "added": report.added,
            "removed": report.removed, "rows": report.file.rows}


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


STAGES = {"prepare": stage_prepare, "import": stage_import, "baseline": stage_baseline}


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
        for stage in ("prepare", "import", "baseline"):
            say(f"{stage} ({args.rows:,} rows) ...")
            # This very script, run by this interpreter: no outside input reaches the command.
            out = subprocess.run(  # noqa: S603
                [sys.executable, __file__, "--stage", stage, "--rows", str(args.rows),
                 "--dir", str(scratch)], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            say(f"  {result}")
            figures[stage] = result
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    speedup = figures["baseline"]["block_rows_per_s"] / figures["baseline"]["line_rows_per_s"]
    emit({"rows": args.rows, **figures["import"],
          "block_vs_line_reader": round(speedup, 1)})


if __name__ == "__main__":
    main()
