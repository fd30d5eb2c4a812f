"""Writing and reading slot_usage. Writes are one multi-row upsert per batch; replaying a
batch changes nothing (first_seen takes the least, last_seen the greatest, days the union)."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg

from enforcer.engine.history import NO_SLOT, SlotUsageRows, Usage

EPOCH = date(1970, 1, 1)
# Creating a month's partition takes this advisory lock, so two workers never race on it.
PARTITION_LOCK = 7_253_002

UPSERT = """
INSERT INTO slot_usage (month, imei_key, imsi, msisdn, slot, first_seen, last_seen, days)
SELECT date '1970-01-01' + m, k, i, s, NULLIF(sl, -1),
       to_timestamp(f / 1000.0), to_timestamp(l / 1000.0), d
FROM unnest(%b::int4[], %b::int8[], %b::int8[], %b::int8[], %b::int2[], %b::int8[],
            %b::int8[], %b::int4[]) AS u(m, k, i, s, sl, f, l, d)
ON CONFLICT (imei_key, imsi, month) DO UPDATE SET
    msisdn = CASE WHEN excluded.last_seen >= slot_usage.last_seen
                  THEN excluded.msisdn ELSE slot_usage.msisdn END,
    slot = coalesce(excluded.slot, slot_usage.slot),
    first_seen = least(slot_usage.first_seen, excluded.first_seen),
    last_seen = greatest(slot_usage.last_seen, excluded.last_seen),
    days = slot_usage.days | excluded.days
"""


def partition_name(month: date) -> str:
    return f"slot_usage_{month.year:04d}_{month.month:02d}"


def _next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


class HistoryStore:
    def __init__(self) -> None:
        self._partitions: set[int] = set()

    def ensure_partitions(self, conn: psycopg.Connection, months: set[int]) -> None:
        for month_day in sorted(months - self._partitions):
            month = EPOCH + timedelta(days=month_day)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                conn.execute(psycopg.sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF slot_usage "
                    "FOR VALUES FROM ({}) TO ({})").format(
                        psycopg.sql.Identifier(partition_name(month)),
                        psycopg.sql.Literal(month), psycopg.sql.Literal(_next_month(month))))
            self._partitions.add(month_day)

    def write(self, conn: psycopg.Connection, rows: SlotUsageRows) -> int:
        """Upsert `rows` in the caller's transaction; returns how many."""
        if not len(rows):
            return 0
        # Binary parameters (%b): as text, psycopg quotes every array element through a
        # regex, four times the CPU of the binary form, all of it holding the GIL the Kafka
        # clients' I/O threads wait for. (`binary=True` asks for binary results only.)
        conn.execute(UPSERT, (rows.month.tolist(), rows.imei_key.astype("int64").tolist(),
                              rows.imsi.astype("int64").tolist(),
                              rows.msisdn.astype("int64").tolist(), rows.slot.tolist(),
                              rows.first_seen_ms.tolist(), rows.last_seen_ms.tolist(),
                              rows.days.tolist()))
        return len(rows)


def usage_of(conn: psycopg.Connection, imei_keys: list[int]) -> list[Usage]:
    """Every SIM that used these IMEIs, over all months kept, oldest first."""
    rows = conn.execute(
        "SELECT imei_key, imsi, (array_agg(msisdn ORDER BY last_seen DESC))[1],"
        " max(slot), min(first_seen), max(last_seen), sum(bit_count(days::bit(32)))::int"
        " FROM slot_usage WHERE imei_key = ANY(%s) GROUP BY imei_key, imsi"
        " ORDER BY min(first_seen)", (imei_keys,)).fetchall()
    return [Usage(k, i, m, s if s != NO_SLOT else None, f, last, d)
            for k, i, m, s, f, last, d in rows]


def usage_totals(conn: psycopg.Connection) -> tuple[int, int]:
    """(rows of slot_usage, distinct (IMEI, IMSI) pairs among them), over every month kept.
    A row is one IMEI, IMSI and month: the upserts of every batch that saw them land on it."""
    rows, pairs = conn.execute(
        "SELECT count(*), count(DISTINCT (imei_key, imsi)) FROM slot_usage").fetchone()
    return rows, pairs


def latest_first_slot(conn: psycopg.Connection) -> int | None:
    """The IMEI key seen last in a device's first slot; None while slot_usage is empty."""
    row = conn.execute("SELECT imei_key FROM slot_usage WHERE slot = 1"
                       " ORDER BY last_seen DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


MONTH_TABLE = r"^slot_usage_\d{4}_\d{2}$"
DETACH_CONCURRENTLY = "ALTER TABLE slot_usage DETACH PARTITION {} CONCURRENTLY"
DETACH_FINALIZE = "ALTER TABLE slot_usage DETACH PARTITION {} FINALIZE"


def _month_of(name: str) -> date:
    year, month = name.removeprefix("slot_usage_").split("_")
    return date(int(year), int(month), 1)


def monthly_partitions(conn: psycopg.Connection) -> list[tuple[date, str, bool]]:
    """slot_usage's month tables, oldest first: (first day of the month, table name, still
    attached). A table left detached by an interrupted retention run is listed too."""
    rows = conn.execute(
        "SELECT c.relname, i.inhrelid IS NOT NULL AND NOT i.inhdetachpending"
        " FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
        " AND i.inhparent = 'slot_usage'::regclass"
        " WHERE c.relkind = 'r' AND c.relname ~ %s"
        " AND c.relnamespace = (SELECT relnamespace FROM pg_class"
        " WHERE oid = 'slot_usage'::regclass)",
        (MONTH_TABLE,)).fetchall()
    return sorted((_month_of(name), name, attached) for name, attached in rows)


def drop_months_before(conn: psycopg.Connection, first_kept: date) -> list[str]:
    """Detach (without blocking the writers of other months), then drop, each older month.
    Needs an autocommit connection: a concurrent detach cannot run in a transaction. A run
    interrupted between the two leaves a table detached, or pending detach; the next run
    finishes it."""
    dropped = []
    for month, name, _ in monthly_partitions(conn):
        if month >= first_kept:
            break
        table = psycopg.sql.Identifier(name)
        pending = conn.execute(
            "SELECT i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE c.relname = %s AND i.inhparent = 'slot_usage'::regclass",
            (name,)).fetchone()
        if pending is not None:
            detach = DETACH_FINALIZE if pending[0] else DETACH_CONCURRENTLY
            conn.execute(psycopg.sql.SQL(detach).format(table))
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(table))
        dropped.append(name)
    return dropped
