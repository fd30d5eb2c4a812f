"""The worker's HTTP port: /metrics for Prometheus, /healthz and /readyz for the
orchestrator, and the IMEI status query for the
channels a buyer asks through (a USSD gateway, the operator's app). Each channel is a client
with its own token and its own rate; every call is recorded in status_queries, refused or
answered, and no answer leaves before its record is written."""

from __future__ import annotations

import hmac
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import msgspec
import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import RestrictedRegistry
from psycopg_pool import ConnectionPool, PoolTimeout

from enforcer.clock import Clock
from enforcer.config import Config, HttpConfig
from enforcer.db.cluster import ping
from enforcer.endpoints.health import Check, Readiness
from enforcer.engine.imei import ImeiRules, mistyped, parse_imei
from enforcer.listening import cannot_listen
from enforcer.logs import describe
from enforcer.engine.state import StateHolder
from enforcer.querystring import query_values
from enforcer.endpoints.statusquery import Caller, ask, refuse
from enforcer.engine.subscriber import IdentityError, parse_msisdn
from metrics.worker import WorkerMetrics

log = logging.getLogger("eir.http")

STATUS_PATH = re.compile(r"^/v1/imei/([^/]{1,64})/status$")
JSON = "application/json"
HTTP = "http"
RETRY_AFTER_UNAVAILABLE_S = 5


@dataclass(frozen=True)
class Client:
    name: str
    secret: bytes = field(repr=False)


def parse_tokens(entries: list[str]) -> list[Client]:
    """http.tokens, whose form the configuration checked at load."""
    return [Client(name, secret.encode())
            for name, _, secret in (entry.partition(":") for entry in entries)]


class TokenBucket:
    """`rate` calls a second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> float:
        """0 when the call may go ahead (and it is counted); else seconds to wait."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


@dataclass(frozen=True)
class Reply:
    status: HTTPStatus
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)


class StatusQueries:
    """The status query over HTTP, apart from the HTTP server itself."""

    def __init__(self, settings: HttpConfig, clients: list[Client], holder: StateHolder,
                 rules: ImeiRules, pool: ConnectionPool, metrics: WorkerMetrics, clock: Clock,
                 history_days: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._history_days = history_days  # history.keep_days
        self._clock = clock
        self._clients = clients
        self._holder = holder
        self._rules = rules
        self._pool = pool
        self._metrics = metrics
        self._monotonic = monotonic
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _client(self, authorization: str | None) -> Client | None:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        found = None
        for client in self._clients:  # every secret compared, in constant time
            if hmac.compare_digest(client.secret, presented.strip().encode()):
                found = client
        return found

    def _wait(self, who: str) -> float:
        now = self._monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(
                who, TokenBucket(self._settings.rate_per_s, self._settings.burst, now))
            return bucket.take(now)

    def answer(self, imei_text: str, msisdn_text: str | None, authorization: str | None,
               peer: str, repeated: str | None = None) -> Reply:
        """The status of `imei_text` for the requester `msisdn_text`, or why not. A query
        that gives a parameter twice (`repeated`, its name) is refused: which value is meant
        would depend on the reader, as with a repeated JSON key on the stream."""
        imei = parse_imei(imei_text, self._rules)
        try:
            requester = parse_msisdn(msisdn_text) if msisdn_text else None
        except IdentityError:
            requester = None
        client = self._client(authorization)
        caller = Caller(HTTP, client.name if client else None, peer)
        if client is None:
            if self._wait(f"peer {peer}"):
                self._metrics.http.status_queries.labels(HTTP, "unauthorized_flood").inc()
                return Reply(HTTPStatus.TOO_MANY_REQUESTS, {"error": "rate_limited"})
            return self._refuse(imei.imei_key, requester, caller, HTTPStatus.UNAUTHORIZED,
                                "unauthorized", "a valid bearer token is required",
                                {"WWW-Authenticate": 'Bearer realm="eir-enforcer"'})
        wait = self._wait(f"client {client.name}")
        if wait:
            return self._refuse(imei.imei_key, requester, caller, HTTPStatus.TOO_MANY_REQUESTS,
                                "rate_limited", f"at most {self._settings.rate_per_s:g} queries"
                                " a second", {"Retry-After": str(math.ceil(wait))})
        if repeated is not None:
            return self._refuse(imei.imei_key, None, caller, HTTPStatus.BAD_REQUEST,
                                "duplicate_parameter", f"{repeated}= is given more than once")
        if imei.imei_key is None:
            return self._refuse(None, requester, caller, HTTPStatus.BAD_REQUEST, "bad_imei",
                                f"not an IMEI ({', '.join(p.value for p in imei.problems)})")
        typo = mistyped(imei)
        if typo is not None:
            return self._refuse(None, requester, caller, HTTPStatus.BAD_REQUEST, "bad_imei", typo)
        if requester is None:
            return self._refuse(imei.imei_key, None, caller, HTTPStatus.BAD_REQUEST,
                                "bad_msisdn", "msisdn= must be the requester's number, in "
                                "international form")
        try:
            with self._pool.connection(timeout=self._settings.db_wait_s) as conn:
                answer = ask(self._holder.current, conn, imei.imei_key, requester, caller,
                             self._clock.now_ms(), self._history_days)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("status query not answered", extra={"error": describe(exc)})
            return Reply(HTTPStatus.SERVICE_UNAVAILABLE,
                         {"error": "unavailable", "detail": "the database cannot record "
                          "the query now; ask again later"},
                         {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})
        self._metrics.http.status_queries.labels(HTTP, answer.status.value).inc()
        return Reply(HTTPStatus.OK, {"imei": f"{imei.imei_key:014d}", **answer.as_json()})

    def _refuse(self, imei_key: int | None, requester: int | None, caller: Caller,
                status: HTTPStatus, reason: str, detail: str,
                headers: dict[str, str] | None = None) -> Reply:
        self._metrics.http.status_queries.labels(HTTP, reason).inc()
        try:
            with self._pool.connection(timeout=self._settings.db_wait_s) as conn:
                refuse(conn, imei_key, requester, caller, reason, self._clock.now_ms())
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("refused status query not recorded", extra={"error": describe(exc)})
        return Reply(status, {"error": reason, "detail": detail}, headers or {})


def listen_http(settings: HttpConfig) -> ThreadingHTTPServer | None:
    """The worker's HTTP server, bound (its requests are handled once serve_endpoints has what
    they need); None when http.port is 0. Raises ConfigError naming http.port or http.bind
    when the address cannot be had."""
    if not settings.port:
        return None
    try:
        return ThreadingHTTPServer((settings.bind, settings.port), BaseHTTPRequestHandler)
    except OSError as exc:
        raise cannot_listen("http", settings.bind, settings.port, exc) from exc


class HttpServer:
    def __init__(self, server: ThreadingHTTPServer, settings: HttpConfig,
                 metrics: WorkerMetrics, queries: StatusQueries, pool: ConnectionPool,
                 readiness: Readiness) -> None:
        self._pool = pool
        self._server = server
        self._server.RequestHandlerClass = _handler(metrics, queries, readiness,
                                                    settings.timeout_s)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="eir-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()


def database_check(pool: ConnectionPool, wait_s: float) -> Check:
    def reachable() -> str | None:
        try:
            with pool.connection(timeout=wait_s) as conn:
                ping(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            return f"database unreachable: {describe(exc)}"
        return None
    return reachable


def serve_endpoints(config: Config, server: ThreadingHTTPServer | None, holder: StateHolder,
                    rules: ImeiRules, metrics: WorkerMetrics, clock: Clock,
                    checks: dict[str, Check]) -> HttpServer | None:
    """Started, on the server listen_http bound; None without one. Readiness is `checks` and
    the database's."""
    if server is None:
        return None
    clients = parse_tokens(config.http.tokens)
    pool = ConnectionPool(config.postgres.dsn, min_size=1, max_size=config.http.pool_size,
                          kwargs={"autocommit": True}, open=True, name="eir-http")
    metrics.http.watch_pool(pool)
    readiness = Readiness({**checks, "database": database_check(pool, config.http.db_wait_s)})
    http = HttpServer(server, config.http, metrics,
                      StatusQueries(config.http, clients, holder, rules, pool, metrics, clock,
                                    config.history.keep_days),
                      pool, readiness)
    http.start()
    return http


def _scraped(metrics: WorkerMetrics, query: str) -> CollectorRegistry | RestrictedRegistry:
    """Every metric, or only the samples named by `name[]` parameters (prometheus_client's
    own filter: `/metrics?name[]=eir_registry_events_total`), whose collectors alone are
    asked: a scraper that polls one figure often costs the worker that figure's work, not
    every family's. A name that is no sample's, or blank, gives nothing."""
    names = parse_qs(query, keep_blank_values=True).get("name[]")
    if names is None:
        return metrics.collectors
    return metrics.collectors.restricted_registry(name for name in names if name)


def _handler(metrics: WorkerMetrics, queries: StatusQueries, readiness: Readiness,
             timeout_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "eir-enforcer"
        timeout = timeout_s

        def do_GET(self) -> None:  # the name http.server calls
            began = time.monotonic()
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(_scraped(metrics, url.query)),
                           CONTENT_TYPE_LATEST)
                route = "metrics"
            elif url.path == "/healthz":
                self._send(HTTPStatus.OK, b'{"alive":true}', JSON)
                route = "health"
            elif url.path == "/readyz":
                report = readiness.report()
                self._send(HTTPStatus.OK if report.ready else HTTPStatus.SERVICE_UNAVAILABLE,
                           msgspec.json.encode(report.as_json()), JSON)
                route = "health"
            elif match := STATUS_PATH.match(url.path):
                values, repeated = query_values(url.query)
                reply = queries.answer(match.group(1), values.get("msisdn"),
                                       self.headers.get("Authorization"), self.client_address[0],
                                       repeated)
                self._send(reply.status, msgspec.json.encode(reply.body), JSON, reply.headers)
                route = "status"
            else:
                self._send(HTTPStatus.NOT_FOUND, b'{"error":"not_found"}', JSON)
                route = "other"
            metrics.http.request_seconds.labels(route).observe(time.monotonic() - began)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # The request line holds the requester's number: the default access log would
            # print it in clear, so there is none; calls are recorded in status_queries.
            return

    return Handler
