"""The audit record of IMEI status queries: one row per call, answered or refused, written
before any answer leaves (the answer may reveal another subscriber's MSISDN)."""

from __future__ import annotations

from datetime import datetime

import psycopg


def record_query(conn: psycopg.Connection, *, imei_key: int | None, requester: int | None,
                 status: str | None, revealed: int | None, channel: str, client: str | None,
                 peer: str | None, refused: str | None, asked_at: datetime) -> None:
    """One call: the IMEI key and the requester's MSISDN as parsed (None when unreadable),
    the status answered and the MSISDN revealed, or why it was refused; the channel ("cli"
    or "http"), the HTTP client's token name and its address; when, by the worker's clock
    (retention judges the row by it)."""
    conn.execute("INSERT INTO status_queries (imei_key, requester, status, revealed, channel,"
                 " client, peer, refused, asked_at)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                 (imei_key, requester, status, revealed, channel, client, peer, refused,
                  asked_at))
