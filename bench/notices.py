"""The due sweep at national scale: due notices through the outbox onto Kafka.

    python bench/notices.py [--notices 10000000] [--due 500000] [--sweepers N]

Fills `notices` (embedded PostgreSQL) with --notices live notices of unregistered phones
(IMEI-scoped, as a country's backlog looks): three sets of --due notices fall due for their
warning an hour apart, the rest over the next four weeks. One worker's sweep
(`notices.sweepers` connections, FOR UPDATE SKIP LOCKED, a batch at a time) advances each
set, writes transitions and messages to the outbox, and the relay publishes them to the
embedded broker: timed until every due notice's warning is acknowledged. The first set goes
with the confluent-kafka client, the second with kafka-python. Baselines in the same run:
each client producing the rendered messages alone, and the database alone doing the third
set's writes (the state change, the transition, the outbox row, marking it sent) in SQL on
as many connections: the most any sweep could reach on this machine. The last line is JSON,
with the table's size on disk.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone

import psycopg
from prometheus_client import CollectorRegistry

from measure import embedded_services, emit, say

from consumers.kafka import CONFLUENT, KAFKA_PYTHON, outbox_reader, producer
from consumers.outbox import OutboxRelay
from consumers.publish import Publication, publish_all
from enforcer.clock import MS_PER_S, ManualClock
from enforcer.config import Config, load_config
from enforcer.db.migrate import migrate
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.notices.rounds import NoticeRounds
from enforcer.embedded.synth import CountrySpec, build_country
from metrics.notices import NoticeMetrics
from rules.policy import load_policy

TOPIC = "notifications-bench"
FILL_CHUNK = 1_000_000
UNREGISTERED_BASE = 86_000_000_000_000  # IMEI keys no synthetic country registers
IMSI_BASE = 432_110_000_000_000
MSISDN_BASE = 989_120_000_000
SETS_APART_S = 3600
RAW_CHUNK = 10_000

FILL = """
INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, state, opened_at,
                     deadline, last_seen, reminder_days, sms, next_due)
SELECT 'unregistered', 'imei', %(imei)s + g, 0, %(imsi)s + g, %(msisdn)s + g, 'unregistered',
       'open', %(now)s, %(now)s + interval '30 days', %(now)s, '{7,1}', true,
       CASE WHEN g < 3 * %(due)s THEN %(now)s - interval '1 minute'
                                     + (g / %(due)s) * %(apart)s * interval '1 second'
            ELSE %(now)s + (g %% 28 + 1) * interval '1 day' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""

# What a sweep writes for one batch of warnings, done by the server alone.
FLOOR = """
WITH warned AS (
    UPDATE notices SET state = 'warned', last_sms_at = now(),
                       next_due = deadline - interval '7 days'
    WHERE id BETWEEN %(first)s AND %(last)s RETURNING id),
moved AS (
    INSERT INTO notice_transitions (notice_id, at, from_state, to_state, step)
    SELECT id, now(), 'open', 'warned', 'warning' FROM warned RETURNING notice_id)
INSERT INTO outbox (stream, key, idempotency_key, body)
SELECT 'notifications', notice_id::text::bytea, 'floor-' || notice_id, %(body)s FROM moved
"""


def fill(dsn: str, notices: int, due: int, now_s: float) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for first in range(0, notices, FILL_CHUNK):
            conn.execute(FILL, {"imei": UNREGISTERED_BASE, "imsi": IMSI_BASE,
                                "msisdn": MSISDN_BASE, "now": _ts(now_s), "due": due,
                                "apart": SETS_APART_S, "first": first,
                                "last": min(first + FILL_CHUNK, notices) - 1})
        conn.execute("VACUUM ANALYZE notices")
    return time.perf_counter() - started


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def sweep(config: Config, client: str, holder: StateHolder, at_s: float, due: int) -> float:
    """Notices per second through the sweep and the relay, with this Kafka client."""
    kafka = replace(config.kafka, client=client)
    messages = producer(kafka)
    metrics = NoticeMetrics(CollectorRegistry())
    clock = ManualClock(int(at_s * MS_PER_S))
    sweeper = NoticeRounds(config, holder, clock, metrics,
                           lambda: psycopg.connect(config.postgres.dsn, autocommit=True),
                           OutboxRelay(config, clock, metrics, messages, outbox_reader(kafka)))
    started = time.perf_counter()
    report = sweeper.run_once()
    took = time.perf_counter() - started
    messages.close()
    sweeper.close()
    if report["published"] != due:
        raise SystemExit(f"{client}: published {report['published']:,}, expected {due:,}")
    return due / took


def database_floor(config: Config, first_id: int, due: int, body: bytes) -> float:
    """The third set's writes in SQL alone, on as many connections as the sweep uses."""
    batch, connections = config.notices.batch, config.notices.sweepers
    starts = list(range(first_id, first_id + due, batch))

    def write(share: list[int]) -> None:
        with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
            for first in share:
                with conn.transaction():
                    conn.execute(FLOOR, {"first": first, "last": first + batch - 1,
                                         "body": body})
                    conn.execute("UPDATE outbox SET sent_at = clock_timestamp()"
                                 " WHERE sent_at IS NULL AND idempotency_key"
                                 " BETWEEN %s AND %s",
                                 (f"floor-{first}", f"floor-{first + batch - 1}"))

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(write, [starts[i::connections] for i in range(connections)]))
    return due / (time.perf_counter() - started)


def raw_produce(config: Config, client: str, count: int, body: bytes) -> float:
    messages = producer(replace(config.kafka, client=client))
    started = time.perf_counter()
    for first in range(0, count, RAW_CHUNK):
        publish_all(messages, [Publication(f"{TOPIC}-raw", str(i).encode(), body,
                                           (("idempotency-key", f"raw-{i}".encode()),))
                               for i in range(first, min(first + RAW_CHUNK, count))], 30.0)
    took = time.perf_counter() - started
    messages.close()
    return count / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=10_000_000)
    parser.add_argument("--due", type=int, default=500_000)
    parser.add_argument("--sweepers", type=int, help="notices.sweepers (default: the config's)")
    args = parser.parse_args()
    if 3 * args.due > args.notices:
        raise SystemExit("--notices must hold three sets of --due")
    with embedded_services("eir-notices-") as (services, scratch):
        config = load_config(environ={
            "EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
            "EIR_KAFKA__NOTIFICATIONS_TOPIC": TOPIC, "EIR_POSTGRES__DSN": services.postgres.dsn,
            "EIR_NOTICES__QUIET_START": "00:00", "EIR_NOTICES__QUIET_END": "00:00",
            **({"EIR_NOTICES__SWEEPERS": str(args.sweepers)} if args.sweepers else {})})
        migrate(config.postgres.dsn)
        now_s = time.time()
        took = fill(config.postgres.dsn, args.notices, args.due, now_s)
        with psycopg.connect(config.postgres.dsn) as conn:
            (size,) = conn.execute(
                "SELECT pg_total_relation_size('notices')").fetchone()
            (first_id,) = conn.execute("SELECT min(id) FROM notices").fetchone()
        say(f"{args.notices:,} notices in {took:.0f} s; table with indexes "
            f"{size / 2**20:,.0f} MiB")

        country = build_country(CountrySpec(devices=100_000))
        holder = StateHolder(EnforcementState(country.lists, country.devices, load_policy()))
        rates = {}
        for n, client in enumerate((CONFLUENT, KAFKA_PYTHON)):
            rates[client] = sweep(config, client, holder, now_s + n * SETS_APART_S, args.due)
            say(f"sweep and relay ({config.notices.sweepers} connections, {client}): "
                f"{args.due:,} due notices at {rates[client]:,.0f}/s")

        with psycopg.connect(config.postgres.dsn) as conn:
            (body,) = conn.execute("SELECT body FROM outbox LIMIT 1").fetchone()
        body = bytes(body)
        floor = database_floor(config, first_id + 2 * args.due, args.due, body)
        say(f"baseline, the database alone doing the same writes: {floor:,.0f}/s")
        raw = {client: raw_produce(config, client, args.due, body)
               for client in (CONFLUENT, KAFKA_PYTHON)}
        for client, rate in raw.items():
            say(f"baseline, {client} producing the rendered messages: {rate:,.0f}/s")
        best = rates[CONFLUENT]
        emit({"notices": args.notices, "due": args.due, "fill_s": round(took, 1),
              "table_bytes": size, "sweepers": config.notices.sweepers,
              "notices_per_s": round(best), "client": CONFLUENT,
              "notices_per_s_kafka_python": round(rates[KAFKA_PYTHON]),
              "database_floor_per_s": round(floor),
              "raw_produce_per_s": {c: round(r) for c, r in raw.items()},
              "ratio_to_floor": round(best / floor, 3)})


if __name__ == "__main__":
    main()
