"""Retention on the real PostgreSQL (issue 20 part 3): for each table, old rows go and live or
young ones stay; an interrupted run is finished by the next; migration 0012 moves the rows
of the tables it partitions."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import numpy as np
import psycopg
import pytest

from enforcer.clock import MS_PER_DAY, MS_PER_S, utc_datetime
from enforcer.config import load_config
from enforcer.db.clones import record_flags
from enforcer.db.migrate import MIGRATION_LOCK, migrate, migrations
from enforcer.db.notices import DuplicateMessage, enqueue, mark_sent, transitions_of
from enforcer.db.partitions import OUTBOX, STATUS_QUERIES, TRANSITIONS, partitions
from enforcer.db.registry_events import (EventRow, Position, Resume, prune_registry_events,
                                         renew, resume_points, store_all)
from enforcer.db.status_queries import record_query
from enforcer.db.subscribers import record_numbers
from enforcer.engine.numbers import LearnedPairs
from enforcer.engine.noticemessages import OutboxMessage
from enforcer.jobs.retention import RetentionRun, run_retention
from tests.kafkatools import wait_for

NOW = datetime.now(timezone.utc)  # the worker's clock, which wrote the rows
NOW_MS = int(NOW.timestamp() * MS_PER_S)
DAY = timedelta(days=1)
REGISTRY = "registry-events"


def retention(clone_flag_days: int = 0, **settings: int) -> RetentionRun:
    config = load_config(environ={})
    return RetentionRun(replace(config.retention, **settings), date(1970, 1, 1), NOW,
                        REGISTRY, None, clone_flag_days)


def run(dsn: str, plan: RetentionRun) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return run_retention(conn, plan)


def names(dsn: str, spec) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [name for _, name in partitions(conn, spec)]


def rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def add_outbox(conn: psycopg.Connection, key: str, created: datetime, sent: bool) -> None:
    conn.execute("INSERT INTO outbox (stream, key, idempotency_key, body, created_at, sent_at)"
                 " VALUES ('sms', 'k', %s, 'b', %s, %s)",
                 (key, created, created if sent else None))


def test_an_outbox_day_goes_once_it_is_all_published_and_past_retention(dsn) -> None:
    with psycopg.connect(dsn) as conn:
        add_outbox(conn, "old-sent", NOW - 20 * DAY, sent=True)
        add_outbox(conn, "old-unsent", NOW - 19 * DAY, sent=False)
        add_outbox(conn, "old-sent-beside", NOW - 19 * DAY, sent=True)
        add_outbox(conn, "young-sent", NOW - 2 * DAY, sent=True)
    counts = run(dsn, retention(outbox_days=7))
    assert counts["outbox_partitions_dropped"] == 1
    assert sorted(k for k, in rows(dsn, "SELECT idempotency_key FROM outbox")) == [
        "old-sent-beside", "old-unsent", "young-sent"]
    assert OUTBOX.name((NOW - 20 * DAY).date()) not in names(dsn, OUTBOX)
    # Made ahead of need: today and the days after it have their partitions.
    assert OUTBOX.name((NOW + 3 * DAY).date()) in names(dsn, OUTBOX)
    assert rows(dsn, "SELECT count(*) FROM outbox_default") == [(0,)]


def test_a_second_message_under_one_key_is_refused_whatever_its_partition(dsn) -> None:
    with psycopg.connect(dsn) as conn:
        add_outbox(conn, "notice-1-warning", NOW - 3 * DAY, sent=True)
    run(dsn, retention())
    message = OutboxMessage("sms", b"k", "notice-1-warning", b"b")
    with psycopg.connect(dsn) as conn:
        with pytest.raises(DuplicateMessage, match="notice-1-warning"):
            enqueue(conn, [message], NOW_MS)
    with psycopg.connect(dsn) as conn:
        with pytest.raises(DuplicateMessage, match="notice-2-cutoff"):
            enqueue(conn, [replace(message, idempotency_key="notice-2-cutoff")] * 2, NOW_MS)
    assert rows(dsn, "SELECT count(*) FROM outbox") == [(1,)]


def test_outbox_and_status_queries_go_by_the_workers_clock_not_the_databases(dsn) -> None:
    """A worker on a clock a year ahead (the demo's, a test's): its rows carry its time, and
    retention judges them by it, though the database's clock has not moved."""
    ahead_ms, day_ms = NOW_MS + 400 * MS_PER_DAY, MS_PER_DAY
    with psycopg.connect(dsn) as conn:
        for key, days in (("notice-1-warning", 20), ("notice-2-warning", 1)):
            enqueue(conn, [OutboxMessage("sms", b"k", key, b"b")], ahead_ms - days * day_ms)
        mark_sent(conn, [i for i, in conn.execute("SELECT id FROM outbox")], ahead_ms - day_ms)
        for days in (800, 1):
            record_query(conn, imei_key=7, requester=None, status=None, revealed=None,
                         channel="cli", client=None, peer=None, refused="bad_msisdn",
                         asked_at=utc_datetime(ahead_ms - days * day_ms))
    plan = replace(retention(outbox_days=7, status_query_days=730), now=utc_datetime(ahead_ms))
    counts = run(dsn, plan)
    assert counts["outbox_partitions_dropped"] == 1
    assert counts["status_query_partitions_dropped"] == 1
    assert rows(dsn, "SELECT idempotency_key FROM outbox") == [("notice-2-warning",)]
    assert rows(dsn, "SELECT asked_at FROM status_queries") == [
        (utc_datetime(ahead_ms - day_ms),)]


def add_notice(conn: psycopg.Connection, state: str, opened: datetime,
               closed: datetime | None, successor: int | None = None) -> int:
    (notice_id,) = conn.execute(
        "INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, state,"
        " opened_at, deadline, last_seen, reminder_days, sms, closed_at, superseded_by)"
        " VALUES ('unregistered', 'imei', %s, 0, 1, 1, 'r', %s, %s, %s, %s, '{}', true, %s, %s)"
        " RETURNING id", (uuid.uuid4().int % 10**14, state, opened, opened + 30 * DAY, opened,
                          closed, successor)).fetchone()
    conn.execute("INSERT INTO notice_transitions (notice_id, at, to_state) VALUES (%s, %s,"
                 " 'open')", (notice_id, opened))
    if closed is not None:
        conn.execute("INSERT INTO notice_transitions (notice_id, at, from_state, to_state)"
                     " VALUES (%s, %s, 'open', %s)", (notice_id, closed, state))
    return notice_id


def test_closed_notices_past_retention_go_with_their_transitions_live_ones_stay(dsn) -> None:
    # Each old notice closed as it opened: its transitions in one month.
    long_ago, older = NOW - 500 * DAY, NOW - 560 * DAY
    with psycopg.connect(dsn) as conn:
        alone = add_notice(conn, "lapsed", older, older)  # its month holds nothing else
        cancelled = add_notice(conn, "cancelled", long_ago, long_ago)
        cut = add_notice(conn, "cut", long_ago, None)  # live: keeps its month's partition
        young = add_notice(conn, "cancelled", NOW - 40 * DAY, NOW - 10 * DAY)
        successor = add_notice(conn, "cancelled", long_ago, long_ago)
        # Closed lately, it names an old one as its successor: that one stays for it.
        add_notice(conn, "superseded", NOW - 20 * DAY, NOW - 5 * DAY, successor)
        old_successor = add_notice(conn, "lapsed", long_ago, long_ago)
        gone_with_it = add_notice(conn, "superseded", long_ago, long_ago, old_successor)
        # Closed by a worker older than migration 0012 (a rolling upgrade): no closed_at.
        unmarked = add_notice(conn, "lapsed", long_ago, long_ago)
        conn.execute("UPDATE notices SET closed_at = NULL WHERE id = %s", (unmarked,))
    # The first run splits the default's months out (keeping every notice).
    run(dsn, retention(closed_notice_days=3000))
    counts = run(dsn, retention(closed_notice_days=365, batch_rows=1))
    kept = {i for i, in rows(dsn, "SELECT id FROM notices")}
    assert kept == {cut, young, successor, successor + 1}
    assert {alone, cancelled, old_successor, gone_with_it, unmarked}.isdisjoint(kept)
    assert counts["transition_partitions_dropped"] == 1
    assert TRANSITIONS.name(older.date()) not in names(dsn, TRANSITIONS)
    assert TRANSITIONS.name(long_ago.date()) in names(dsn, TRANSITIONS)
    with psycopg.connect(dsn) as conn:
        assert [t[2] for t in transitions_of(conn, cut)] == ["open"]
        assert transitions_of(conn, cancelled) == []
    assert {n for n, in rows(dsn, "SELECT DISTINCT notice_id FROM notice_transitions")} == kept


def test_status_queries_keep_their_months_within_retention(dsn) -> None:
    with psycopg.connect(dsn) as conn:
        for days in (800, 700, 0):
            conn.execute("INSERT INTO status_queries (asked_at, channel) VALUES (%s, 'cli')",
                         (NOW - days * DAY,))
    counts = run(dsn, retention(status_query_days=730))
    assert counts["status_query_partitions_dropped"] == 1
    left = rows(dsn, "SELECT asked_at FROM status_queries ORDER BY asked_at")
    assert [NOW - a for a, in left] == [700 * DAY, 0 * DAY]
    assert STATUS_QUERIES.name((NOW - 800 * DAY).date()) not in names(dsn, STATUS_QUERIES)


def test_old_job_runs_and_expired_clone_flags_go(dsn) -> None:
    with psycopg.connect(dsn) as conn:
        for job, days in (("old", 100), ("young", 10)):
            conn.execute("INSERT INTO job_runs (job, worker, attempt, started_at)"
                         " VALUES (%s, 'w', 1, %s)", (job, NOW - days * DAY))
        for imei_key, days in ((1, 40), (2, 10)):
            conn.execute("INSERT INTO clone_flags (imei_key, reason, flagged_at, imsi, msisdn)"
                         " VALUES (%s, 'many_sims', %s, 1, 1)", (imei_key, NOW - days * DAY))
    assert run(dsn, retention(job_run_days=90))["clone_flags_deleted"] == 0  # 0: for ever
    assert rows(dsn, "SELECT job FROM job_runs") == [("young",)]
    assert rows(dsn, "SELECT count(*) FROM clone_flags") == [(2,)]
    with psycopg.connect(dsn) as conn:  # IMEI 1 flagged again today: the row rewritten
        record_flags(conn, [(1, "imsis", int(NOW.timestamp() * 1000), 3, 3)])
        record_flags(conn, [(2, "imsis", int((NOW - 20 * DAY).timestamp() * 1000), 4, 4)])
    assert run(dsn, retention(clone_flag_days=30))["clone_flags_deleted"] == 0
    assert rows(dsn, "SELECT imei_key, imsi FROM clone_flags ORDER BY 1") == [(1, 3), (2, 1)]
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE clone_flags SET flagged_at = %s WHERE imei_key = 1",
                     (NOW - 40 * DAY,))
    assert run(dsn, retention(clone_flag_days=30))["clone_flags_deleted"] == 1
    assert rows(dsn, "SELECT imei_key FROM clone_flags") == [(2,)]


def test_a_flag_raised_again_while_retention_deletes_it_stays(dsn) -> None:
    """A worker raises an ended flag anew (its batch's transaction holds the row) as the
    retention run deletes it: the delete, having waited for the row, judges its time again
    and leaves it."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO clone_flags (imei_key, reason, flagged_at, imsi, msisdn)"
                     " VALUES (1, 'imsis', %s, 1, 1)", (NOW - 40 * DAY,))
    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as worker:
        record_flags(worker, [(1, "imsis", int(NOW.timestamp() * 1000), 3, 3)])
        retention_run = threading.Thread(
            target=lambda: counts.update(run(dsn, retention(clone_flag_days=30))))
        retention_run.start()
        wait_for(lambda: rows(dsn, "SELECT count(*) FROM pg_stat_activity"
                                   " WHERE wait_event_type = 'Lock'") == [(1,)])
        worker.commit()
    retention_run.join(timeout=60)
    assert counts["clone_flags_deleted"] == 0
    assert rows(dsn, "SELECT imei_key, imsi FROM clone_flags") == [(1, 3)]


def test_a_cut_notice_left_unscheduled_is_made_due_once(dsn) -> None:
    """A worker older than migration 0014, during a rolling upgrade, cuts (or sweeps) a notice
    and schedules nothing: the retention run makes it due, for the sweep to schedule its
    release; a live one already scheduled is not touched."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        unscheduled = add_notice(conn, "cut", NOW - 40 * DAY, None)
        scheduled = add_notice(conn, "cut", NOW - 40 * DAY, None)
        conn.execute("UPDATE notices SET next_due = %s WHERE id = %s",
                     (NOW + 300 * DAY, scheduled))
    assert run(dsn, retention())["cuts_scheduled"] == 1
    assert run(dsn, retention())["cuts_scheduled"] == 0
    due = dict(rows(dsn, "SELECT id, next_due FROM notices"))
    assert due == {unscheduled: NOW, scheduled: NOW + 300 * DAY}


def test_subscribers_not_seen_for_the_setting_go(dsn) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        record_numbers(conn, LearnedPairs(
            np.array([432110000000001, 432110000000002], np.uint64),
            np.array([989120000001, 989120000002], np.uint64),
            np.array([NOW_MS - 401 * MS_PER_DAY, NOW_MS - 399 * MS_PER_DAY], np.int64)))
    assert run(dsn, retention(subscriber_days=400))["subscribers_deleted"] == 1
    assert rows(dsn, "SELECT imsi FROM subscribers") == [(432110000000002,)]


def store_events(conn: psycopg.Connection, partition: int, incarnation: int,
                 offsets: range) -> None:
    store_all(conn, [EventRow(f"{partition}-{incarnation}-{offset}", True, None, b"{}",
                              Position(REGISTRY, partition, offset, incarnation), NOW)
                     for offset in offsets])


def test_registry_events_below_the_fold_watermark_go_but_each_partitions_last(dsn) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        store_events(conn, 0, 0, range(10))
        store_events(conn, 1, 0, range(5))
        renew(conn, REGISTRY, 1, Resume(0, 5, b"{}", True), "another event", NOW)
        store_events(conn, 1, 1, range(3))
        store_events(conn, 2, 0, range(4))
        before = resume_points(conn, REGISTRY)
    assert run(dsn, retention())["registry_events_deleted"] == 0  # no fold yet: none
    plan = replace(retention(batch_rows=2), registry_watermark={0: (0, 10), 1: (1, 2)})
    assert run(dsn, plan)["registry_events_deleted"] == 9 + 5 + 2
    assert rows(dsn, "SELECT event_id FROM registry_events ORDER BY seq") == [
        ("0-0-9",), ("1-1-2",), ("2-0-0",), ("2-0-1",), ("2-0-2",), ("2-0-3",)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert resume_points(conn, REGISTRY) == before
        assert prune_registry_events(conn, REGISTRY, {0: (0, 10)}, 10) == 0


def test_old_records_of_new_logs_go_but_each_partitions_newest(dsn) -> None:
    """A partition recreated three times, another once, long ago: a restart still resumes
    each in its newest incarnation, with the events stored there."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for partition, found in ((0, (200, 100, 10)), (1, (200,))):
            store_events(conn, partition, 0, range(3))
            for incarnation, days in enumerate(found, start=1):
                renew(conn, REGISTRY, partition, Resume(incarnation - 1, 3, b"{}", True),
                      "another event", NOW - days * DAY)
                store_events(conn, partition, incarnation, range(3))
        before = resume_points(conn, REGISTRY)
    assert run(dsn, retention(registry_incarnation_days=90))[
        "registry_incarnations_deleted"] == 2
    assert rows(dsn, "SELECT source_partition, incarnation FROM registry_incarnations"
                     " ORDER BY 1, 2") == [(0, 3), (1, 1)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert resume_points(conn, REGISTRY) == before
    assert before[0].incarnation == 3 and before[1].incarnation == 1


def test_an_interrupted_run_is_finished_by_the_next(dsn) -> None:
    with psycopg.connect(dsn) as conn:
        add_outbox(conn, "old", NOW - 20 * DAY, sent=True)
        closed = add_notice(conn, "cancelled", NOW - 500 * DAY, NOW - 499 * DAY)
        conn.execute("INSERT INTO status_queries (asked_at, channel) VALUES (%s, 'cli')",
                     (NOW - 800 * DAY,))
    run(dsn, retention(status_query_days=1000))  # the default partitions split out
    with psycopg.connect(dsn) as conn:
        add_notice(conn, "lapsed", NOW - 500 * DAY, NOW - 499 * DAY)
        # A reader holding status_queries: the drop of its old month waits, then gives up.
        holder = psycopg.connect(dsn)
        holder.execute("SELECT count(*) FROM status_queries")
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable):
            run(dsn, retention(lock_timeout_s=0.2))
    finally:
        holder.close()
    assert rows(dsn, "SELECT count(*) FROM outbox") == [(0,)]  # done before it stopped
    assert rows(dsn, "SELECT count(*) FROM notices") == [(0,)]
    assert rows(dsn, "SELECT count(*) FROM status_queries") == [(1,)]
    counts = run(dsn, retention())
    assert counts["status_query_partitions_dropped"] == 1
    assert (counts["outbox_partitions_dropped"], counts["notices_deleted"]) == (0, 0)
    assert rows(dsn, "SELECT count(*) FROM status_queries") == [(0,)]
    assert closed not in {i for i, in rows(dsn, "SELECT id FROM notices")}


@pytest.fixture()
def unmigrated(services) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = services.postgres.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    yield services.postgres.dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
            psycopg.sql.Identifier(name)))


def test_migration_0012_moves_the_rows_it_partitions(unmigrated) -> None:
    with psycopg.connect(unmigrated) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                     " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for m in migrations():
            if m.version < 12:
                conn.execute(m.sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                             (m.version, m.name))
        cut, closed = (conn.execute(
            "INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule,"
            " state, opened_at, deadline, last_seen, reminder_days, sms) VALUES"
            " ('unregistered', 'imei', %s, 0, 1, 1, 'r', %s, %s, %s, %s, '{}', true)"
            " RETURNING id", (key, state, NOW - 90 * DAY, NOW, NOW - 90 * DAY)).fetchone()[0]
            for key, state in ((1, "cut"), (2, "cancelled")))
        conn.execute("INSERT INTO notice_transitions (notice_id, at, from_state, to_state)"
                     " VALUES (%s, %s, null, 'open'), (%s, %s, null, 'open'),"
                     " (%s, %s, 'open', 'cancelled')", (cut, NOW - 90 * DAY, closed,
                                                        NOW - 90 * DAY, closed, NOW - 80 * DAY))
        add_outbox(conn, "notice-1-warning", NOW - 30 * DAY, sent=True)
        add_outbox(conn, "notice-1-cutoff", NOW - DAY, sent=False)
        conn.execute("INSERT INTO status_queries (asked_at, channel, imei_key) VALUES"
                     " (%s, 'cli', 7)", (NOW - 100 * DAY,))
    assert migrate(unmigrated) == [f"{m.version:04d}_{m.name}" for m in migrations()
                                   if m.version >= 12]
    assert rows(unmigrated, "SELECT idempotency_key, sent_at IS NULL FROM outbox ORDER BY id"
                ) == [("notice-1-warning", False), ("notice-1-cutoff", True)]
    assert rows(unmigrated, "SELECT id, closed_at FROM notices ORDER BY id") == [
        (cut, None), (closed, NOW - 80 * DAY)]
    assert rows(unmigrated, "SELECT count(*) FROM notice_transitions") == [(3,)]
    assert rows(unmigrated, "SELECT imei_key FROM status_queries") == [(7,)]
    run(unmigrated, retention())
    for spec in (OUTBOX, TRANSITIONS, STATUS_QUERIES):
        assert rows(unmigrated, f"SELECT count(*) FROM {spec.default}") == [(0,)]  # noqa: S608
    assert OUTBOX.name((NOW - DAY).date()) in names(unmigrated, OUTBOX)
    assert STATUS_QUERIES.name((NOW - 100 * DAY).date()) in names(unmigrated, STATUS_QUERIES)
    # Published 30 days ago: split out of the default, then dropped (outbox_days = 7).
    assert rows(unmigrated, "SELECT idempotency_key FROM outbox") == [("notice-1-cutoff",)]
    with psycopg.connect(unmigrated) as conn:  # the ids go on from the moved rows'
        enqueue(conn, [OutboxMessage("sms", b"k", "notice-2-warning", b"b")], NOW_MS)
    assert rows(unmigrated, "SELECT max(id) FROM outbox") == [(3,)]
