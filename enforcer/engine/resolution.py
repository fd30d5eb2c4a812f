"""Has the registry resolved a notice? Pure: decide its subject again against the state as
it is now, as if nothing were cut off. A notice stands while the rule that opened it (or
another opening the same kind) would still decide the subject.

When a rule opening another kind of notice decides it now, the subject still owes something:
the notice is superseded by that rule's notice, never left with none (an IMEI flagged
misused over an `ownership_transfer` notice: the SIM's `misuse` notice takes over, with its
own deadline). A cut notice whose subject that rule would cut too (same scope) stands: what
is cut stays cut, under the notice that cut it.

Anything else resolves it: ownership moved into the SIM's cartable or an operator SIM set
("owner", which is how a registration resolves an `unregistered` notice; registered into no
cartable or another, that rule's notice takes over), the IMEI black-listed (another path
takes over; a cut pair is still restored, and the black-listing cuts the IMEI at its next
attach)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enforcer.engine.decide import decide
from enforcer.engine.events import AttachBatch
from enforcer.engine.lifecycle import Notice, NoticeState
from enforcer.engine.state import EnforcementState
from enforcer.engine.subscriber import MCC_DIGITS


@dataclass(frozen=True)
class Resolution:
    rule: str  # the rule that would decide the subject now
    successor: int | None = None  # that rule's index in the policy, when its notice takes over


def resolutions(notices: list[Notice], state: EnforcementState,
                now_ms: int) -> dict[int, Resolution]:
    """notice id -> how it was resolved or superseded, for the notices that no longer stand."""
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
        if not rule.opens_notice:
            out[notice.id] = Resolution(rule.name)
        elif rule.notice_kind == notice.kind or (
                notice.state is NoticeState.CUT and rule.cutoff_scope is notice.scope):
            continue
        else:
            out[notice.id] = Resolution(rule.name, index)
    return out
