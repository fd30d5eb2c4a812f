"""The retention job: every table bounded (issue 20 part 3). One run, under the job's lock,
takes each table in turn; each step is idempotent and commits as it goes (a partition dropped
whole, rows deleted in batches of retention.batch_rows), so a run stopped anywhere is
finished by the next. What each table keeps: docs/operations.md, "What the database keeps".

Every table is judged by the clock that wrote its times, the worker's (the injected Clock):
a test or the demo on a fast clock sees a year's retention in minutes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable

import psycopg

from enforcer.config import RetentionConfig
from enforcer.db import partitions as parts
from enforcer.db.history import drop_months_before
from enforcer.db.registry_events import prune_incarnations, prune_registry_events
from enforcer.db.retention import (all_sent, delete_clone_flags, delete_closed_notices,
                                   delete_job_runs, delete_subscribers, fill_closed_at,
                                   schedule_cuts, transitions_expired)

# Per partition of the registry topic, the (incarnation, next offset) a fold has laid into
# the snapshot; None until a fold has run (nothing is pruned).
RegistryWatermark = dict[int, tuple[int, int]]


@dataclass(frozen=True)
class RetentionRun:
    settings: RetentionConfig
    slot_usage_first_kept: date  # jobs.catalog.first_month_kept
    now: datetime  # the worker's clock
    registry_topic: str
    registry_watermark: RegistryWatermark | None
    clone_flag_days: int  # CloneRules.told_days: a flag's row kept this long, 0 for ever


def run_retention(conn: psycopg.Connection, run: RetentionRun) -> dict[str, int]:
    """Every step on `conn` (autocommit: each step commits its own work); returns the counts
    recorded in job_runs and eir_job_items_total."""
    settings = run.settings
    counts = {"partitions_made": _ensure_ahead(conn, settings, run.now)}
    counts["slot_usage_partitions_dropped"] = len(
        drop_months_before(conn, run.slot_usage_first_kept))
    counts["outbox_partitions_dropped"] = _drop_expired(
        conn, parts.OUTBOX, run.now - timedelta(days=settings.outbox_days), settings,
        lambda name: all_sent(conn, name))
    closed_before = run.now - timedelta(days=settings.closed_notice_days)
    counts["transition_partitions_dropped"] = _drop_expired(
        conn, parts.TRANSITIONS, closed_before, settings,
        lambda name: transitions_expired(conn, name, closed_before))
    counts["closed_at_filled"] = _in_batches(lambda: fill_closed_at(conn, settings.batch_rows))
    counts["cuts_scheduled"] = _in_batches(
        lambda: schedule_cuts(conn, run.now, settings.batch_rows))
    counts["notices_deleted"] = _in_batches(
        lambda: delete_closed_notices(conn, closed_before, settings.batch_rows))
    counts["status_query_partitions_dropped"] = _drop_expired(
        conn, parts.STATUS_QUERIES, run.now - timedelta(days=settings.status_query_days),
        settings, lambda name: True)
    counts["job_runs_deleted"] = _in_batches(lambda: delete_job_runs(
        conn, run.now - timedelta(days=settings.job_run_days), settings.batch_rows))
    counts["clone_flags_deleted"] = 0 if not run.clone_flag_days else _in_batches(
        lambda: delete_clone_flags(conn, run.now - timedelta(days=run.clone_flag_days),
                                   settings.batch_rows))
    counts["subscribers_deleted"] = _in_batches(lambda: delete_subscribers(
        conn, run.now - timedelta(days=settings.subscriber_days), settings.batch_rows))
    counts["registry_events_deleted"] = 0 if run.registry_watermark is None else _in_batches(
        lambda: prune_registry_events(conn, run.registry_topic, run.registry_watermark,
                                      settings.batch_rows))
    counts["registry_incarnations_deleted"] = _in_batches(lambda: prune_incarnations(
        conn, run.now - timedelta(days=settings.registry_incarnation_days),
        settings.batch_rows))
    return counts


def _ensure_ahead(conn: psycopg.Connection, settings: RetentionConfig, now: datetime) -> int:
    """Partitions from today's period to partitions_ahead periods past it."""
    made = 0
    for spec in parts.TIME_PARTITIONED:
        end = spec.start(now.date())
        for _ in range(settings.partitions_ahead):
            end = spec.after(end)
        made += len(parts.ensure(conn, spec, now.date(), end, settings.lock_timeout_s))
    return made


def _drop_expired(conn: psycopg.Connection, spec: parts.TimePartitioned, ended_before: datetime,
                  settings: RetentionConfig, droppable: Callable[[str], bool]) -> int:
    """Drop each partition whose period ended before `ended_before` and that `droppable`
    passes; returns how many."""
    dropped = 0
    for start, name in parts.partitions(conn, spec):
        if parts.period_end(spec, start) > ended_before:
            break
        if droppable(name):
            parts.drop(conn, spec, name, settings.lock_timeout_s)
            dropped += 1
    return dropped


def _in_batches(delete: Callable[[], int]) -> int:
    """`delete` until it deletes nothing; the total."""
    total = 0
    while deleted := delete():
        total += deleted
    return total
