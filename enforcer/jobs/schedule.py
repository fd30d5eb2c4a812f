"""Scheduled jobs: cron triggers (APScheduler) in every worker, and a runner that lets one
worker at a time run a given job (PostgreSQL advisory lock), retries a failed run, and
records each run in `job_runs` and in metrics.

A job is a function that does its work and returns counts; it either completes or raises
having changed nothing the others can see (each job builds aside and swaps), so a failed run
is simply run again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from enforcer.clock import MS_PER_S, Clock, utc_datetime
from enforcer.config import ConfigError, JobsConfig
from enforcer.configcheck import cron_fields
from enforcer.db.jobs import Outcome, release_lock, run_ended, run_started, take_lock
from enforcer.logs import describe
from metrics.jobs import JobMetrics

log = logging.getLogger("eir.jobs")

Counts = dict[str, int]


@dataclass(frozen=True)
class Job:
    name: str
    cron: str  # empty: not scheduled (it can still be run on demand)
    work: Callable[[], Counts]
    # One worker at a time (the job changes what all share); False for a job that looks
    # only at this worker's own memory, which every worker may run at once.
    exclusive: bool = True


def worker_name(configured: str) -> str:
    return configured or f"{socket.gethostname()}:{os.getpid()}"


class JobRunner:
    def __init__(self, settings: JobsConfig, connect: Callable[[], psycopg.Connection],
                 worker: str, clock: Clock, metrics: JobMetrics,
                 stop: threading.Event) -> None:
        self._settings = settings
        self._connect = connect
        self._worker = worker
        self._clock = clock
        self._metrics = metrics
        self._stop = stop

    def run(self, job: Job) -> Outcome:
        """Up to `attempts` tries, `retry_delay_s` apart; the last try's outcome."""
        outcome = Outcome.FAILED
        for attempt in range(1, self._settings.attempts + 1):
            if attempt > 1 and self._stop.wait(self._settings.retry_delay_s):
                break
            try:
                outcome = self._attempt(job, attempt)
            except psycopg.Error as exc:  # the database itself: the run could not even start
                log.warning("job not run", extra={"job": job.name, "error": describe(exc)})
                outcome = Outcome.FAILED
            self._metrics.runs.labels(job.name, outcome.value).inc()
            if outcome is not Outcome.FAILED:
                break
        return outcome

    def _now(self) -> datetime:
        return utc_datetime(self._clock.now_ms())

    def _attempt(self, job: Job, attempt: int) -> Outcome:
        with self._connect() as conn:
            if not job.exclusive:
                return self._locked(conn, job, attempt)
            if not take_lock(conn, job.name, self._settings.lock_wait_s, self._stop):
                run_id = run_started(conn, job.name, self._worker, attempt, self._now())
                run_ended(conn, run_id, self._now(), Outcome.SKIPPED)
                log.info("job skipped: another worker holds it", extra={"job": job.name})
                return Outcome.SKIPPED
            try:
                return self._locked(conn, job, attempt)
            finally:
                release_lock(conn, job.name)

    def _locked(self, conn: psycopg.Connection, job: Job, attempt: int) -> Outcome:
        """The run itself (under the job's lock when it is exclusive)."""
        run_id = run_started(conn, job.name, self._worker, attempt, self._now())
        began = time.monotonic()
        try:
            counts = job.work()
        except Exception as exc:  # whatever a job raises is recorded and retried
            run_ended(conn, run_id, self._now(), Outcome.FAILED, error=describe(exc))
            log.warning("job failed", extra={"job": job.name, "attempt": attempt,
                                             "error": describe(exc)})
            return Outcome.FAILED
        finally:
            self._metrics.duration.labels(job.name).observe(time.monotonic() - began)
        run_ended(conn, run_id, self._now(), Outcome.OK, counts)
        self._metrics.last_success.labels(job.name).set(self._clock.now_ms() / MS_PER_S)
        for item, count in counts.items():
            self._metrics.done.labels(job.name, item).inc(count)
        log.info("job done", extra={"job": job.name, **counts})
        return Outcome.OK


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """Five crontab fields, or six with seconds first. Days of the week are best written by
    name: APScheduler 3 counts them from Monday = 0, crontab from Sunday = 0."""
    try:
        return CronTrigger(timezone=timezone, **cron_fields(expression))
    except (ValueError, LookupError) as exc:
        raise ConfigError(f"cron expression {expression!r}: {exc}") from exc


def scheduler_for(jobs: list[Job], runner: JobRunner, settings: JobsConfig
                  ) -> BackgroundScheduler:
    """Not started yet: a bad expression is a configuration error before anything runs."""
    scheduler = BackgroundScheduler(timezone=settings.timezone)
    for job in jobs:
        if job.cron:
            # One run of a job at a time in this worker; runs missed meanwhile fold into one.
            scheduler.add_job(runner.run, cron_trigger(job.cron, settings.timezone),
                              args=(job,), id=job.name, max_instances=1, coalesce=True)
    return scheduler
