"""ME-Identity-Check-Requests answered: the requests that arrived together read
(`check.read_identity_check`), decided in one call of the N5g-eir front end's decision over
the state `serve` follows, and each answer built (TS 29.272 §7.2.20) and counted."""

from __future__ import annotations

import logging
import time
from typing import Sequence

from diameter.message import Avp
from diameter.message.avp.grouped import (ExperimentalResult, FailedAvp,
                                          VendorSpecificApplicationId)
from diameter.message.commands import MeIdentityCheckAnswer, MeIdentityCheckRequest
from diameter.message.constants import AVP_RESULT_CODE

from enforcer.clock import Clock
from enforcer.engine.imei import ImeiRules
from enforcer.engine.state import StateHolder
from enforcer.engine.checkfeed import S13_RAT, CheckedBatch, Feed
from enforcer.frontends.eic import Check, answers_of, check_batch
from enforcer.frontends.s13.check import (AVP_USER_NAME, FAILED_ANSWER, S13_APPLICATION_ID,
                                          VENDOR_3GPP, InvalidAvp, S13Answer,
                                          read_identity_check, s13_answer)
from enforcer.logs import describe
from metrics.s13 import S13Metrics

log = logging.getLogger("eir.s13")

# RFC 6733 §8.11: the session ends with the answer; TS 29.272 §7.2.20 asks for it.
NO_STATE_MAINTAINED = 1
NO_STATUS = "none"


class ExperimentalAnswer(MeIdentityCheckAnswer):
    """A ME-Identity-Check-Answer that has no Result-Code to have: one whose result is an
    Experimental-Result (5422). python-diameter 0.9.0 counts every answer it sends by its
    `result_code`, and divides None by 1000 when the AVP is absent: the TypeError ends the
    thread that sent it. Without the attribute at all it skips the count."""

    avp_def = tuple(d for d in MeIdentityCheckAnswer.avp_def if d.avp_code != AVP_RESULT_CODE)


def _s13_application() -> VendorSpecificApplicationId:
    return VendorSpecificApplicationId(vendor_id=VENDOR_3GPP,
                                       auth_application_id=S13_APPLICATION_ID)


class S13Answers:
    """A batch of requests in, their answers out, each with the request's Hop-by-Hop and
    End-to-End identifiers, Session-Id and Proxy-Info, and this EIR's Origin-Host and
    Origin-Realm; with a `feed`, the checks answered handed to it as attach events
    (`enforcer.engine.checkfeed`)."""

    def __init__(self, holder: StateHolder, rules: ImeiRules, clock: Clock, metrics: S13Metrics,
                 origin_host: str, origin_realm: str, feed: Feed | None = None) -> None:
        self._holder = holder
        self._rules = rules
        self._clock = clock
        self._metrics = metrics
        self._origin_host = origin_host.encode()
        self._origin_realm = origin_realm.encode()
        self._feed = feed

    def answer(self, requests: Sequence[MeIdentityCheckRequest]) -> list[MeIdentityCheckAnswer]:
        read: list[Check | InvalidAvp] = []
        received: list[str] = []  # the IMEI AVPs of the checks, for the feed
        for request in requests:
            # The node answers 5005 to a request without Terminal-Information before it gets
            # here; without the node's check it is the same 5005 (no IMEI).
            terminal = request.terminal_information
            imei = None if terminal is None else terminal.imei
            check = read_identity_check(imei, request.user_name, self._rules)
            read.append(check)
            if self._feed is not None and isinstance(check, Check) and imei is not None:
                received.append(imei)
        checks = [r for r in read if isinstance(r, Check)]
        decided = iter(self._decide(checks, received))
        answers = []
        for request, r in zip(requests, read):
            answer = self._invalid(request, r) if isinstance(r, InvalidAvp) \
                else self._build(request, next(decided))
            answers.append(answer)
        return answers

    def _decide(self, checks: list[Check], received: list[str]) -> list[S13Answer]:
        if not checks:
            return []
        began = time.perf_counter()
        try:
            state = self._holder.current
            batch = check_batch(checks, state, self._clock.now_ms())
            decided = [s13_answer(a) for a in answers_of(checks, batch, state)]
            if self._feed is not None:
                self._feed.offer(CheckedBatch(received, batch, S13_RAT))
        except Exception as exc:  # noqa: BLE001 - every check of the batch gets its 5012
            log.error("equipment checks failed", extra={"error": describe(exc),
                                                        "checks": len(checks)})
            decided = [FAILED_ANSWER] * len(checks)
        self._metrics.batch_seconds.observe(time.perf_counter() - began)
        return decided

    def _base(self, request: MeIdentityCheckRequest,
              kind: type[MeIdentityCheckAnswer]) -> MeIdentityCheckAnswer:
        answer = kind(request.to_answer().header)
        answer.session_id = request.session_id
        answer.vendor_specific_application_id = _s13_application()
        answer.auth_session_state = NO_STATE_MAINTAINED
        answer.origin_host = self._origin_host
        answer.origin_realm = self._origin_realm
        answer.proxy_info = request.proxy_info
        return answer

    def _build(self, request: MeIdentityCheckRequest, decided: S13Answer
               ) -> MeIdentityCheckAnswer:
        if decided.experimental:
            answer = self._base(request, ExperimentalAnswer)
            answer.experimental_result = ExperimentalResult(
                vendor_id=VENDOR_3GPP, experimental_result_code=decided.result_code)
        else:
            answer = self._base(request, MeIdentityCheckAnswer)
            answer.result_code = decided.result_code
            if decided.equipment_status is not None:
                answer.equipment_status = int(decided.equipment_status)
        status = NO_STATUS if decided.equipment_status is None else decided.equipment_status.name
        self._metrics.answers.labels(status, str(decided.result_code)).inc()
        return answer

    def _invalid(self, request: MeIdentityCheckRequest, fault: InvalidAvp
                 ) -> MeIdentityCheckAnswer:
        answer = self._base(request, MeIdentityCheckAnswer)
        # A 5xxx is a permanent failure, not a protocol error: no E bit (RFC 6733 §7.1).
        answer.result_code = fault.result_code
        answer.failed_avp = FailedAvp(additional_avps=[_failed(request, fault.avp_code)])
        self._metrics.answers.labels(NO_STATUS, str(fault.result_code)).inc()
        return answer


def _failed(request: MeIdentityCheckRequest, avp_code: int) -> Avp:
    """The AVP at fault as the request carried it (RFC 6733 §7.5), or, for one it lacked, an
    example of it with no data (§7.1.5, 5005)."""
    for avp in request.avps:
        for inner in [avp, *(avp.value if isinstance(avp.value, list) else [])]:
            if isinstance(inner, Avp) and inner.code == avp_code:
                return inner
    return Avp.new(avp_code, 0 if avp_code == AVP_USER_NAME else VENDOR_3GPP)
