"""Bytes per row of each table retention bounds, for sizing the database (docs/operations.md).

    python bench/rowsize.py [--rows 100000]

Migrates an embedded PostgreSQL, inserts --rows rows of the shape the worker writes into each
table (message bodies and registry events of their usual length), VACUUM ANALYZEs, and
divides pg_total_relation_size (heap, TOAST and indexes, summed over a partitioned table's
partitions) by the rows. The last line is JSON: bytes per row by table.
"""

from __future__ import annotations

import argparse
from datetime import date

import psycopg

from measure import embedded_services, emit, say

from enforcer.db.history import EPOCH, HistoryStore
from enforcer.db.migrate import migrate

SMS_BODY = ('{"type":"sms_requested","idempotency_key":"notice-12345678-reminder-1",'
            '"notice_id":12345678,"step":"reminder","msisdn":"989121234567","language":"fa",'
            '"text":"' + "x" * 160 + '","deadline":"2026-12-01T00:00:00Z"}')
REGISTRY_BODY = ('{"event_id":"reg-000000000123","type":"ownership_set","imeis":'
                 '["35693803564380"],"owner_msisdn":"989121234567","via":"transfer_direct",'
                 '"at":"2026-11-23T10:00:00Z"}')
FILL = {
    "slot_usage": (
        "INSERT INTO slot_usage (month, imei_key, imsi, msisdn, slot, first_seen, last_seen,"
        " days) SELECT date_trunc('month', now())::date, 35693803564380 + g,"
        " 432111234567890 + g, 989121234567 + g, 1, now(), now(), 5"
        " FROM generate_series(1, %(rows)s) g"),
    "notices": (
        "INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, state,"
        " opened_at, deadline, last_seen, reminder_days, sms, closed_at)"
        " SELECT 'unregistered', 'imei', 35693803564380 + g, 0, 432111234567890 + g,"
        " 989121234567 + g, 'unregistered_device', 'cancelled', now(), now(), now(),"
        " '{7,14}', true, now() FROM generate_series(1, %(rows)s) g"),
    "notice_transitions": (
        "INSERT INTO notice_transitions (notice_id, at, from_state, to_state, step)"
        " SELECT (SELECT min(id) FROM notices) + g %% 1000, now(), 'open', 'warned', 'warning'"
        " FROM generate_series(1, %(rows)s) g"),
    "outbox": (
        "INSERT INTO outbox (stream, key, idempotency_key, body, sent_at)"
        " SELECT 'sms', '\\x3335363933383033353634333830', 'notice-' || g || '-warning',"
        " convert_to(%(sms)s, 'UTF8'), now() FROM generate_series(1, %(rows)s) g"),
    "status_queries": (
        "INSERT INTO status_queries (imei_key, requester, status, revealed, channel, client,"
        " peer) SELECT 35693803564380 + g, 989121234567 + g, 'in_cartable', NULL, 'http',"
        " 'selfcare', '10.20.30.40' FROM generate_series(1, %(rows)s) g"),
    "registry_events": (
        "INSERT INTO registry_events (event_id, applied, body, source_topic, source_partition,"
        " source_offset, received_at) SELECT 'reg-' || lpad(g::text, 12, '0'), true,"
        " convert_to(%(registry)s, 'UTF8'), 'registry-events', g %% 12, g, now()"
        " FROM generate_series(1, %(rows)s) g"),
    "clone_flags": (
        "INSERT INTO clone_flags (imei_key, reason, flagged_at, imsi, msisdn)"
        " SELECT 35693803564380 + g, 'many_sims', now(), 432111234567890 + g,"
        " 989121234567 + g FROM generate_series(1, %(rows)s) g"),
    "subscribers": (
        "INSERT INTO subscribers (imsi, msisdn, seen_at)"
        " SELECT 432110000000000 + g * 7, 989120000000 + g, now()"
        " FROM generate_series(1, %(rows)s) g"),
    "job_runs": (
        "INSERT INTO job_runs (job, worker, attempt, started_at, ended_at, outcome, counts)"
        " SELECT 'retention', 'host-a:1234', 1, now(), now(), 'ok',"
        " '{\"notices_deleted\": 1000, \"job_runs_deleted\": 24}'"
        " FROM generate_series(1, %(rows)s) g"),
}


def total_bytes(conn: psycopg.Connection, table: str) -> int:
    """Heap, TOAST and indexes; a partitioned table's summed over its partitions."""
    return conn.execute("SELECT coalesce((SELECT sum(pg_total_relation_size(relid))::bigint"
                        " FROM pg_partition_tree(%s)), pg_total_relation_size(%s))",
                        (table, table)).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    figures: dict[str, int] = {}
    with embedded_services("eir-rowsize-") as (services, _):
        migrate(services.postgres.dsn)
        with psycopg.connect(services.postgres.dsn, autocommit=True) as conn:
            HistoryStore().ensure_partitions(conn, {(date.today().replace(day=1) - EPOCH).days})
            for table, fill in FILL.items():
                conn.execute(fill, {"rows": args.rows, "sms": SMS_BODY,
                                    "registry": REGISTRY_BODY})
                conn.execute(f"VACUUM ANALYZE {table}")
                figures[table] = round(total_bytes(conn, table) / args.rows)
                say(f"{table}: {figures[table]} bytes a row")
    emit({"rows": args.rows, "bytes_per_row": figures})


if __name__ == "__main__":
    main()
