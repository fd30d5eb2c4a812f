"""clone_flags: the IMEIs clone detection flagged; and, for a newly flagged IMEI, the SIMs
the slot-usage history saw with it within the window."""

from __future__ import annotations

from datetime import datetime

import psycopg

from enforcer.clock import utc_datetime

FlagRow = tuple[int, str, int, int, int]  # imei_key, reason, flagged ms, imsi, msisdn


def record_flags(conn: psycopg.Connection, rows: list[FlagRow]) -> None:
    """A flag replaces an IMEI's earlier one (ended, or raised by another worker at the same
    time), and is recorded again so that the followers see it."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO clone_flags (imei_key, reason, flagged_at, imsi, msisdn)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (imei_key) DO UPDATE"
            " SET reason = EXCLUDED.reason, flagged_at = EXCLUDED.flagged_at,"
            " imsi = EXCLUDED.imsi, msisdn = EXCLUDED.msisdn, recorded_at = clock_timestamp()"
            " WHERE clone_flags.flagged_at < EXCLUDED.flagged_at",
            [(key, reason, utc_datetime(ms), imsi, msisdn)
             for key, reason, ms, imsi, msisdn in rows])


def flagged_since(conn: psycopg.Connection, since: datetime | None
                  ) -> tuple[list[tuple[int, int]], datetime]:
    """(imei_key, flagged ms) of the flags recorded since `since` (all when None), and the
    time to ask from next."""
    (now,) = conn.execute("SELECT clock_timestamp()").fetchone()
    rows = conn.execute("SELECT imei_key, (extract(epoch FROM flagged_at) * 1000)::bigint"
                        " FROM clone_flags WHERE %(since)s::timestamptz IS NULL"
                        " OR recorded_at >= %(since)s", {"since": since}).fetchall()
    return rows, now


def any_flagged(conn: psycopg.Connection, imei_keys: list[int],
                flagged_after: datetime | None) -> bool:
    """Is one of these IMEIs flagged misused by a flag raised after `flagged_after` (a flag
    still in force; None: any)?"""
    (flagged,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM clone_flags WHERE imei_key = ANY(%s)"
        " AND (%s::timestamptz IS NULL OR flagged_at > %s))",
        (imei_keys, flagged_after, flagged_after)).fetchone()
    return flagged


def list_flags(conn: psycopg.Connection, limit: int) -> list[tuple]:
    """(imei_key, reason, flagged_at, imsi, msisdn, recorded_at), newest first."""
    return conn.execute("SELECT imei_key, reason, flagged_at, imsi, msisdn, recorded_at"
                        " FROM clone_flags ORDER BY recorded_at DESC, imei_key LIMIT %s",
                        (limit,)).fetchall()


def sims_within(conn: psycopg.Connection, imei_keys: list[int], since_ms: int
                ) -> list[tuple[int, int, int, int]]:
    """(imei_key, imsi, msisdn, last seen ms) of every SIM seen with these IMEIs since."""
    return conn.execute(
        "SELECT imei_key, imsi, (array_agg(msisdn ORDER BY last_seen DESC))[1],"
        " (extract(epoch FROM max(last_seen)) * 1000)::bigint FROM slot_usage"
        " WHERE imei_key = ANY(%s) AND last_seen >= %s GROUP BY imei_key, imsi",
        (imei_keys, utc_datetime(since_ms))).fetchall()
