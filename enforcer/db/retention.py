"""What retention asks of the tables it bounds, and the rows it deletes. Each deletion is one
bounded batch in its own transaction: a run stopped anywhere has removed whole batches only,
and the next run goes on from there."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from enforcer.db.notices import LIVE_STATES


def all_sent(conn: psycopg.Connection, partition: str) -> bool:
    """Whether every message in this outbox partition is published."""
    return conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} WHERE sent_at IS NULL)")
                        .format(sql.Identifier(partition))).fetchone()[0]


def transitions_expired(conn: psycopg.Connection, partition: str, closed_before: datetime
                        ) -> bool:
    """Whether every notice with a transition in this partition was closed before
    `closed_before` (or is gone): none of them live, none closed since."""
    return conn.execute(sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM {} t JOIN notices n ON n.id = t.notice_id"
        " WHERE n.closed_at IS NULL OR n.closed_at >= %s)").format(sql.Identifier(partition)),
        (closed_before,)).fetchone()[0]


def fill_closed_at(conn: psycopg.Connection, limit: int) -> int:
    """Up to `limit` closed notices without closed_at (closed by a worker older than
    migration 0012, during a rolling upgrade) given their last transition's time; returns
    how many."""
    with conn.transaction():
        return conn.execute(
            f"UPDATE notices n SET closed_at = coalesce((SELECT max(t.at)"  # noqa: S608
            " FROM notice_transitions t WHERE t.notice_id = n.id), n.last_seen)"
            " WHERE n.id IN (SELECT id FROM notices"
            f" WHERE closed_at IS NULL AND state NOT IN {LIVE_STATES} LIMIT %s)",
            (limit,)).rowcount


def delete_closed_notices(conn: psycopg.Connection, closed_before: datetime, limit: int
                          ) -> int:
    """Up to `limit` notices closed before `closed_before`, with their transitions; returns
    how many notices. A notice a kept one names as its successor stays until that one goes.
    Live notices (cut ones among them) are never closed, so never taken."""
    with conn.transaction():
        ids = [i for i, in conn.execute(
            f"SELECT n.id FROM notices n WHERE n.state NOT IN {LIVE_STATES}"  # noqa: S608
            " AND n.closed_at < %s"
            " AND NOT EXISTS (SELECT 1 FROM notices m WHERE m.superseded_by = n.id"
            " AND NOT (m.closed_at < %s))"
            " ORDER BY n.closed_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (closed_before, closed_before, limit))]
        if not ids:
            return 0
        conn.execute("DELETE FROM notice_transitions WHERE notice_id = ANY(%s)", (ids,))
        # Whatever still names one of these as successor is itself closed before the cut
        # (the query's condition), and goes in this batch or a later one.
        conn.execute("UPDATE notices SET superseded_by = NULL WHERE superseded_by = ANY(%s)",
                     (ids,))
        return conn.execute("DELETE FROM notices WHERE id = ANY(%s)", (ids,)).rowcount


def delete_job_runs(conn: psycopg.Connection, started_before: datetime, limit: int) -> int:
    """Up to `limit` job runs started before `started_before`; returns how many."""
    with conn.transaction():
        return conn.execute(
            "DELETE FROM job_runs WHERE id IN (SELECT id FROM job_runs WHERE started_at < %s"
            " ORDER BY started_at LIMIT %s)", (started_before, limit)).rowcount


def delete_clone_flags(conn: psycopg.Connection, flagged_before: datetime, limit: int) -> int:
    """Up to `limit` clone flags raised before `flagged_before`; returns how many. The time
    is judged again as each row is deleted: a flag raised anew meanwhile stays."""
    with conn.transaction():
        return conn.execute(
            "DELETE FROM clone_flags WHERE imei_key IN (SELECT imei_key FROM clone_flags"
            " WHERE flagged_at < %(before)s ORDER BY flagged_at LIMIT %(limit)s)"
            " AND flagged_at < %(before)s",
            {"before": flagged_before, "limit": limit}).rowcount


def delete_subscribers(conn: psycopg.Connection, seen_before: datetime, limit: int) -> int:
    """Up to `limit` subscribers' numbers last seen before `seen_before` (a SIM that has not
    attached for that long: its seen_at moves on at least monthly while it attaches); returns
    how many."""
    with conn.transaction():
        return conn.execute(
            # Judged again as deleted: an attach may have moved seen_at on meanwhile.
            "DELETE FROM subscribers WHERE imsi IN (SELECT imsi FROM subscribers"
            " WHERE seen_at < %(before)s ORDER BY seen_at LIMIT %(limit)s)"
            " AND seen_at < %(before)s", {"before": seen_before, "limit": limit}).rowcount


def schedule_cuts(conn: psycopg.Connection, now: datetime, limit: int) -> int:
    """Up to `limit` cut notices with nothing scheduled (cut, or swept, by a worker older than
    migration 0014 during a rolling upgrade) made due at `now`, so that the sweep schedules
    their release; returns how many."""
    with conn.transaction():
        return conn.execute(
            "UPDATE notices SET next_due = %s WHERE id IN (SELECT id FROM notices"
            " WHERE state = 'cut' AND next_due IS NULL LIMIT %s FOR UPDATE SKIP LOCKED)",
            (now, limit)).rowcount
