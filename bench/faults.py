"""Faults: a real worker process SIGKILLed at random moments while it replays attach traffic
that opens notices and carries them through their month.

    python bench/faults.py [--events 1000000] [--kills 10] [--devices 1000000]

Pre-loads --events attaches (FAULT_MIX of tests/harness/faults.py: 5 % on another cartable's
SIM, 3 % unregistered devices) on four partitions, starts `eir-enforcer run` on a clock
file, and kills it (SIGKILL) at random moments, starting it again at once: --kills minus
two while the attaches are consumed (each a random moment up to 2 s after the committed
offsets pass a random share of the topic), two while the notices past their deadline are
cut and sent. Between the two the clock moves to day 20, when the notices' subjects attach
again, and then past the 30-day deadline, so that every notice's subject must end cut: under
that notice, or the one that superseded it (a pair on an IMEI clone detection flagged is cut
under its `misuse` notice). `cut_under` counts the subjects by the kind of notice that cut
them; `cutoffs_missing` those cut under none.

Then, on fresh topics with --outage-events attaches each: the broker stopped for --outage-s
under a running worker and started again (tansu keeps nothing, so everything is produced
again), and PostgreSQL stopped for --outage-s while the second half of the traffic arrives.
The worker is never told; it must be alive after each, with every pair in the history, and
with no offset committed while the database was away. The last line is
JSON: events in, pairs recorded, steps sent, duplicates and losses (all of which must be 0).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import psycopg

from measure import embedded_services, emit, say

from enforcer.db.migrate import migrate
from enforcer.clock import MS_PER_DAY, MS_PER_HOUR
from tests.harness.faults import (KillPlan, Outage, WorkerProcess, month_under_kills,
                                  through_broker_outage, through_database_outage, traffic)
from enforcer.embedded.services import free_port
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.embedded.synth import CountrySpec, build_country
from rules.policy import load_policy

SWEEP_KILLS = 2
JITTER_S = 2.0
TIMEOUT_S = 1800
START_MS = 1_790_000_000_000  # 2026-09-21, a fixed day: the run repeats with its seed
OUTAGE_DAY = 40  # the outages' traffic comes after the month of the kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--client", default="kafka-python", help="kafka.client of the worker")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--outage-events", type=int, default=200_000)
    parser.add_argument("--outage-s", type=float, default=15.0)
    args = parser.parse_args()
    with embedded_services("eir-faults-") as (services, scratch):
        env = {"EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
               "EIR_KAFKA__CLIENT": args.client, "EIR_KAFKA__ATTACH_TOPIC": "attach-faults",
               "EIR_KAFKA__NOTIFICATIONS_TOPIC": "faults.notifications",
               "EIR_KAFKA__COMMANDS_TOPIC": "faults.commands",
               "EIR_KAFKA__GROUP_ID": "faults", "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
               "EIR_POSTGRES__DSN": services.postgres.dsn,
               "EIR_STATE__DIR": str(scratch / "state"), "EIR_HTTP__PORT": "0",
               "EIR_JOBS__RECONCILE_CRON": "", "EIR_JOBS__CONSISTENCY_CRON": "",
               "EIR_JOBS__RETENTION_CRON": "", "EIR_NOTICES__SWEEP_EVERY_S": "1",
               "EIR_NOTICES__QUIET_START": "00:00", "EIR_NOTICES__QUIET_END": "00:00"}
        migrate(services.postgres.dsn)
        country = build_country(CountrySpec(devices=args.devices))
        save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                      Path(env["EIR_STATE__DIR"]))
        sent = traffic(country, args.events, args.seed, START_MS)
        say(f"{args.events:,} attaches, {len(sent.first_seen):,} pairs; killing the worker "
            f"{args.kills} times ...")
        worker = WorkerProcess(env, scratch / "clock")
        started = time.perf_counter()
        plan = KillPlan(args.kills - SWEEP_KILLS, SWEEP_KILLS, JITTER_S, TIMEOUT_S)
        moments = random.Random(args.seed)  # noqa: S311 - kill moments, not secrets
        result = month_under_kills(worker, env, sent, START_MS, plan, moments)
        took = time.perf_counter() - started
        say(f"{worker.kills} kills in {took:,.0f} s: {result}")
        outages = [outage(services, env, country, args, scratch, service)
                   for service in ("kafka", "postgres")]
        emit({**asdict(result), "kills": worker.kills, "client": args.client,
              "cores": len(os.sched_getaffinity(0)), "seconds": round(took),
              "clean": result.clean(), "outages": [asdict(o) for o in outages]})


def outage(services, env: dict[str, str], country, args, scratch: Path,
           service: str) -> Outage:
    with psycopg.connect(services.postgres.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE slot_usage")
    env = {**env, "EIR_KAFKA__ATTACH_TOPIC": f"attach-{service}-outage",
           "EIR_KAFKA__GROUP_ID": f"{service}-outage", "EIR_HTTP__PORT": str(free_port())}
    start_ms = START_MS + OUTAGE_DAY * MS_PER_DAY
    sent = traffic(country, args.outage_events, args.seed, start_ms)
    worker = WorkerProcess(env, scratch / f"clock-{service}")
    worker.set_time(start_ms + len(sent.messages) + MS_PER_HOUR)
    with worker:
        if service == "kafka":
            result = through_broker_outage(worker, services.broker, env, sent, args.outage_s,
                                           TIMEOUT_S)
        else:
            result = through_database_outage(worker, services.postgres, env, sent,
                                             args.outage_s, TIMEOUT_S)
    say(f"{service} stopped for {args.outage_s:g} s: {result}")
    return result


if __name__ == "__main__":
    main()
