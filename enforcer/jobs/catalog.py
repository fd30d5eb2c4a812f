"""The worker's scheduled jobs, bound to its state and database: snapshot reconcile, the fold
of registry changes, consistency check, retention."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import psycopg

from enforcer.clock import Clock, utc_datetime
from enforcer.config import Config
from enforcer.jobs.consistency import check_consistency
from enforcer.jobs.fold import fold_changes
from enforcer.engine.imei import ImeiRules
from enforcer.jobs.reconcile import reconcile
from enforcer.jobs.retention import RetentionRun, run_retention
from enforcer.jobs.schedule import Counts, Job
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import oldest_watermark, prune_generations

RECONCILE = "reconcile"
CONSISTENCY = "consistency"
RETENTION = "retention"
FOLD = "fold"


def first_month_kept(today: date, keep_days: int, max_event_age_days: int) -> date:
    """The oldest month retention keeps: every row younger than keep_days is in it or after,
    and so is every month an attach event young enough to be accepted could still reach."""
    return (today - timedelta(days=max(keep_days, max_event_age_days))).replace(day=1)


def worker_jobs(config: Config, holder: StateHolder, rules: ImeiRules, clock: Clock,
                connect: Callable[[], psycopg.Connection],
                reloaded: Callable[[float], None] = lambda seconds: None) -> list[Job]:
    directory = Path(config.state.dir)

    def reconcile_job() -> Counts:
        return reconcile(holder, config, clock, reloaded)

    def fold_job() -> Counts:
        return fold_changes(holder, config, reloaded)

    def consistency_job() -> Counts:
        with connect() as conn:
            return check_consistency(holder, conn, rules, config)

    def retention_job() -> Counts:
        now = utc_datetime(clock.now_ms())
        first_kept = first_month_kept(now.date(), config.history.keep_days,
                                      config.worker.max_event_age_days)
        # Generations first: the oldest one left on disk bounds the registry events kept.
        removed = prune_generations(directory)
        with connect() as conn:
            return {"generations_removed": removed, **run_retention(conn, RetentionRun(
                config.retention, first_kept, now, config.kafka.registry_topic,
                oldest_watermark(directory),
                holder.current.policy.clones.told_days(config.history.keep_days)))}

    return [Job(RECONCILE, config.jobs.reconcile_cron, reconcile_job),
            Job(FOLD, config.jobs.fold_cron, fold_job),
            Job(CONSISTENCY, config.jobs.consistency_cron, consistency_job, exclusive=False),
            Job(RETENTION, config.jobs.retention_cron, retention_job)]
