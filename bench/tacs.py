"""The TAC database at the GSMA's size: reading the file, memory, and a batch's lookups.

    python bench/tacs.py [--tacs 200000] [--batch 10000]

Writes a plain TAC file (gzip) of `--tacs` TACs with made-up makes and models (a few
thousand makers, names of GSMA-like length), reads it as `registry import --kind tac` does,
and prints the read's time, the database's bytes, the RSS it added, and the time of one
batch's lookup (TAC row, radios) against the decision of the same batch without it; the
last line is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np

from measure import best_of, emit, pin_to_one_core, rss_mb, say

from enforcer.engine.imei import SNR_SPACE
from enforcer.files.tacfile import TacFileReader

MAKERS = 3_000
RAT_WORDS = ("GERAN", "GERAN UTRAN", "GERAN UTRAN LTE", "GERAN UTRAN LTE NR", "LTE")


def write_file(path: Path, tacs: np.ndarray, rng: np.random.Generator) -> None:
    kinds = ("smartphone", "feature phone", "tablet", "modem", "iot device")
    with gzip.open(path, "wt") as out:
        out.write("tac,manufacturer,model,device_type,rats\n")
        for tac in tacs.tolist():
            maker = int(rng.integers(MAKERS))
            out.write(f"{tac:08d},Maker {maker} Ltd,Model {tac % 99_991}-{maker} Pro,"
                      f"{kinds[tac % len(kinds)]},{RAT_WORDS[tac % len(RAT_WORDS)]}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tacs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    core = pin_to_one_core()
    rng = np.random.default_rng(1)
    tacs = np.unique(rng.integers(1_000_000, 99_999_999, size=args.tacs * 2))[:args.tacs]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "tac.csv.gz"
        write_file(path, tacs, rng)
        before = rss_mb()
        began = time.perf_counter()
        database, report = TacFileReader(100_000, 10).read(path)
        read_s = time.perf_counter() - began
    added_mb = rss_mb() - before
    say(f"read {report.loaded:,} TACs in {read_s:.2f} s (core {core}); database "
        f"{database.nbytes / 2**20:.1f} MB, RSS +{added_mb:.0f} MB after the read")
    # Half the batch of allocated TACs, half not: the lookup's worst mix.
    chosen = np.where(rng.random(args.batch) < 0.5, rng.choice(tacs, args.batch),
                      rng.integers(0, 99_999_999, args.batch))
    keys = np.sort(chosen.astype(np.uint64) * np.uint64(SNR_SPACE)
                   + rng.integers(0, SNR_SPACE, args.batch).astype(np.uint64))

    def lookup() -> object:
        rows = database.rows(keys)
        return database.rats[np.maximum(rows, 0)]

    took, _ = best_of(args.runs, lookup)
    per_key_ns = took / args.batch * 1e9
    say(f"lookup of a {args.batch:,} batch: {took * 1e3:.3f} ms ({per_key_ns:.0f} ns a key)")
    emit({"tacs": report.loaded, "read_s": round(read_s, 2),
          "database_mb": round(database.nbytes / 2**20, 2), "rss_added_mb": round(added_mb),
          "batch": args.batch, "lookup_ms": round(took * 1e3, 3),
          "lookup_ns_per_key": round(per_key_ns)})


if __name__ == "__main__":
    main()
