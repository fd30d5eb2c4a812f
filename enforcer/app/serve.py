"""`eir-enforcer serve`: the N5g-eir front end (`enforcer.frontends.server`) wired to its
configuration, its port, its metrics and the follower that keeps its state in step with what
the workers store in PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from functools import partial
from pathlib import Path

import psycopg
import uvloop

from enforcer.app.process import STOP_SIGNALS, stop_on_signals, stop_or_leave
from enforcer.listening import listen
from enforcer.clock import Clock, clock_from
from enforcer.config import Config
from enforcer.db.migrate import require_migrated
from enforcer.engine.state import StateHolder
from enforcer.engine.imei import imei_rules
from enforcer.files.snapshots import load_snapshot
from enforcer.follow.followers import StateFollower
from enforcer.frontends.server import CHECK_PATH, EquipmentChecks
from enforcer.frontends.transport import serve_checks
from enforcer.logs import LIFECYCLE, describe
from enforcer.reach import Backoff, Stopped, when_reachable
from metrics.eic import EicMetrics
from rules.policy import load_policy

log = logging.getLogger("eir.eic")
lifecycle = logging.getLogger(LIFECYCLE)


def follow_forever(follower: StateFollower, config: Config, metrics: EicMetrics,
                   ready: threading.Event, stop: threading.Event) -> None:
    """Take in the workers' changes every `eic.follow_s`, until `stop`. Ready after the first
    round that worked; a failed round keeps answering from the state held."""
    while True:
        try:
            with psycopg.connect(config.postgres.dsn, autocommit=True) as conn:
                follower.follow(conn)
            metrics.followed_at.set(time.time())
            ready.set()
        except Exception as exc:  # noqa: BLE001 - the database away: retry next round
            metrics.follow_failures.inc()
            log.warning("workers' changes not taken in", extra={"error": describe(exc)})
        if stop.wait(config.eic.follow_s):
            return


def build_checks(config: Config, clock: Clock | None = None,
                 stop: threading.Event | None = None
                 ) -> tuple[EquipmentChecks, StateFollower, EicMetrics, threading.Event]:
    """The checks on the snapshot, once the database can be reached (tried every
    eic.follow_s meanwhile, as the following does). Raises Stopped when `stop` is set
    first."""
    when_reachable(partial(require_migrated, config.postgres.dsn), "postgres",
                   Backoff(config.eic.follow_s, config.eic.follow_s), stop or threading.Event())
    holder = StateHolder(load_snapshot(Path(config.state.dir),
                                       load_policy(config.policy.file or None)))
    rules = imei_rules(config)
    metrics = EicMetrics()
    metrics.watch(holder)
    ready = threading.Event()
    app = EquipmentChecks(holder, rules, clock or clock_from(config.clock.file), metrics, ready)
    return app, StateFollower(config, holder, rules), metrics, ready


def run_serve(config: Config) -> int:
    stop = threading.Event()
    stop_on_signals(stop)  # before the start, which may wait for the database
    # First: a port in use stops nothing half-started.
    listening = listen("eic", config.eic.bind, config.eic.port, config.eic.backlog)
    try:
        app, follower, metrics, ready = build_checks(config, stop=stop)
    except Stopped:
        listening.close()
        log.info("equipment checks stopped before they started")
        return 0
    # The first round runs here, so the first answer already has the workers' changes.
    following = threading.Thread(target=follow_forever, name="eir-eic-follow",
                                 args=(follower, config, metrics, ready, stop), daemon=True)
    following.start()
    try:
        uvloop.run(_serve(app, config, listening, stop))
    finally:
        stop.set()
        stop_on_signals(stop)  # the loop's handlers are gone: another signal ends it now
        following.join()
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
