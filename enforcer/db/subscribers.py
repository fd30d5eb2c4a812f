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

# COPY's binary form (PostgreSQL docs, "COPY", Binary Format): a 19-byte header (signature,
# flags, no extension), then per row a field count and each field's length and bytes, big
# endian, then -1. Both columns are NOT NULL bigints: every row is these 26 bytes.
COPY_HEADER_BYTES = 19
COPY_ROW = np.dtype([("fields", ">i2"), ("imsi_bytes", ">i4"), ("imsi", ">i8"),
                     ("msisdn_bytes", ">i4"), ("msisdn", ">i8")])
COPY_TRAILER_BYTES = 2
# In the key's order: the map takes sorted IMSIs as they come, where sorting them itself
# would hold three more copies of 80 M of them at once.
COPY_NUMBERS = ("COPY (SELECT imsi, msisdn FROM subscribers{where} ORDER BY imsi)"
                " TO STDOUT (FORMAT binary)")


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
    """(IMSIs, their MSISDNs, both uint64) recorded since `since`, or all of them when None,
    and the time to ask from next (the database's clock)."""
    (now,) = conn.execute("SELECT clock_timestamp()").fetchone()
    where = psycopg.sql.SQL("") if since is None else psycopg.sql.SQL(
        " WHERE recorded_at >= {}").format(psycopg.sql.Literal(since))
    imsis, msisdns = _copied(conn, psycopg.sql.SQL(COPY_NUMBERS).format(where=where))
    return imsis, msisdns, now


def _copied(conn: psycopg.Connection, statement: psycopg.sql.Composed
            ) -> tuple[np.ndarray, np.ndarray]:
    """The rows, read as COPY's binary rows into columns a chunk at a time: no Python object
    per subscriber (80 M of them would take minutes and gigabytes, and a follower's rounds
    read again what changed within the last minute)."""
    imsis, msisdns = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
    pending = bytearray()
    header = COPY_HEADER_BYTES  # still to skip
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in copy:
            pending += chunk
            skipped = min(header, len(pending))
            del pending[:skipped]
            header -= skipped
            whole = len(pending) // COPY_ROW.itemsize * COPY_ROW.itemsize
            rows = np.frombuffer(bytes(pending[:whole]), COPY_ROW)
            imsis.append(rows["imsi"].astype(np.uint64))
            msisdns.append(rows["msisdn"].astype(np.uint64))
            del pending[:whole]
    if header or len(pending) != COPY_TRAILER_BYTES:
        raise ValueError("COPY of subscribers did not end with its trailer")
    # One column at a time, its chunks let go before the next: a column's bytes less at
    # the peak.
    imsi_column = np.concatenate(imsis)
    imsis.clear()
    return imsi_column, np.concatenate(msisdns)
