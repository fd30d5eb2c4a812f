"""subscribers: the subscribers' numbers by IMSI (migration 0013), one row per home IMSI,
written in the attach batch's transaction and by `subscribers import` (`record_numbers`),
and read by `serve` (`numbers_since`), which keeps them in memory
(`enforcer.engine.numbers`)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import psycopg

from enforcer.engine.numbers import LearnedPairs

# seen_at moves on with the same number only once it is this old: retention
# (retention.subscriber_days, far longer) counts from it, and a subscriber who attaches all
# day long costs one write a month, not one a batch.
SEEN_AT_STEP_DAYS = 30
# A number seen later replaces the one held (seen at the same time, the one written last: a
# provisioning file's later row); the same number seen SEEN_AT_STEP_DAYS later moves seen_at
# on, and only that; anything else (a replay, a partition read late) writes nothing. Only a
# new number moves recorded_at, which `serve` follows. Rows are locked in IMSI order (the
# pairs come sorted), so two workers' batches never wait on each other in a cycle.
UPSERT = f"""
INSERT INTO subscribers (imsi, msisdn, seen_at)
SELECT i, m, to_timestamp(s / 1000.0)
FROM unnest(%b::int8[], %b::int8[], %b::int8[]) AS u(i, m, s)
ON CONFLICT (imsi) DO UPDATE SET msisdn = excluded.msisdn, seen_at = excluded.seen_at,
    recorded_at = CASE WHEN excluded.msisdn <> subscribers.msisdn THEN clock_timestamp()
                       ELSE subscribers.recorded_at END
WHERE excluded.seen_at >= subscribers.seen_at
    AND (excluded.msisdn <> subscribers.msisdn
         OR excluded.seen_at >= subscribers.seen_at + interval '{SEEN_AT_STEP_DAYS} days')
"""  # noqa: S608

# Read a page of NUMBERS_PAGE rows at a time, each page one row of two bytea values the
# server aggregates (int8send: 8 bytes big endian an IMSI, an MSISDN), in IMSI order (the map
# takes sorted IMSIs as they come, where sorting them itself would hold three more copies of
# 80 M of them at once). COPY gave one message a row, which psycopg hands over one at a
# time: 1 µs a row to read (7 µs with the numpy work a row), 150 M rows a slow start for
# `serve`; a page costs about 0.5 µs a row.
NUMBERS_PAGE = 1_000_000
# Two statements, not one with "since IS NULL OR ...": a prepared statement's generic plan
# would serve the whole read and the follow rounds alike, one of them badly.
PAGE_NUMBERS = """
SELECT count(*), max(imsi),
       string_agg(int8send(imsi), ''::bytea ORDER BY imsi),
       string_agg(int8send(msisdn), ''::bytea ORDER BY imsi)
FROM (SELECT imsi, msisdn FROM subscribers WHERE imsi > %(after)s{since}
      ORDER BY imsi LIMIT %(page)s) AS page
"""
ALL_NUMBERS = PAGE_NUMBERS.format(since="")
NUMBERS_SINCE = PAGE_NUMBERS.format(since=" AND recorded_at >= %(since)s")
BIG_ENDIAN_INT8 = np.dtype(">i8")
# No IMSI is negative: the first page starts above this.
BEFORE_ANY_IMSI = -1


def record_numbers(conn: psycopg.Connection, pairs: LearnedPairs) -> int:
    """Upsert the pairs (one per IMSI, sorted by IMSI) in the caller's transaction; returns
    how many were offered."""
    if not len(pairs):
        return 0
    # Binary parameters (%b): see db/history.py, the text form costs four times the CPU.
    conn.execute(UPSERT, (pairs.imsi.astype(np.int64).tolist(),
                          pairs.msisdn.astype(np.int64).tolist(), pairs.seen_ms.tolist()))
    return len(pairs)


def numbers_since(conn: psycopg.Connection, since: datetime | None
                  ) -> tuple[np.ndarray, np.ndarray, datetime]:
    """(IMSIs ascending, their MSISDNs, both uint64) recorded since `since`, or all of them
    when None, and the time to ask from next (the database's clock, taken first: a row
    written while the pages are read is asked for again next time)."""
    (now,) = conn.execute("SELECT clock_timestamp()").fetchone()
    imsis, msisdns = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
    after = BEFORE_ANY_IMSI
    statement = ALL_NUMBERS if since is None else NUMBERS_SINCE
    while True:
        count, after, imsi_bytes, msisdn_bytes = conn.execute(
            statement, {"after": after, "since": since, "page": NUMBERS_PAGE}).fetchone()
        if not count:
            break
        imsis.append(np.frombuffer(imsi_bytes, BIG_ENDIAN_INT8).astype(np.uint64))
        msisdns.append(np.frombuffer(msisdn_bytes, BIG_ENDIAN_INT8).astype(np.uint64))
    # One column at a time, its pages let go before the next: a column's bytes less at the
    # peak.
    imsi_column = np.concatenate(imsis)
    imsis.clear()
    return imsi_column, np.concatenate(msisdns), now
