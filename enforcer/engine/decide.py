"""The decision: a pure function of a batch of attach events and the current state.

Every condition the policy can name is computed for the whole batch as a boolean column;
the rules are then applied last to first, so each event ends with the first rule (in
policy order) whose condition holds and whose exemptions do not. No I/O, no clock: the
deadline of a notice is counted from the event's own time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from enforcer.clock import MS_PER_DAY
from enforcer.engine.events import NO_KEY, AttachBatch
from enforcer.engine.imei import SNR_SPACE
from enforcer.engine.keyindex import ABSENT
from enforcer.engine.lists import BLACK_REASONS, NO_REASON, BlackReason
from enforcer.engine.devices import NO_CARTABLE, NO_DEVICE, NO_OWNER, SLOT_BITS, SLOT_MASK
from enforcer.engine.state import EnforcementState
from enforcer.engine.tacblocks import NOT_BLOCKED, BlockedTacs
from enforcer.engine.tacs import NO_ROW
from rules.policy import VERDICTS, Condition, Policy, Rule, Scope, Verdict



@dataclass(frozen=True, eq=False)
class Decisions:
    """One decision per event, as columns in the batch's order."""

    rule: np.ndarray  # uint8, index into policy.rules
    black_reason: np.ndarray  # uint8, index into BLACK_REASONS, NO_REASON if not black-listed
    device_slot: np.ndarray  # uint32, device << SLOT_BITS | slot, NO_DEVICE if none
    policy: Policy
    generation: int

    def __len__(self) -> int:
        return len(self.rule)

    @property
    def verdict(self) -> np.ndarray:
        """uint8 index into VERDICTS."""
        table = np.array([VERDICTS.index(r.verdict) for r in self.policy.rules], np.uint8)
        return table[self.rule]


@dataclass(frozen=True)
class NoticeRequest:
    kind: str
    scope: Scope
    deadline_ms: int
    reminder_days: tuple[int, ...]
    sms: bool


@dataclass(frozen=True)
class Decision:
    """One event's decision with the effects it asks for."""

    verdict: Verdict
    rule: str
    reason: str
    black_reason: BlackReason | None
    device: int | None
    slot: int | None
    record_history: bool
    notice: NoticeRequest | None
    cutoff_now: Scope | None

    def as_json(self) -> dict[str, object]:
        notice = None
        if self.notice is not None:
            notice = {"kind": self.notice.kind, "scope": self.notice.scope.value,
                      "deadline_ms": self.notice.deadline_ms,
                      "reminder_days": list(self.notice.reminder_days), "sms": self.notice.sms}
        return {
            "verdict": self.verdict.value, "rule": self.rule, "reason": self.reason,
            "black_reason": self.black_reason.value if self.black_reason else None,
            "device": self.device, "slot": self.slot,
            "effects": {"record_history": self.record_history, "open_notice": notice,
                        "cutoff_now": self.cutoff_now.value if self.cutoff_now else None},
        }


def decide(batch: AttachBatch, state: EnforcementState,
           with_cutoffs: bool = True) -> Decisions:
    """`with_cutoffs=False`: as if nothing were cut off, to see what a cut-off subject
    would be decided now (has the registry resolved it?)."""
    # Work in IMEI-key order: every index lookup then reads memory front to back.
    order = np.argsort(batch.imei_key)
    rule, black, device_slot = _decide_sorted(batch.take(order), state, with_cutoffs)
    out_rule = np.empty_like(rule)
    out_rule[order] = rule
    out_black = np.empty_like(black)
    out_black[order] = black
    out_slot = np.empty_like(device_slot)
    out_slot[order] = device_slot
    return Decisions(out_rule, out_black, out_slot, state.policy, state.generation)


def _decide_sorted(batch: AttachBatch, state: EnforcementState, with_cutoffs: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lists, devices, policy, overlay = state.lists, state.devices, state.policy, state.overlay
    keys = batch.imei_key
    rows = lists.white_index.rows_sorted(keys)
    registered = rows != ABSENT
    black = lists.black_reasons_at(keys, rows)
    device_slot = devices.device_slots(rows)
    if len(overlay):  # the registry's changes since the snapshot
        registered, device_slot, black = overlay.patch_imeis(keys, registered, device_slot,
                                                             black)
    owner = overlay.patch_owners(device_slot, devices.owners(device_slot))
    owned = owner != NO_OWNER
    owner_sim = owned & (owner == batch.msisdn)
    # Only the few events not from the owner's own SIM need the cartable and operator SIMs.
    others = np.flatnonzero(registered & ~owner_sim)
    if len(others):
        also = overlay.patch_operator_sims(
            keys[others], batch.msisdn[others],
            devices.operator_sims.contains(keys[others], batch.msisdn[others]))
        owned_others = owned[others]
        if owned_others.any():
            sub = others[owned_others]

            def cartable(numbers: np.ndarray) -> np.ndarray:
                return overlay.patch_cartables(numbers, devices.cartables.of(numbers))

            a, b = cartable(owner[sub]), cartable(batch.msisdn[sub])
            also[owned_others] |= (a != NO_CARTABLE) & (a == b)
        owner_sim[others] = also
    # Against a handful of home MCCs, one comparison each beats np.isin's set machinery.
    roamer = batch.mcc != policy.home_mcc[0]
    for mcc in policy.home_mcc[1:]:
        roamer &= batch.mcc != mcc

    def cut_off() -> np.ndarray:
        if not with_cutoffs:
            return np.zeros(len(keys), dtype=bool)
        return (lists.cut_imei_index.contains(keys) | lists.cut_pairs.contains(keys, batch.imsi)
                | state.cutoffs.contains(keys, batch.imsi))

    tac_rows: list[np.ndarray] = []  # looked up once, when a rule names a TAC condition

    def tac_condition(condition: Condition) -> np.ndarray:
        if state.tacs is None:  # no TAC database imported: the TAC conditions are off
            return np.zeros(len(keys), dtype=bool)
        if not tac_rows:
            tac_rows.append(state.tacs.rows(keys))
        if condition is Condition.TAC_UNALLOCATED:
            return (tac_rows[0] == NO_ROW) & (keys != NO_KEY)
        return state.tacs.inconsistent(tac_rows[0], batch.rat)

    conditions = {
        Condition.EMERGENCY: lambda: batch.emergency,
        Condition.BLACKLISTED: lambda: black != NO_REASON,
        Condition.CUT_OFF: cut_off,
        Condition.MALFORMED: lambda: batch.malformed,
        Condition.OWNER_OR_OPERATOR_SIM: lambda: registered & owner_sim,
        Condition.MISUSED: lambda: state.misused.holds(keys, batch.ts_ms,
                                                        state.policy.clones.flag_ms),
        Condition.OTHER_CARTABLE: lambda: registered & owned & ~owner_sim,
        Condition.NO_CARTABLE: lambda: registered & ~owned & ~owner_sim,
        Condition.UNREGISTERED_HOME: lambda: ~registered & ~roamer,
        Condition.UNREGISTERED_ROAMER: lambda: ~registered & roamer,
        Condition.TAC_UNALLOCATED: lambda: tac_condition(Condition.TAC_UNALLOCATED),
        Condition.RAT_INCONSISTENT: lambda: tac_condition(Condition.RAT_INCONSISTENT),
        Condition.TAC_BLOCKED: lambda: tac_blocked(state.blocked_tacs, keys),
    }
    cache: dict[Condition, np.ndarray] = {}

    def holds(condition: Condition) -> np.ndarray:
        if condition not in cache:
            cache[condition] = conditions[condition]()
        return cache[condition]

    # Each event's first rule that applies, the last (the fallback) applying to all: one
    # argmax over the rules' masks instead of a masked write per rule.
    applies = np.ones((len(policy.rules), len(keys)), dtype=bool)
    for index, rule in enumerate(policy.rules[:-1]):
        applies[index] = _applies(rule, holds, keys)
    return applies.argmax(axis=0).astype(np.uint8), black, device_slot


def tac_blocked(blocked: BlockedTacs | None, keys: np.ndarray) -> np.ndarray:
    """bool per IMEI key: the regulator blocks its TAC; all False without a list."""
    if blocked is None:
        return np.zeros(len(keys), dtype=bool)
    return blocked.reasons(keys) != NOT_BLOCKED


def _applies(rule: Rule, holds: Callable[[Condition], np.ndarray],
             keys: np.ndarray) -> np.ndarray:
    mask = holds(rule.when)
    for condition in rule.exempt_when:
        mask = mask & ~holds(condition)
    if rule.exempt_tacs:
        mask = mask & ~np.isin(keys // np.uint64(SNR_SPACE),
                               np.array(rule.exempt_tacs, dtype=np.uint64))
    return mask


def decision_at(decisions: Decisions, batch: AttachBatch, i: int) -> Decision:
    """The i-th event's decision with its effects spelled out."""
    rule = decisions.policy.rules[int(decisions.rule[i])]
    code = int(decisions.black_reason[i])
    device_slot = decisions.device_slot[i]
    has_device = device_slot != NO_DEVICE
    notice = None
    if rule.opens_notice and rule.notice_kind and rule.cutoff_scope:  # the policy ensures both
        notice = NoticeRequest(
            rule.notice_kind, rule.cutoff_scope,
            int(batch.ts_ms[i]) + rule.grace_days * MS_PER_DAY, rule.reminder_days, rule.sms)
    return Decision(
        verdict=rule.verdict, rule=rule.name, reason=rule.reason,
        black_reason=BLACK_REASONS[code] if code != NO_REASON else None,
        device=int(device_slot >> np.uint32(SLOT_BITS)) if has_device else None,
        slot=int(device_slot & SLOT_MASK) if has_device else None,
        record_history=rule.record, notice=notice,
        cutoff_now=rule.cutoff_scope if rule.cutoff_now else None,
    )
