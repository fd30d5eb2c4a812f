"""`eir-enforcer run`: wire the attach worker to its adapters and run it until SIGTERM."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable, TypeVar

import psycopg
from apscheduler.schedulers.base import BaseScheduler

from consumers.attach import AttachWorker
from consumers.kafka import attach_consumer, outbox_reader, producer, registry_consumer
from consumers.outbox import OutboxRelay
from consumers.registry_events import RegistryEventConsumer
from enforcer.engine.imei import imei_rules
from enforcer.clock import MS_PER_S, Clock, clock_from
from enforcer.config import Config
from enforcer.db.jobs import Outcome
from enforcer.db.migrate import require_migrated
from enforcer.endpoints.server import HttpServer, listen_http, serve_endpoints
from enforcer.jobs.catalog import worker_jobs
from enforcer.app.process import stop_on_signals
from enforcer.heap import give_back
from enforcer.logs import LIFECYCLE
from enforcer.reach import Backoff, Stopped, when_reachable
from enforcer.db.notices import live_sms_kinds
from enforcer.engine.noticemessages import check_templates
from enforcer.jobs.schedule import Job, JobRunner, scheduler_for, worker_name
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import load_snapshot
from enforcer.notices.rounds import NoticeRounds, SweepLoop
from metrics.worker import WorkerMetrics
from rules.policy import Condition, Policy, PolicyError, load_policy

log = logging.getLogger("eir.worker")
T = TypeVar("T")
lifecycle = logging.getLogger(LIFECYCLE)
NO_BLOCKED_TACS = ("no blocked TACs: tac_blocked is off until the regulator's list is imported"
                   " (registry import --kind tac_blocked)")
NO_TAC_DATABASE = ("no TAC database: tac_unallocated and rat_inconsistent are off until one is"
                   " imported (registry import --kind tac)")


class Worker:
    """The attach loop in the caller's thread, the registry loop and the notice sweep beside
    it, and the scheduled jobs, on one state."""

    def __init__(self, attach: AttachWorker, registry_events: RegistryEventConsumer,
                 rounds: NoticeRounds, sweeps: SweepLoop, jobs: list[Job], runner: JobRunner,
                 stopping: threading.Event, scheduler: BaseScheduler,
                 http: HttpServer | None) -> None:
        self._attach = attach
        self._rounds = rounds
        self._sweeps = sweeps
        self._http = http
        self._registry_events = registry_events
        self._jobs = {job.name: job for job in jobs}
        self._runner = runner
        self._stopping = stopping  # the runner's: set when the worker stops
        self._scheduler = scheduler

    @property
    def metrics(self) -> WorkerMetrics:
        return self._attach.metrics

    def run_job(self, name: str) -> Outcome:
        """Run a scheduled job now, in the caller's thread, as its schedule would."""
        return self._runner.run(self._jobs[name])

    def run(self, stop: threading.Event) -> None:
        follower = threading.Thread(target=self._registry_events.run, args=(stop,),
                                    name="eir-registry")
        follower.start()
        self._scheduler.start()
        self._sweeps.start()
        try:
            self._attach.run(stop)
        finally:
            stop.set()
            self._stopping.set()
            self._sweeps.stop()
            self._scheduler.shutdown(wait=True)
            follower.join()

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._attach.close()
        self._registry_events.close()
        self._rounds.close()


def build_worker(config: Config, clock: Clock | None = None,
                 stop: threading.Event | None = None) -> Worker:
    """The worker, ready to run. The database and the broker are waited for
    while they cannot be reached (worker.retry_first_s, doubling to retry_max_s). Raises
    ConfigError (http.port in use among them) and Stopped when `stop` is set meanwhile."""
    stop = stop or threading.Event()
    listening = listen_http(config.http)  # first: a port in use stops nothing half-started
    backoff = Backoff(config.worker.retry_first_s, config.worker.retry_max_s)

    def database(step: Callable[[], T]) -> T:
        return when_reachable(step, "postgres", backoff, stop)

    def broker(step: Callable[[], T]) -> T:
        return when_reachable(step, "kafka", backoff, stop)

    policy = load_policy(config.policy.file or None)
    flags_outlast_late_attaches(policy, config)
    database(partial(_check_database, config, policy))
    began = time.perf_counter()
    holder = StateHolder(load_snapshot(Path(config.state.dir), policy))
    if holder.current.tacs is None:
        log.warning(NO_TAC_DATABASE)
    if holder.current.blocked_tacs is None and any(
            rule.when is Condition.TAC_BLOCKED for rule in policy.rules):
        log.warning(NO_BLOCKED_TACS)
    metrics = WorkerMetrics()
    metrics.reload_seconds.observe(time.perf_counter() - began)
    metrics.watch_state(holder, Path(config.state.dir))
    clock = clock or clock_from(config.clock.file)
    rules = imei_rules(config)
    connect = partial(psycopg.connect, config.postgres.dsn, autocommit=True)
    # The first client made asks a broker for the cluster: the others follow it at once.
    messages = broker(partial(producer, config.kafka))
    stopping = threading.Event()
    runner = JobRunner(config.jobs, connect, worker_name(config.worker.name), clock,
                       metrics.jobs, stopping)
    jobs = worker_jobs(config, holder, rules, clock, connect, metrics.reload_seconds.observe)
    scheduler = scheduler_for(jobs, runner, config.jobs)
    relay = OutboxRelay(config, clock, metrics.notices, messages,
                        broker(partial(outbox_reader, config.kafka)))
    rounds = NoticeRounds(config, holder, clock, metrics.notices, connect, relay)
    sweeps = SweepLoop(rounds, config.notices.sweep_every_s, config.notices.woken_gap_s)

    def touched(imeis: set[int], msisdns: set[int]) -> None:
        rounds.touch(imeis, msisdns)
        sweeps.wake()

    registry_events = RegistryEventConsumer(
        config, holder, rules, clock, metrics, broker(partial(registry_consumer, config.kafka)),
        messages, connect, touched)
    database(registry_events.restore)  # before any attach is decided
    database(rounds.start)  # the cut-off list in memory before any attach is decided
    attach = AttachWorker(config, holder, rules, clock, metrics,
                          broker(partial(attach_consumer, config.kafka,
                                         config.worker.batch_max_events)),
                          messages, connect, sweeps.wake,
                          lambda imeis: touched(imeis, set()))
    http = serve_endpoints(config, listening, holder, rules, metrics, clock,
                           {"state": registry_events.state_check,
                            "partitions": attach.partitions_check})
    worker = Worker(attach, registry_events, rounds, sweeps, jobs, runner, stopping, scheduler,
                    http)
    tune_gc(config.worker.gc_threshold)
    sys.setswitchinterval(config.worker.switch_interval_ms / MS_PER_S)
    give_back()  # the load's transients
    return worker


def _check_database(config: Config, policy: Policy) -> None:
    """The schema migrated, and a text for every kind of live notice that sends SMS."""
    require_migrated(config.postgres.dsn)
    with psycopg.connect(config.postgres.dsn) as conn:
        check_templates(config.notices, policy, load_policy(), live_sms_kinds(conn))


def tune_gc(threshold: int) -> None:
    """What is loaded at start (the state, the modules) lives as long as the process: frozen,
    the collector stops walking it at every full collection. Collections come less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)


def flags_outlast_late_attaches(policy: Policy, config: Config) -> None:
    """Raises PolicyError when an attach the decoder accepts (worker.max_event_age_days old)
    could meet a clone flag a worker has already dropped from memory (one ended a life
    before the newest, engine/clones.py Misused.with_flags), which serve and the record
    still hold."""
    days = policy.clones.flag_days
    if days and days <= config.worker.max_event_age_days:
        raise PolicyError(f"clones.flag_days: more than worker.max_event_age_days"
                          f" ({config.worker.max_event_age_days}), or a late attach could be"
                          " judged by a flag this worker has dropped")


def run_worker(config: Config) -> int:
    stop = threading.Event()
    stop_on_signals(stop)  # before the start, which may wait for the database or the broker
    try:
        worker = build_worker(config, stop=stop)
    except Stopped:
        log.info("worker stopped before it started")
        return 0
    kafka = config.kafka
    # HTTP is up already; the loops start next.
    lifecycle.info("worker started", extra={
        "http": None if worker.http_port is None else f"{config.http.bind}:{worker.http_port}",
        "bootstrap_servers": kafka.bootstrap_servers, "attach_topic": kafka.attach_topic,
        "group": kafka.group_id, "registry_topic": kafka.registry_topic})
    try:
        worker.run(stop)
    finally:
        worker.close()
    lifecycle.info("worker stopped")
    return 0
