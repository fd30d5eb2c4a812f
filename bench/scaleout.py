"""Scale-out: one worker process against two in one consumer group, on the same topic.

    python bench/scaleout.py [--events 2000000] [--devices 1000000] [--client kafka-python]

Pre-loads the attach topic (four partitions) with --events attaches of owned devices, 95 %
repeating a pair seen within the hour (the steady state of bench/pipeline.py). Then one
worker process (`eir-enforcer run`) consumes it all in its own group, and after it two
worker processes in another group, the history emptied in between. Each rate is taken from
the group's committed offsets, from the first 10 % of the topic to all of it, so that
starting the processes and joining the group are not counted. The last line is JSON with
both rates and their ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from measure import embedded_services, emit, say

from enforcer.db.migrate import migrate
from tests.harness.faults import committed
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.embedded.synth import CountrySpec, build_country
from pipeline import steady_traffic
from rules.policy import load_policy

TOPIC = "attach-scaleout"
PARTITIONS = 4
STARTED_SHARE = 0.10  # the clock starts once this share of the topic is committed
POLL_S = 0.2
SESSION_TIMEOUT_MS = 6000
TIMEOUT_S = 1800


def preload(bootstrap: str, batch: list[tuple[bytes, bytes]]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
    for key, value in batch:
        producer.send(TOPIC, key=key, value=value)
    producer.flush()
    producer.close()


def run_group(env: dict[str, str], workers: int, group: str, total: int) -> float:
    """Events a second of `workers` processes in one group, between STARTED_SHARE of the
    topic committed and all of it."""
    env = {**os.environ, **env, "EIR_KAFKA__GROUP_ID": group}
    processes = [subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "enforcer.app.cli", "run"], env={**env, "EIR_WORKER__NAME": f"w{i}"},
        stdout=subprocess.DEVNULL) for i in range(workers)]
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        started_at, started_with = None, 0
        while True:
            done = committed(bootstrap, group, TOPIC)
            if started_at is None and done >= STARTED_SHARE * total:
                started_at, started_with = time.perf_counter(), done
            if done >= total:
                return (total - started_with) / (time.perf_counter() - started_at)
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit(f"{workers} worker(s) stopped at {done:,} of {total:,}")
            time.sleep(POLL_S)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--client", default="kafka-python", help="kafka.client of the workers")
    args = parser.parse_args()
    with embedded_services("eir-scaleout-") as (services, scratch):
        env = {"EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
               "EIR_KAFKA__CLIENT": args.client, "EIR_KAFKA__ATTACH_TOPIC": TOPIC,
               "EIR_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
               "EIR_POSTGRES__DSN": services.postgres.dsn,
               "EIR_STATE__DIR": str(scratch / "state"), "EIR_HTTP__PORT": "0",
               "EIR_JOBS__RECONCILE_CRON": "", "EIR_JOBS__CONSISTENCY_CRON": "",
               "EIR_JOBS__RETENTION_CRON": ""}
        migrate(services.postgres.dsn)
        country = build_country(CountrySpec(devices=args.devices))
        save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                      Path(env["EIR_STATE__DIR"]))
        # The warm-up pass is left out: the rate is measured from 10 % of the topic on.
        _, measured = steady_traffic(country, args.events, np.random.default_rng(7))
        say(f"pre-loading {args.events:,} attach events on {PARTITIONS} partitions ...")
        preload(services.broker.bootstrap, measured)

        rates = {}
        for workers in (1, 2):
            with psycopg.connect(services.postgres.dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE slot_usage")
            rates[workers] = run_group(env, workers, f"scaleout-{workers}", args.events)
            say(f"{workers} worker process(es), {args.client}: {rates[workers]:,.0f} events/s")
        emit({"events": args.events, "partitions": PARTITIONS, "client": args.client,
              "cores": len(os.sched_getaffinity(0)), "one_worker_per_s": round(rates[1]),
              "two_workers_per_s": round(rates[2]), "ratio": round(rates[2] / rates[1], 2)})


if __name__ == "__main__":
    main()
