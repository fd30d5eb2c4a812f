"""The registry thread's ceiling: how many registry changes a second a real `eir-enforcer run`
worker applies while it is behind, and the worker's CPU a change.

    python bench/catchup.py [--devices 1000000] [--changes 100000] [--rounds 3]
                            [--baseline DIR] [--seed 7]

Issue 20's compressed year offers the worker 5,000 changes a second; a fold's process, an
adoption or a slower host leaves it behind for a while, and how fast it catches up decides
how long that lasts (docs/benchmarks.md, the year). Here a worker on the year's country and
settings (bench/year.py: its changes, topics and client; the jobs off, no attaches) is
started on embedded services of its own; each round produces --changes changes at once and
times them until applied (`eir_registry_events_total{outcome="applied"}`, scraped every
SCRAPE_S), with the worker's CPU seconds over them (`process_cpu_seconds_total`).

With --baseline DIR (a checkout of another commit, say `git worktree add DIR COMMIT`), a
worker of that checkout does the same with the same changes, on services of its own, and
the two take turns (baseline, this tree, this tree, baseline), because this machine's speed
moves by a fifth within minutes. The figures are the median of each side's rounds. Last
line JSON: `changes_per_s`, `us_per_change`, and with a baseline `baseline_changes_per_s`,
`baseline_us_per_change` and `ratio` (this tree's rate over the baseline's).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from measure import embedded_services, emit, say, wait_ready

from consumers.publish import Publication
from enforcer.clock import MS_PER_DAY
from enforcer.db.migrate import migrate
from enforcer.embedded.services import free_port
from enforcer.embedded.synth import Country, CountrySpec, build_country
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from rules.policy import DEFAULT_POLICY
from tests.harness.faults import WorkerProcess
from year import (APPLIED, ATTACH_TOPIC, CPU, REGISTRY_TOPIC, START_MS, Changes, Feed,
                  scrape)

SCRAPE_S = 0.05
READY_TIMEOUT_S = 600
FLUSH_S = 60.0
ROUND_TIMEOUT_S = 600
US_PER_S = 1e6


def run(country: Country, args, tree: Path | None) -> list[tuple[float, float]]:
    """One worker (of `tree`, or of this checkout) through the rounds: (changes a second,
    worker CPU µs a change) of each."""
    with embedded_services("eir-catchup-") as (services, scratch):
        port = free_port()
        env = {"EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
               "EIR_KAFKA__CLIENT": "confluent", "EIR_KAFKA__ATTACH_TOPIC": ATTACH_TOPIC,
               "EIR_KAFKA__REGISTRY_TOPIC": REGISTRY_TOPIC, "EIR_KAFKA__GROUP_ID": "catchup",
               "EIR_POSTGRES__DSN": services.postgres.dsn,
               "EIR_STATE__DIR": str(scratch / "state"), "EIR_HTTP__PORT": str(port),
               "EIR_JOBS__RECONCILE_CRON": "", "EIR_JOBS__CONSISTENCY_CRON": "",
               "EIR_JOBS__FOLD_CRON": "", "EIR_JOBS__RETENTION_CRON": ""}
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        migrate(services.postgres.dsn)
        feed = Feed(services.broker)
        save_snapshot(EnforcementState(country.lists, country.devices, DEFAULT_POLICY),
                      Path(env["EIR_STATE__DIR"]))
        changes = Changes(country, args.seed)
        url = f"http://127.0.0.1:{port}/metrics"
        out = []
        with WorkerProcess(env, scratch / "clock") as worker:
            worker.set_time(START_MS)
            worker.start()
            wait_ready(port, READY_TIMEOUT_S, SCRAPE_S)
            applied = 0
            for day in range(args.rounds):
                now_ms = START_MS + day * MS_PER_DAY
                worker.set_time(now_ms)
                events = changes.take(args.changes, now_ms)
                before = scrape(url)
                started = time.monotonic()
                feed.producer.publish([Publication(REGISTRY_TOPIC, None, e) for e in events],
                                      FLUSH_S)
                applied += len(events)
                while scrape(url).get(APPLIED, 0.0) < applied:
                    if time.monotonic() - started > ROUND_TIMEOUT_S:
                        raise TimeoutError(f"round {day + 1} not applied in "
                                           f"{ROUND_TIMEOUT_S} s")
                    time.sleep(SCRAPE_S)
                seconds = time.monotonic() - started
                cpu = scrape(url).get(CPU, 0.0) - before.get(CPU, 0.0)
                out.append((len(events) / seconds, cpu / len(events) * US_PER_S))
        feed.producer.close()
        return out


def median(rounds: list[tuple[float, float]], field: int) -> float:
    return statistics.median(r[field] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100_000, help="a round's")
    parser.add_argument("--rounds", type=int, default=3, help="a worker's")
    parser.add_argument("--baseline", type=Path, help="a checkout of the commit to compare")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "enforcer").is_dir():
        raise SystemExit(f"--baseline {args.baseline}: not a checkout of eir-enforcer")
    country = build_country(CountrySpec(devices=args.devices))
    turns = [None] if args.baseline is None else [args.baseline, None, None, args.baseline]
    mine: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for tree in turns:
        rounds = run(country, args, tree)
        (mine if tree is None else theirs).extend(rounds)
        say(f"{'baseline' if tree else 'this tree'}: " + ", ".join(
            f"{rate:,.0f}/s ({us:.0f} µs)" for rate, us in rounds))
    figures: dict[str, object] = {
        "devices": args.devices, "changes": args.changes, "rounds": args.rounds,
        "changes_per_s": round(median(mine, 0)), "us_per_change": round(median(mine, 1), 1)}
    if theirs:
        figures |= {"baseline_changes_per_s": round(median(theirs, 0)),
                    "baseline_us_per_change": round(median(theirs, 1), 1),
                    "ratio": round(median(mine, 0) / median(theirs, 0), 3)}
    emit(figures)


if __name__ == "__main__":
    main()
