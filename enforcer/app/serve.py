"""`eir-enforcer serve`: the N5g-eir front end (`enforcer.frontends.server`) and, when
`s13.enabled`, the S13 one (`enforcer.frontends.s13`), wired to their configuration, ports and
metrics and to the one state both answer from, which the follower keeps in step with what the
workers store in PostgreSQL; with `check_feed.publish_checks`, the checks both answer
published to the attach topic (`consumers.checkfeed`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import psycopg
import uvloop

from consumers.checkfeed import CheckFeed, CheckPublisher
from consumers.kafka import producer
from enforcer.app.process import STOP_SIGNALS, stop_on_signals, stop_or_leave
from enforcer.heap import give_back
from enforcer.listening import cannot_listen, listen
from enforcer.clock import Clock, clock_from
from enforcer.config import Config, ConfigError
from enforcer.db.connection import LazyConnection
from enforcer.db.migrate import require_migrated
from enforcer.engine.state import StateHolder
from enforcer.engine.imei import imei_rules
from enforcer.files.snapshots import load_snapshot
from enforcer.follow.followers import StateFollower
from enforcer.frontends.s13.answers import S13Answers
from enforcer.frontends.s13.node import S13Server
from enforcer.frontends.server import CHECK_PATH, EquipmentChecks
from enforcer.frontends.transport import serve_checks
from enforcer.logs import LIFECYCLE, describe
from enforcer.reach import Backoff, Stopped, when_reachable
from metrics.checkfeed import CheckFeedMetrics
from metrics.eic import EicMetrics
from metrics.s13 import S13Metrics
from rules.policy import load_policy


log = logging.getLogger("eir.eic")
lifecycle = logging.getLogger(LIFECYCLE)


class Readiness:
    """serve is ready once the workers' changes were taken in and, with S13 on, while its
    node answers (/readyz)."""

    def __init__(self) -> None:
        self.followed = threading.Event()
        self.s13: S13Server | None = None

    def set(self) -> None:
        self.followed.set()

    def is_set(self) -> bool:
        return self.followed.is_set() and (self.s13 is None or self.s13.alive())


class Serving(NamedTuple):
    app: EquipmentChecks
    follower: StateFollower
    metrics: EicMetrics
    ready: Readiness
    s13: S13Server | None  # None: s13.enabled is false
    publisher: CheckPublisher | None  # None: check_feed.publish_checks is false


def follow_forever(follower: StateFollower, config: Config, metrics: EicMetrics,
                   ready: Readiness, stop: threading.Event) -> None:
    """Take in the workers' changes every `eic.follow_s`, until `stop`, on one connection
    (opened again after a failure). Ready after the first round that worked; a failed round
    keeps answering from the state held."""
    database = LazyConnection(partial(psycopg.connect, config.postgres.dsn, autocommit=True))
    try:
        while True:
            try:
                with database.held() as conn:
                    follower.follow(conn)
                metrics.followed_at.set(time.time())
                ready.set()
            except Exception as exc:  # noqa: BLE001 - the database away: retry next round
                metrics.follow_failures.inc()
                log.warning("workers' changes not taken in", extra={"error": describe(exc)})
            if stop.wait(config.eic.follow_s):
                return
    finally:
        database.drop()


def build_checks(config: Config, clock: Clock | None = None,
                 stop: threading.Event | None = None) -> Serving:
    """The checks on the snapshot, once the database can be reached (tried every
    eic.follow_s meanwhile, as the following does), S13's on the same state when enabled (not
    started). Raises Stopped when `stop` is set first."""
    when_reachable(partial(require_migrated, config.postgres.dsn), "postgres",
                   Backoff(config.eic.follow_s, config.eic.follow_s), stop or threading.Event())
    holder = StateHolder(load_snapshot(Path(config.state.dir),
                                       load_policy(config.policy.file or None)))
    rules = imei_rules(config)
    metrics = EicMetrics()
    metrics.watch(holder)
    ready = Readiness()
    clock = clock or clock_from(config.clock.file)
    feed_metrics = CheckFeedMetrics(metrics.collectors)
    feed = publisher = None
    if config.check_feed.publish_checks:
        feed = CheckFeed(config.check_feed.queue_size, feed_metrics)
        publisher = CheckPublisher(feed, partial(producer, config.kafka,
                                                 config.check_feed.ack_timeout_s),
                                   config.kafka.attach_topic, config.check_feed.ack_timeout_s,
                                   feed_metrics)
    app = EquipmentChecks(holder, rules, clock, metrics, ready, feed)
    s13 = None
    if config.s13.enabled:
        s13_metrics = S13Metrics(metrics.collectors)
        answers = S13Answers(holder, rules, clock, s13_metrics, config.s13.origin_host,
                             config.s13.origin_realm, feed)
        s13 = ready.s13 = S13Server(config.s13, answers, s13_metrics)
    give_back()  # the load's transients
    return Serving(app, StateFollower(config, holder, rules), metrics, ready, s13, publisher)


def start_s13(s13: S13Server, config: Config) -> None:
    """The S13 node listening and answering. Raises ConfigError naming the key at fault when
    it cannot listen, or for a transport the node does not serve (s13.transport: TCP only)."""
    try:
        s13.start()
    except OSError as exc:
        raise cannot_listen("s13", config.s13.bind, config.s13.port, exc) from exc
    lifecycle.info("S13 ME-Identity-Check started", extra={
        "listen": f"{config.s13.bind}:{config.s13.port}", "transport": config.s13.transport,
        "origin_host": config.s13.origin_host, "origin_realm": config.s13.origin_realm,
        "peers": len(config.s13.peers)})


def run_serve(config: Config) -> int:
    stop = threading.Event()
    stop_on_signals(stop)  # before the start, which may wait for the database
    # First: a port in use stops nothing half-started.
    listening = listen("eic", config.eic.bind, config.eic.port, config.eic.backlog)
    try:
        app, follower, metrics, ready, s13, publisher = build_checks(config, stop=stop)
        if s13 is not None:
            start_s13(s13, config)
    except Stopped:
        listening.close()
        log.info("equipment checks stopped before they started")
        return 0
    except ConfigError:
        listening.close()
        raise
    # The first round runs here, so the first answer already has the workers' changes.
    following = threading.Thread(target=follow_forever, name="eir-eic-follow",
                                 args=(follower, config, metrics, ready, stop), daemon=True)
    following.start()
    # Its own stop: the checks answered until the front ends stop are published after them.
    feed_stop = threading.Event()
    publishing = threading.Thread(target=publisher.run, name="eir-check-feed",
                                  args=(feed_stop,), daemon=True) if publisher else None
    if publishing is not None:
        publishing.start()
        lifecycle.info("checks published as attach events", extra={
            "topic": config.kafka.attach_topic, "queue_size": config.check_feed.queue_size})
    try:
        uvloop.run(_serve(app, config, listening, stop))
    finally:
        stop.set()
        stop_on_signals(stop)  # the loop's handlers are gone: another signal ends it now
        following.join()
        if s13 is not None:
            s13.stop()
        if publishing is not None:
            feed_stop.set()
            publishing.join()
    lifecycle.info("equipment checks stopped")
    return 0


async def _serve(app: EquipmentChecks, config: Config, listening: socket.socket,
                 stop: threading.Event) -> None:
    stopping = asyncio.Event()

    def _stop(signum: int) -> None:
        stop_or_leave(stop, signum)
        stopping.set()

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, _stop, signum)
    if stop.is_set():  # asked during the start
        stopping.set()

    def started(port: int) -> None:
        # It consumes no topic: what the workers store is taken from PostgreSQL.
        lifecycle.info("equipment checks started", extra={
            "listen": f"{config.eic.bind}:{port}", "path": CHECK_PATH,
            "follows": "postgres", "follow_s": config.eic.follow_s})

    await serve_checks(app, config.eic.bind, config.eic.port, config.eic.backlog, stopping,
                       sock=listening, listening=started)
