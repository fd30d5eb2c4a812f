"""The worker end to end against the raw Kafka client, on the embedded broker and database.

    python bench/pipeline.py [--events 1000000] [--devices 1000000]

Pre-loads the attach topic with a warm-up pass (every active pair once) and then --events
attaches of which 95 % repeat a pair seen within the hour (steady state). Measures, in the
same run and on the same topic, for each Kafka client (kafka-python, confluent-kafka): the
raw consume rate through the worker's consumer doing nothing with the messages, and the
worker's end-to-end rate (consume, decode, decide, history, commit) over the measured
events, with the database writes per event (the history is emptied between the clients).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import psycopg
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from measure import counter, embedded_services, emit, say

from consumers.kafka import CONFLUENT, KAFKA_PYTHON, attach_consumer
from enforcer.config import Config, load_config
from enforcer.db.migrate import migrate
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.embedded.synth import CountrySpec, build_country, home_imsi, owned_rows
from enforcer.app.worker import build_worker
from rules.policy import load_policy

TOPIC = "attach-bench"
REPEAT_SHARE = 0.95
ACTIVE_PAIRS = 100_000
HOUR_MS = 3_600_000
POLL_RECORDS = 20000  # the worker's default batch_max_events, for both sides
SPREAD_MS = 50 * 60_000  # every event inside one hour: the resolution bucket


def pairs(country, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (IMEI key, owner MSISDN) pairs of owned devices."""
    rows = owned_rows(rng, country.devices, n)
    owners = country.devices.owners(country.devices.device_slots(rows))
    return country.lists.white_index.keys_at(rows), owners


def messages(keys: np.ndarray, msisdns: np.ndarray, ts: np.ndarray) -> list[tuple[bytes, bytes]]:
    imsis = home_imsi(msisdns)
    return [(f"{k:014d}".encode(), msgspec.json.encode({"imei": f"{k:014d}", "imsi": str(i),
                                                        "msisdn": str(m), "ts": t}))
            for k, i, m, t in zip(keys.tolist(), imsis.tolist(), msisdns.tolist(), ts.tolist())]


def steady_traffic(country, events: int, rng: np.random.Generator
                   ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """A warm-up pass (every active pair once, at the start of the hour) and `events`
    attaches within the hour, REPEAT_SHARE of them an active pair again: the steady state."""
    start = (time.time_ns() // 1_000_000 // HOUR_MS - 1) * HOUR_MS
    active_keys, active_msisdns = pairs(country, ACTIVE_PAIRS, rng)
    warm = messages(active_keys, active_msisdns, np.full(len(active_keys), start))
    repeat = rng.random(events) < REPEAT_SHARE
    pick = rng.integers(0, len(active_keys), events)
    new_keys, new_msisdns = pairs(country, int((~repeat).sum()), rng)
    keys, msisdns = active_keys[pick], active_msisdns[pick]
    keys[~repeat], msisdns[~repeat] = new_keys, new_msisdns
    ts = start + 1 + np.sort(rng.integers(0, SPREAD_MS, events))
    return warm, messages(keys, msisdns, ts)


def preload(bootstrap: str, batches: list[list[tuple[bytes, bytes]]]) -> None:
    # One partition: the warm-up is consumed before every measured event, in order (the
    # broker's auto-created topics have four, which would interleave the two).
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
    for batch in batches:
        for key, value in batch:
            producer.send(TOPIC, key=key, value=value)
    producer.flush()
    producer.close()


def raw_consume(config: Config, total: int) -> float:
    consumer = attach_consumer(config.kafka, POLL_RECORDS)
    seen, started = 0, None
    while seen < total:
        got = len(consumer.poll(1000, POLL_RECORDS))
        if got and started is None:
            started = time.perf_counter()
        seen += got
    took = time.perf_counter() - started
    consumer.close()
    return total / took


def end_to_end(config: Config, warm: int, total: int) -> tuple[float, float]:
    """Events a second over the measured ones, and database row writes among them."""
    worker = build_worker(config)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    while counter(worker, "eir_events_consumed_total") < warm:
        time.sleep(0.01)
    t0, rows0 = time.perf_counter(), counter(worker, "eir_history_rows_written_total")
    while counter(worker, "eir_events_consumed_total") < total:
        time.sleep(0.01)
    took = time.perf_counter() - t0
    written = counter(worker, "eir_history_rows_written_total") - rows0
    stop.set()
    thread.join()
    worker.close()
    return (total - warm) / took, written


def with_client(config: Config, client: str, run: str) -> Config:
    """Its own consumer group, so that each run reads the topic from the beginning."""
    return replace(config, kafka=replace(config.kafka, client=client,
                                         group_id=f"bench-{run}-{client}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=1_000_000)
    args = parser.parse_args()
    with embedded_services("eir-pipeline-") as (services, scratch):
        config = load_config(environ={
            "EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
            "EIR_KAFKA__ATTACH_TOPIC": TOPIC, "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "EIR_POSTGRES__DSN": services.postgres.dsn, "EIR_STATE__DIR": str(scratch / "state"),
            "EIR_HTTP__PORT": "0", "EIR_WORKER__BATCH_MAX_EVENTS": str(POLL_RECORDS)})
        migrate(config.postgres.dsn)
        country = build_country(CountrySpec(devices=args.devices))
        save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                      Path(config.state.dir))
        warm, measured = steady_traffic(country, args.events, np.random.default_rng(11))
        total = len(warm) + len(measured)
        say(f"pre-loading {total:,} attach events ({len(warm):,} warm-up) ...")
        preload(services.broker.bootstrap, [warm, measured])

        figures: dict[str, dict[str, float]] = {}
        for client in (KAFKA_PYTHON, CONFLUENT):
            raw = raw_consume(with_client(config, client, "raw"), total)
            say(f"raw consume, {client}: {raw:,.0f} messages/s")
            with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE slot_usage")
            per_s, written = end_to_end(with_client(config, client, "worker"), len(warm), total)
            with psycopg.connect(config.postgres.dsn) as conn:
                (rows,) = conn.execute("SELECT count(*) FROM slot_usage").fetchone()
            say(f"worker end to end, {client}: {per_s:,.0f} events/s; "
                f"{written / len(measured):.4f} database row writes per event; slot_usage "
                f"holds {rows:,} rows")
            figures[client] = {"raw_consume_per_s": round(raw), "worker_per_s": round(per_s),
                               "ratio": round(per_s / raw, 3),
                               "db_writes_per_event": round(written / len(measured), 4),
                               "slot_usage_rows": rows}
        emit({"events": len(measured), "warmup_events": len(warm),
              "repeat_share": REPEAT_SHARE, **figures,
              "confluent_over_kafka_python": {
                  "raw": round(figures[CONFLUENT]["raw_consume_per_s"]
                               / figures[KAFKA_PYTHON]["raw_consume_per_s"], 2),
                  "worker": round(figures[CONFLUENT]["worker_per_s"]
                                  / figures[KAFKA_PYTHON]["worker_per_s"], 2)}})


if __name__ == "__main__":
    main()
