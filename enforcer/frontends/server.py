"""The N5g-eir Equipment Identity Check over HTTP/1.1 and HTTP/2 (`enforcer.frontends.transport`),
on the state the workers' stream keeps (followed from PostgreSQL by `enforcer.app.serve`).

The transport hands over every request that arrived in one turn of the event loop at once;
their checks are decided in one call of the stream's vectorized decision. Under load a turn
brings dozens of checks for the cost of a few; alone, a check waits for nothing but itself."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Protocol

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client import Counter as MetricCounter

from enforcer.clock import Clock
from enforcer.querystring import query_values
from enforcer.engine.checkfeed import N5G_EIR_RAT, CheckedBatch, Feed, imei_received
from enforcer.frontends.eic import (Answer, Cause, Check, Problem, EirResponseData, answers_of,
                                    check_batch, given_twice, read_check)
from enforcer.frontends.transport import Request, Response
from enforcer.engine.imei import ImeiRules
from enforcer.logs import describe
from enforcer.engine.state import StateHolder
from metrics.eic import EicMetrics

log = logging.getLogger("eir.eic")

CHECK_PATH = "/n5g-eir-eic/v1/equipment-status"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
UNKNOWN_ANSWER = "unknown"
BAD_REQUEST = "bad_request"
OTHER = "other"
ALIVE = Response(200, JSON, b'{"alive":true}')
FAILED = Problem(HTTPStatus.INTERNAL_SERVER_ERROR, Cause.SYSTEM_FAILURE,
                 "the check failed; ask again")


def _problem(problem: Problem, *extra_headers: tuple[str, str]) -> Response:
    return Response(int(problem.status), PROBLEM_JSON, msgspec.json.encode(problem.as_json()),
                    extra_headers)


def _count(labels: dict[str, int], label: str) -> None:
    labels[label] = labels.get(label, 0) + 1


def _encode(answer: Answer) -> Response:
    if isinstance(answer, EirResponseData):
        return Response(200, JSON, msgspec.json.encode(answer.as_json()))
    return _problem(answer)


def _label(answer: Answer) -> str:
    if isinstance(answer, EirResponseData):
        return answer.status
    return UNKNOWN_ANSWER if answer.status is HTTPStatus.NOT_FOUND else OTHER


class Ready(Protocol):
    def is_set(self) -> bool: ...


class EquipmentChecks:
    """The application: a turn's requests in, their responses out; with a `feed`, the checks
    answered handed to it as attach events (`enforcer.engine.checkfeed`)."""

    def __init__(self, holder: StateHolder, rules: ImeiRules, clock: Clock,
                 metrics: EicMetrics, ready: Ready, feed: Feed | None = None) -> None:
        self._holder = holder
        self._rules = rules
        self._clock = clock
        self._metrics = metrics
        self._ready = ready
        self._feed = feed
        # What a decision answers is one of a few constants (the statuses, 404, 500): each
        # is encoded once.
        self._encoded: dict[Answer, tuple[Response, str]] = {}
        self._counters: dict[str, MetricCounter] = {}

    def answer(self, requests: list[Request]) -> list[Response]:
        responses: list[Response | None] = []
        checks: list[Check] = []
        at: list[int] = []
        received: list[str] = []  # the PEIs of the checks, for the feed
        labels: dict[str, int] = {}
        for request in requests:
            path, _, query = request.target.partition("?")
            if path == CHECK_PATH and request.method == "GET":
                values, repeated = query_values(query)
                check = read_check(values, self._rules) if repeated is None \
                    else given_twice(repeated)
                if isinstance(check, Problem):
                    _count(labels, BAD_REQUEST)
                    responses.append(_problem(check))
                else:
                    at.append(len(responses))
                    checks.append(check)
                    if self._feed is not None:
                        received.append(imei_received(values["pei"]))
                    responses.append(None)
            else:
                responses.append(self._other(request.method, path, labels))
        if checks:
            encoded = self._encoded
            for i, answer in zip(at, self._decide(checks, received)):
                held = encoded.get(answer)
                if held is None:
                    held = encoded[answer] = (_encode(answer), _label(answer))
                responses[i], label = held
                _count(labels, label)
        for label, n in labels.items():
            self._answered(label).inc(n)
        return responses  # type: ignore[return-value] - every None was filled

    def _answered(self, label: str) -> MetricCounter:
        # prometheus_client's labels() takes a lock and builds a key each call.
        child = self._counters.get(label)
        if child is None:
            child = self._counters[label] = self._metrics.answers.labels(label)
        return child

    def _decide(self, checks: list[Check], received: list[str]) -> list[Answer]:
        began = time.perf_counter()
        try:
            state = self._holder.current
            batch = check_batch(checks, state, self._clock.now_ms())
            answers = answers_of(checks, batch, state)
            if self._feed is not None:
                self._feed.offer(CheckedBatch(received, batch, N5G_EIR_RAT))
        except Exception as exc:  # noqa: BLE001 - every check of the turn gets its 500
            log.error("equipment checks failed", extra={"error": describe(exc),
                                                        "checks": len(checks)})
            answers = [FAILED] * len(checks)
        self._metrics.batch_seconds.observe(time.perf_counter() - began)
        self._metrics.batch_checks.observe(len(checks))
        return answers

    def _other(self, method: str, path: str, labels: dict[str, int]) -> Response:
        if path == CHECK_PATH:
            _count(labels, OTHER)
            return _problem(Problem(HTTPStatus.METHOD_NOT_ALLOWED,
                                    Cause.RESOURCE_URI_STRUCTURE_NOT_FOUND,
                                    "only GET is allowed here"), ("allow", "GET"))
        if path == "/metrics":
            return Response(200, CONTENT_TYPE_LATEST, generate_latest(self._metrics.collectors))
        if path == "/healthz":
            return ALIVE
        if path == "/readyz":
            ready = self._ready.is_set()
            return Response(200 if ready else 503, JSON, msgspec.json.encode({"ready": ready}))
        _count(labels, OTHER)
        return _problem(Problem(HTTPStatus.NOT_FOUND, Cause.RESOURCE_URI_STRUCTURE_NOT_FOUND,
                                f"no resource at {path}"))
