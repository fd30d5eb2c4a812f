"""Session-level advisory locks: held until released, and released by PostgreSQL if the
session ends first (a worker that dies holding one blocks nobody). A key is one bigint or
two int4s; PostgreSQL keeps the two forms apart, so (7, 1) and 7 are different locks."""

from __future__ import annotations

import psycopg

# By the number of integers in the key.
TRY_LOCK = {1: "SELECT pg_try_advisory_lock(%s)", 2: "SELECT pg_try_advisory_lock(%s, %s)"}
UNLOCK = {1: "SELECT pg_advisory_unlock(%s)", 2: "SELECT pg_advisory_unlock(%s, %s)"}


def try_lock(conn: psycopg.Connection, *key: int) -> bool:
    """Take the lock if nobody holds it; False at once if another session does. Raises
    KeyError for a key of neither form."""
    (taken,) = conn.execute(TRY_LOCK[len(key)], key).fetchone()
    return taken


def unlock(conn: psycopg.Connection, *key: int) -> None:
    """Release a lock this session holds."""
    conn.execute(UNLOCK[len(key)], key)
