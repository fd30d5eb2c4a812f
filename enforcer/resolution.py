"""Has the registry resolved a notice? Pure: decide its subject again against the state as
it is now, as if nothing were cut off. A notice stands while the rule that opened it (or
another opening the same kind) would still decide the subject; anything else resolves it:
ownership moved into the SIM's cartable or an operator SIM set ("owner"), the device
registered, the IMEI black-listed (another path takes over; a cut pair is still restored,
and the black-listing cuts the IMEI at its next attach)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enforcer.decide import decide
from enforcer.events import AttachBatch
from enforcer.notices import Notice
from enforcer.state import EnforcementState
from enforcer.subscriber import MCC_DIGITS


@dataclass(frozen=True)
class Resolution:
    rule: str  # the rule that would decide the subject now


def resolutions(notices: list[Notice], state: EnforcementState,
                now_ms: int) -> dict[int, Resolution]:
    """notice id -> how it was resolved, for the notices the registry has resolved."""
    if not notices:
        return {}
    n = len(notices)
    batch = AttachBatch(
        imei_key=np.array([x.imei_key for x in notices], dtype=np.uint64),
        malformed=np.zeros(n, dtype=bool),
        imsi=np.array([x.imsi for x in notices], dtype=np.uint64),
        mcc=np.array([int(str(x.imsi)[:MCC_DIGITS]) for x in notices], dtype=np.uint16),
        msisdn=np.array([x.msisdn for x in notices], dtype=np.uint64),
        ts_ms=np.full(n, now_ms, dtype=np.int64),
        emergency=np.zeros(n, dtype=bool))
    rules = state.policy.rules
    out = {}
    for notice, index in zip(notices, decide(batch, state, with_cutoffs=False).rule.tolist()):
        rule = rules[index]
        if rule.opens_notice and rule.notice_kind == notice.kind:
            continue
        out[notice.id] = Resolution(rule.name)
    return out
