"""The due sweep at national scale: due notices through the outbox onto Kafka.

    python bench/notices.py [--notices 10000000] [--due 500000]

Fills `notices` (embedded PostgreSQL) with --notices live notices of unregistered phones
(IMEI-scoped, as a country's backlog looks), --due of them due now for their warning and
the rest due over the next four weeks. Then one worker's sweep takes the due ones (FOR
UPDATE SKIP LOCKED, a batch at a time), advances them, writes transitions and messages to
the outbox, and the relay publishes them to the embedded broker: timed until every due
notice's warning is on the topic. The baseline, in the same run: kafka-python producing the
same number of messages already rendered. The last line is JSON, with the table's size on
disk.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

import psycopg
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from measure import embedded_services, emit, say

from enforcer.clock import ManualClock
from enforcer.config import load_config
from enforcer.db.migrate import migrate
from enforcer.state import EnforcementState, StateHolder
from enforcer.sweep import NoticeSweeper
from enforcer.synth import CountrySpec, build_country
from metrics.notices import NoticeMetrics
from rules.policy import load_policy

TOPIC = "notifications-bench"
FILL_CHUNK = 1_000_000
UNREGISTERED_BASE = 86_000_000_000_000  # IMEI keys no synthetic country registers
IMSI_BASE = 432_110_000_000_000
MSISDN_BASE = 989_120_000_000

FILL = """
INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, state, opened_at,
                     deadline, last_seen, reminder_days, sms, next_due)
SELECT 'unregistered', 'imei', %(imei)s + g, 0, %(imsi)s + g, %(msisdn)s + g, 'unregistered',
       'open', %(now)s, %(now)s + interval '30 days', %(now)s, '{7,1}', true,
       CASE WHEN g < %(due)s THEN %(now)s - interval '1 minute'
            ELSE %(now)s + (g %% 28 + 1) * interval '1 day' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


def fill(dsn: str, notices: int, due: int, now_s: float) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for first in range(0, notices, FILL_CHUNK):
            conn.execute(FILL, {"imei": UNREGISTERED_BASE, "imsi": IMSI_BASE,
                                "msisdn": MSISDN_BASE, "now": _ts(now_s), "due": due,
                                "first": first, "last": min(first + FILL_CHUNK, notices) - 1})
        conn.execute("VACUUM ANALYZE notices")
    return time.perf_counter() - started


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def raw_produce(bootstrap: str, count: int, body: bytes) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    started = time.perf_counter()
    for i in range(count):
        producer.send(TOPIC + "-raw", key=str(i).encode(), value=body,
                      headers=[("idempotency-key", f"raw-{i}".encode())])
    producer.flush()
    took = time.perf_counter() - started
    producer.close()
    return count / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=10_000_000)
    parser.add_argument("--due", type=int, default=500_000)
    args = parser.parse_args()
    with embedded_services("eir-notices-") as (services, scratch):
        config = load_config(environ={
            "EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
            "EIR_KAFKA__NOTIFICATIONS_TOPIC": TOPIC, "EIR_POSTGRES__DSN": services.postgres.dsn,
            "EIR_NOTICES__QUIET_START": "00:00", "EIR_NOTICES__QUIET_END": "00:00"})
        migrate(config.postgres.dsn)
        now_s = time.time()
        took = fill(config.postgres.dsn, args.notices, args.due, now_s)
        with psycopg.connect(config.postgres.dsn) as conn:
            (size,) = conn.execute(
                "SELECT pg_total_relation_size('notices')").fetchone()
        say(f"{args.notices:,} notices in {took:.0f} s; table with indexes "
            f"{size / 2**20:,.0f} MiB")

        country = build_country(CountrySpec(devices=100_000))
        holder = StateHolder(EnforcementState(country.lists, country.registry, load_policy()))
        producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all",
                                 linger_ms=5)
        sweeper = NoticeSweeper(config, holder, ManualClock(int(now_s * 1000)),
                                NoticeMetrics(CollectorRegistry()),
                                lambda: psycopg.connect(config.postgres.dsn, autocommit=True),
                                producer)
        started = time.perf_counter()
        report = sweeper.run_once()
        sweep_s = time.perf_counter() - started
        producer.close()
        if report["published"] != args.due:
            raise SystemExit(f"published {report['published']:,}, expected {args.due:,}")
        per_s = args.due / sweep_s
        say(f"sweep and relay: {args.due:,} due notices in {sweep_s:.1f} s: {per_s:,.0f}/s")

        with psycopg.connect(config.postgres.dsn) as conn:
            (body,) = conn.execute("SELECT body FROM outbox LIMIT 1").fetchone()
        raw = raw_produce(config.kafka.bootstrap_servers, args.due, bytes(body))
        say(f"baseline, kafka-python producing the rendered messages: {raw:,.0f}/s")
        emit({"notices": args.notices, "due": args.due, "fill_s": round(took, 1),
              "table_bytes": size, "sweep_s": round(sweep_s, 2), "notices_per_s": round(per_s),
              "raw_produce_per_s": round(raw), "ratio": round(per_s / raw, 3)})


if __name__ == "__main__":
    main()
