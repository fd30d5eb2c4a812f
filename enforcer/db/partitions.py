"""Tables partitioned by time behind a default partition (migration 0012): outbox by day,
notice_transitions and status_queries by month. A row whose period has no partition yet lands
in the default one; `ensure` makes each period's partition ahead of need, moving into it
whatever the default holds of that period, and `drop` removes a whole period at once.

slot_usage is partitioned too, without a default (its partitions are made by the writer:
enforcer/db/history.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum

import psycopg
from psycopg import sql

# Making or dropping a partition of these tables takes this advisory lock, so two workers
# never race on one (slot_usage's is 7_253_002).
PARTITION_LOCK = 7_253_005


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class TimePartitioned:
    table: str
    column: str  # the timestamptz the table is partitioned by
    period: Period

    def start(self, day: date) -> date:
        """The first day of the period `day` is in."""
        return day if self.period is Period.DAY else day.replace(day=1)

    def after(self, start: date) -> date:
        """The first day of the next period."""
        if self.period is Period.DAY:
            return start + timedelta(days=1)
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)

    def name(self, start: date) -> str:
        """outbox_2026_03_07, notice_transitions_2026_03."""
        if self.period is Period.DAY:
            return f"{self.table}_{start:%Y_%m_%d}"
        return f"{self.table}_{start:%Y_%m}"

    @property
    def default(self) -> str:
        return f"{self.table}_default"

    def _start_of(self, name: str) -> date:
        parts = [int(p) for p in name.removeprefix(f"{self.table}_").split("_")]
        return date(*parts) if self.period is Period.DAY else date(*parts, 1)

    @property
    def _pattern(self) -> str:
        digits = r"\d{4}_\d{2}_\d{2}" if self.period is Period.DAY else r"\d{4}_\d{2}"
        return rf"^{self.table}_{digits}$"


OUTBOX = TimePartitioned("outbox", "created_at", Period.DAY)
TRANSITIONS = TimePartitioned("notice_transitions", "at", Period.MONTH)
STATUS_QUERIES = TimePartitioned("status_queries", "asked_at", Period.MONTH)
TIME_PARTITIONED = (OUTBOX, TRANSITIONS, STATUS_QUERIES)


def partitions(conn: psycopg.Connection, spec: TimePartitioned) -> list[tuple[date, str]]:
    """The table's period partitions, oldest first: (first day of the period, table name)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass AND c.relname ~ %s",
        (spec.table, spec._pattern)).fetchall()
    return sorted((spec._start_of(name), name) for name, in rows)


def ensure(conn: psycopg.Connection, spec: TimePartitioned, first: date, last: date,
           lock_timeout_s: float) -> list[str]:
    """Make the partition of every period from `first`'s to `last`'s that has none, and of
    every period the default partition holds rows of; returns the tables made. Each in its
    own transaction: the table made aside, the default's rows of its period moved into it,
    then attached (the attach scans the default, which should then be empty, under its
    exclusive lock: waited for `lock_timeout_s` at most, psycopg.errors.LockNotAvailable)."""
    made = []
    have = {start for start, _ in partitions(conn, spec)}
    wanted = set()
    start = spec.start(first)
    while start <= last:
        wanted.add(start)
        start = spec.after(start)
    wanted |= {spec.start(day) for day in _default_days(conn, spec)}
    for start in sorted(wanted - have):
        name, bounds = spec.name(start), (utc_midnight(start), period_end(spec, start))
        table, default = sql.Identifier(name), sql.Identifier(spec.default)
        in_period = sql.SQL("{} >= {} AND {} < {}").format(
            sql.Identifier(spec.column), sql.Literal(bounds[0]),
            sql.Identifier(spec.column), sql.Literal(bounds[1]))
        with conn.transaction():
            _lock(conn, lock_timeout_s)
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
                continue  # another worker made it meanwhile
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                table, sql.Identifier(spec.table)))
            # Writes of the period wait until the partition is attached: one landing in the
            # default between the move and the attach would fail the attach (23514).
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(default))
            conn.execute(sql.SQL("WITH moved AS (DELETE FROM {} WHERE {} RETURNING *)"
                                 " INSERT INTO {} SELECT * FROM moved").format(
                default, in_period, table))
            conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {}"
                                 " FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(spec.table), table, sql.Literal(bounds[0]),
                sql.Literal(bounds[1])))
        made.append(name)
    return made


def _default_days(conn: psycopg.Connection, spec: TimePartitioned) -> list[date]:
    """The days (UTC) the default partition holds rows of."""
    return [day for day, in conn.execute(sql.SQL(
        "SELECT DISTINCT ({} AT TIME ZONE 'UTC')::date FROM {}").format(
            sql.Identifier(spec.column), sql.Identifier(spec.default)))]


def drop(conn: psycopg.Connection, spec: TimePartitioned, name: str, lock_timeout_s: float
         ) -> None:
    """Drop one period's partition, at once: it is gone or still whole, so an interrupted
    retention run leaves nothing half done. A default partition rules out a concurrent
    detach, so the drop takes the parent's lock briefly; it gives up after `lock_timeout_s`
    rather than hold the table's writers in the lock's queue (psycopg.errors.LockNotAvailable:
    the next run drops it)."""
    with conn.transaction():
        _lock(conn, lock_timeout_s)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _lock(conn: psycopg.Connection, lock_timeout_s: float) -> None:
    """The partitions' advisory lock, and a bound on the wait for any table lock after it in
    this transaction: a lock waited for queues every later reader and writer of the table
    behind it."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
        sql.Literal(f"{int(lock_timeout_s * 1000)}ms")))


def period_end(spec: TimePartitioned, start: date) -> datetime:
    """When the period starting `start` ends: the next one's first midnight, UTC."""
    return utc_midnight(spec.after(start))


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
