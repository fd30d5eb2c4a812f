"""The job lock and the record of job runs. The lock is a session-level advisory lock on
the run's own connection: held for as long as the job takes, and released by PostgreSQL if
the worker dies holding it."""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import msgspec
import psycopg

from enforcer.db.locks import try_lock, unlock

# The advisory-lock namespace of jobs (the first of the two 32-bit keys); the second is
# derived from the job's name.
JOB_LOCK_CLASS = 7_253_003
LOCK_POLL_S = 0.5


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # another worker held the job's lock for longer than we wait


@dataclass(frozen=True)
class JobRun:
    id: int
    job: str
    worker: str
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    counts: dict[str, int] | None
    error: str | None


def _lock_key(job: str) -> int:
    return zlib.crc32(job.encode()) - 2**31  # an int4


def take_lock(conn: psycopg.Connection, job: str, wait_s: float,
              stop: threading.Event) -> bool:
    """Wait up to `wait_s` for the job's lock; False if another worker kept it that long."""
    waited = 0.0
    while True:
        if try_lock(conn, JOB_LOCK_CLASS, _lock_key(job)):
            return True
        if waited >= wait_s or stop.wait(LOCK_POLL_S):
            return False
        waited += LOCK_POLL_S


def release_lock(conn: psycopg.Connection, job: str) -> None:
    unlock(conn, JOB_LOCK_CLASS, _lock_key(job))


def run_started(conn: psycopg.Connection, job: str, worker: str, attempt: int,
                at: datetime) -> int:
    (run_id,) = conn.execute(
        "INSERT INTO job_runs (job, worker, attempt, started_at) VALUES (%s, %s, %s, %s)"
        " RETURNING id", (job, worker, attempt, at)).fetchone()
    return run_id


def run_ended(conn: psycopg.Connection, run_id: int, at: datetime, outcome: Outcome,
              counts: dict[str, int] | None = None, error: str | None = None) -> None:
    conn.execute("UPDATE job_runs SET ended_at = %s, outcome = %s, counts = %s, error = %s"
                 " WHERE id = %s",
                 (at, outcome.value,
                  None if counts is None else msgspec.json.encode(counts).decode(),
                  error, run_id))


def recent_runs(conn: psycopg.Connection, job: str | None = None,
                limit: int = 50) -> list[JobRun]:
    return [JobRun(*row) for row in conn.execute(
        "SELECT id, job, worker, attempt, started_at, ended_at, outcome, counts, error"
        " FROM job_runs WHERE %(job)s::text IS NULL OR job = %(job)s"
        " ORDER BY started_at DESC, id DESC LIMIT %(limit)s", {"job": job, "limit": limit})]
