"""ME-Identity-Check-Requests answered: the requests that arrived together (each read by
`wire.read_micr`) checked (`check.read_identity_check`), decided in one call of the N5g-eir
front end's decision over the state `serve` follows, and each answer written (TS 29.272
§7.2.20, `wire.MicaWriter`) and counted."""

from __future__ import annotations

import logging
import time
from typing import Sequence

from prometheus_client import Counter as MetricCounter

from enforcer.clock import Clock
from enforcer.engine.imei import ImeiRules
from enforcer.engine.state import StateHolder
from enforcer.engine.checkfeed import S13_RAT, CheckedBatch, Feed
from enforcer.frontends.eic import Answer, Check, answers_of, check_batch
from enforcer.frontends.s13.check import (AVP_IMEI, FAILED_ANSWER, VENDOR_3GPP, InvalidAvp,
                                          S13Answer, read_identity_check, s13_answer)
from enforcer.frontends.s13.wire import (DIAMETER_INVALID_AVP_LENGTH, Fault, Header, Micr,
                                         MicaWriter, WireError, example, salvage)
from enforcer.logs import describe
from metrics.s13 import S13Metrics

log = logging.getLogger("eir.s13")

# RFC 6733 §8.11: the session ends with the answer; TS 29.272 §7.2.20 asks for it.
NO_STATE_MAINTAINED = 1
NO_STATUS = "none"


class S13Answers:
    """A batch of requests in, their answers' bytes out, each with the request's Hop-by-Hop
    and End-to-End identifiers, Session-Id and Proxy-Info, and this EIR's Origin-Host and
    Origin-Realm; with a `feed`, the checks answered handed to it as attach events
    (`enforcer.engine.checkfeed`)."""

    def __init__(self, holder: StateHolder, rules: ImeiRules, clock: Clock, metrics: S13Metrics,
                 origin_host: str, origin_realm: str, feed: Feed | None = None) -> None:
        self._holder = holder
        self._rules = rules
        self._clock = clock
        self._metrics = metrics
        self._writer = MicaWriter(origin_host.encode(), origin_realm.encode(),
                                  NO_STATE_MAINTAINED)
        self._feed = feed
        # prometheus_client's labels() takes a lock and builds a key each call.
        self._counters: dict[tuple[str, int], MetricCounter] = {}
        self._written: dict[Answer, tuple[bytes, tuple[str, int]]] = {}

    def answer(self, requests: Sequence[Micr]) -> list[bytes]:
        read: list[Check | InvalidAvp | Fault] = []
        received: list[str] = []  # the IMEI AVPs of the checks, for the feed
        for request in requests:
            if request.fault is not None:
                read.append(request.fault)
                continue
            check = read_identity_check(request.imei, request.user_name, self._rules)
            read.append(check)
            if self._feed is not None and isinstance(check, Check):
                received.append(request.imei)  # type: ignore[arg-type] - a check has one
        checks = [r for r in read if isinstance(r, Check)]
        decided = iter(self._decide(checks, received))
        counted: dict[tuple[str, int], int] = {}
        answers = []
        writer = self._writer
        for request, r in zip(requests, read):
            if isinstance(r, Check):
                body, key = next(decided)
                answers.append(writer.answer(request, body))
            else:
                answers.append(self._invalid(request, r))
                key = (NO_STATUS, r.result_code)
            counted[key] = counted.get(key, 0) + 1
        for key, n in counted.items():
            self._counter(key).inc(n)
        return answers

    def _counter(self, key: tuple[str, int]) -> MetricCounter:
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self._metrics.answers.labels(key[0], str(key[1]))
        return child

    def _decide(self, checks: list[Check], received: list[str]
                ) -> list[tuple[bytes, tuple[str, int]]]:
        """Each check's answer: the answer's AVPs after its Session-Id (`MicaWriter.body`)
        and its metric's labels."""
        if not checks:
            return []
        began = time.perf_counter()
        written = self._written
        try:
            state = self._holder.current
            batch = check_batch(checks, state, self._clock.now_ms())
            decided = []
            for answer in answers_of(checks, batch, state):
                held = written.get(answer)
                if held is None:  # a decision answers one of a few constants
                    held = written[answer] = self._write(s13_answer(answer))
                decided.append(held)
            if self._feed is not None:
                self._feed.offer(CheckedBatch(received, batch, S13_RAT))
        except Exception as exc:  # noqa: BLE001 - every check of the batch gets its 5012
            log.error("equipment checks failed", extra={"error": describe(exc),
                                                        "checks": len(checks)})
            decided = [self._write(FAILED_ANSWER)] * len(checks)
        self._metrics.batch_seconds.observe(time.perf_counter() - began)
        return decided

    def _write(self, decided: S13Answer) -> tuple[bytes, tuple[str, int]]:
        status = decided.equipment_status
        return (self._writer.body(decided.result_code, None if status is None else int(status),
                                  decided.experimental),
                (NO_STATUS if status is None else status.name, decided.result_code))

    def failed(self, request: Micr) -> bytes:
        """The answer to a request whose answering failed: 5012 DIAMETER_UNABLE_TO_COMPLY."""
        self._counter((NO_STATUS, FAILED_ANSWER.result_code)).inc()
        return self._writer.answer(request, self._writer.body(FAILED_ANSWER.result_code, None,
                                                              False))

    def _invalid(self, request: Micr, fault: InvalidAvp | Fault) -> bytes:
        """The AVPs' fault (`wire.Fault`: 5001, 5009, 5005) with its Failed-AVP, or the
        check's: 5005 naming the IMEI, 5004 with the AVP as received (RFC 6733 §7.5); a
        permanent failure, not a protocol error, so no E bit (§7.1)."""
        if isinstance(fault, Fault):
            failed = fault.failed_avp
        elif fault.avp_code == AVP_IMEI:
            # No IMEI in the Terminal-Information: an example of one (§7.1.5, 5005).
            failed = request.imei_avp or example(AVP_IMEI, VENDOR_3GPP)
        else:
            failed = request.user_name_avp
        return self._writer.answer(request, self._writer.body(fault.result_code, None, False),
                                   failed)

    def unreadable(self, data: bytes, header: Header, fault: WireError) -> bytes:
        """The answer to a request whose AVPs cannot all be read (`fault`: 5014
        DIAMETER_INVALID_AVP_LENGTH, RFC 6733 §7.1.5): a ME-Identity-Check-Answer as any
        other (TS 29.272 §7.2.20, Auth-Session-State among its AVPs) with the Session-Id and
        Proxy-Info read before the AVP at fault, and that AVP in Failed-AVP."""
        code = fault.result_code or DIAMETER_INVALID_AVP_LENGTH
        self._counter((NO_STATUS, code)).inc()
        return self._writer.answer(salvage(data, header), self._writer.body(code, None, False),
                                   fault.failed_avp)
