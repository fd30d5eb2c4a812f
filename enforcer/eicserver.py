"""`eir-enforcer serve`: the N5g-eir Equipment Identity Check over HTTP (granian, an HTTP
server in Rust, calling this RSGI application on one asyncio loop), on the state the
workers' stream keeps, followed from PostgreSQL.

Checks that arrive together are decided together: each request parks on a future, the first
schedules one flush on the loop, and the flush decides every parked check in one call of the
stream's vectorized decision. Under load a flush takes dozens of checks for the cost of a
few; alone, a check waits for nothing but itself."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import Counter
from functools import partial
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl

import msgspec
import psycopg
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from enforcer.build import imei_rules
from enforcer.clock import Clock, clock_from
from enforcer.config import Config
from enforcer.db.migrate import require_migrated
from enforcer.eic import Answer, Cause, Check, Problem, Status, answer_checks, read_check
from enforcer.following import StateFollower
from enforcer.imei import ImeiRules
from enforcer.logs import describe
from enforcer.state import StateHolder, load_snapshot
from metrics.eic import EicMetrics
from rules.policy import load_policy

log = logging.getLogger("eir.eic")

CHECK_PATH = "/n5g-eir-eic/v1/equipment-status"
JSON = [("content-type", "application/json")]
PROBLEM = [("content-type", "application/problem+json")]
UNKNOWN_ANSWER = "unknown"
BAD_REQUEST = "bad_request"
OTHER = "other"


def _problem(problem: Problem) -> tuple[int, list[tuple[str, str]], bytes]:
    return int(problem.status), PROBLEM, msgspec.json.encode(problem.as_json())


class EquipmentChecks:
    """The RSGI application."""

    def __init__(self, holder: StateHolder, rules: ImeiRules, clock: Clock,
                 metrics: EicMetrics, ready: threading.Event) -> None:
        self._holder = holder
        self._rules = rules
        self._clock = clock
        self._metrics = metrics
        self._ready = ready
        self._parked: list[tuple[Check, asyncio.Future[Answer]]] = []

    async def __call__(self, scope, proto) -> None:  # the RSGI entry point
        if scope.path == CHECK_PATH and scope.method == "GET":
            status, headers, body = await self._check(scope.query_string)
        elif scope.path == CHECK_PATH:
            self._metrics.answers.labels(OTHER).inc()
            status, headers, body = _problem(Problem(
                HTTPStatus.METHOD_NOT_ALLOWED, Cause.RESOURCE_URI_STRUCTURE_NOT_FOUND,
                "only GET is allowed here"))
            headers = headers + [("allow", "GET")]
        elif scope.path == "/metrics":
            status, headers = 200, [("content-type", CONTENT_TYPE_LATEST)]
            body = generate_latest(self._metrics.registry)
        elif scope.path == "/healthz":
            status, headers, body = 200, JSON, b'{"alive":true}'
        elif scope.path == "/readyz":
            ready = self._ready.is_set()
            status, headers = (200 if ready else 503), JSON
            body = msgspec.json.encode({"ready": ready})
        else:
            self._metrics.answers.labels(OTHER).inc()
            status, headers, body = _problem(Problem(
                HTTPStatus.NOT_FOUND, Cause.RESOURCE_URI_STRUCTURE_NOT_FOUND,
                f"no resource at {scope.path}"))
        proto.response_bytes(status, headers, body)

    async def _check(self, query_string: str) -> tuple[int, list[tuple[str, str]], bytes]:
        query: dict[str, str] = {}
        for name, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(name, value)
        check = read_check(query, self._rules)
        if isinstance(check, Problem):
            self._metrics.answers.labels(BAD_REQUEST).inc()
            return _problem(check)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._parked.append((check, future))
        if len(self._parked) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        answer = await future
        if isinstance(answer, Status):
            return 200, JSON, msgspec.json.encode(answer.as_json())
        return _problem(answer)

    def _flush(self) -> None:
        parked, self._parked = self._parked, []
        began = time.perf_counter()
        try:
            answers = answer_checks([c for c, _ in parked], self._holder.current,
                                    self._clock.now_ms())
        except Exception as exc:  # noqa: BLE001 - every parked request gets its 500
            log.error("equipment checks failed", extra={"error": describe(exc),
                                                        "checks": len(parked)})
            failed = Problem(HTTPStatus.INTERNAL_SERVER_ERROR, Cause.SYSTEM_FAILURE,
                             "the check failed; ask again")
            answers = [failed] * len(parked)
        self._metrics.batch_seconds.observe(time.perf_counter() - began)
        self._metrics.batch_checks.observe(len(parked))
        counts = Counter(a.status if isinstance(a, Status) else UNKNOWN_ANSWER
                         if a.status is HTTPStatus.NOT_FOUND else OTHER for a in answers)
        for answer, n in counts.items():
            self._metrics.answers.labels(answer).inc(n)
        for (_, future), answer in zip(parked, answers):
            if not future.done():  # its client may have gone
                future.set_result(answer)


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


def build_checks(config: Config, clock: Clock | None = None
                 ) -> tuple[EquipmentChecks, StateFollower, EicMetrics, threading.Event]:
    require_migrated(config.postgres.dsn)
    holder = StateHolder(load_snapshot(Path(config.state.dir),
                                       load_policy(config.policy.file or None)))
    rules = imei_rules(config)
    metrics = EicMetrics()
    metrics.watch(holder)
    ready = threading.Event()
    app = EquipmentChecks(holder, rules, clock or clock_from(config.clock.file), metrics, ready)
    return app, StateFollower(config, holder, rules), metrics, ready


def run_serve(config: Config) -> int:
    app, follower, metrics, ready = build_checks(config)
    stop = threading.Event()
    # The first round runs here, so the first answer already has the workers' changes.
    following = threading.Thread(target=follow_forever, name="eir-eic-follow",
                                 args=(follower, config, metrics, ready, stop), daemon=True)
    following.start()
    server = Server(app, address=config.eic.bind, port=config.eic.port,
                    interface=Interfaces.RSGI, http=HTTPModes.http1, websockets=False,
                    backlog=config.eic.backlog, log_enabled=False)
    loop = asyncio.new_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, partial(_stop, server, stop))
    try:
        loop.run_until_complete(server.serve())
    finally:
        stop.set()
        following.join()
        loop.close()
    log.info("equipment checks stopped")
    return 0


def _stop(server: Server, stop: threading.Event) -> None:
    stop.set()
    server.stop()
