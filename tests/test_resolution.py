"""A live notice decided again, pure: it stands, is resolved, or is superseded by the notice
of the rule that decides its subject now (never left with none); and the notices that take
over, anchored when they do."""

from __future__ import annotations

from dataclasses import replace

from enforcer.clock import MS_PER_DAY
from enforcer.engine.clones import NOT_MISUSED
from enforcer.engine.lifecycle import Notice, NoticeState
from enforcer.engine.opening import IMEI_SUBJECT, successors
from enforcer.engine.resolution import Resolution, resolutions
from rules.policy import Scope
from tests.test_decide import BUYER, DUAL, OWNER, SINGLE, STRANGER, T0, home_imsi, state

__all__ = ["state"]  # the fixture, shared with test_decide

FLAG_MS = T0 + 21 * MS_PER_DAY


def transfer(id_: int, msisdn: int, key: int = SINGLE, state_: NoticeState = NoticeState.WARNED,
             kind: str = "ownership_transfer", scope: Scope = Scope.PAIR) -> Notice:
    return Notice(id_, kind, scope, key, int(home_imsi(msisdn)), msisdn, "other_cartable",
                  state_, T0, T0 + 30 * MS_PER_DAY, T0, (7, 1), 0, True, T0)


def flagged(state):
    return replace(state, misused=NOT_MISUSED.with_flags([SINGLE], [FLAG_MS], 0))


def index_of(state, name: str) -> int:
    return [r.name for r in state.policy.rules].index(name)


def test_a_notice_its_rule_still_decides_stands(state) -> None:
    assert resolutions([transfer(1, BUYER)], state, FLAG_MS) == {}


def test_a_flag_supersedes_an_ownership_transfer_notice_with_a_misuse_one(state) -> None:
    assert resolutions([transfer(1, BUYER)], flagged(state), FLAG_MS) == {
        1: Resolution("misuse", index_of(state, "misuse"))}


def test_a_cut_pair_on_a_flagged_imei_stays_cut_under_its_notice(state) -> None:
    cut = transfer(1, BUYER, state_=NoticeState.CUT)
    assert resolutions([cut], flagged(state), FLAG_MS) == {}


def test_a_device_activated_into_another_cartable_supersedes_activation_required(
        state) -> None:
    # SINGLE is in OWNER's cartable now: BUYER's activation notice becomes a transfer one.
    activation = transfer(1, BUYER, kind="activation_required")
    assert resolutions([activation], state, FLAG_MS) == {
        1: Resolution("other_cartable", index_of(state, "other_cartable"))}


def test_ownership_moved_to_the_sim_resolves_without_a_successor(state) -> None:
    assert resolutions([transfer(1, OWNER)], flagged(state), FLAG_MS) == {1: Resolution("owner")}


def test_the_successor_is_anchored_when_it_takes_over_and_last_seen_as_its_predecessor(
        state) -> None:
    misuse = index_of(state, "misuse")
    taking_over = [(replace(transfer(1, BUYER), last_seen_ms=T0 + MS_PER_DAY), misuse),
                   (transfer(2, STRANGER), misuse)]
    seen = successors(taking_over, state.policy.rules, FLAG_MS)
    rows = seen.rows(state.policy.rules)
    assert [(r[0], r[2], r[3], r[5]) for r in rows] == [
        ("misuse", SINGLE, int(home_imsi(BUYER)), BUYER),
        ("misuse", SINGLE, int(home_imsi(STRANGER)), STRANGER)]
    in_a_week = FLAG_MS + 7 * MS_PER_DAY  # first seen, last seen, deadline
    assert [(r[7], r[8], r[9]) for r in rows] == [(FLAG_MS, T0 + MS_PER_DAY, in_a_week),
                                                  (FLAG_MS, T0, in_a_week)]


def test_pairs_going_to_an_imei_scoped_rule_open_one_notice(state) -> None:
    unregistered = index_of(state, "unregistered")
    later = replace(transfer(2, STRANGER, key=DUAL[0]), last_seen_ms=T0 + 5)
    taking_over = [(transfer(1, BUYER, key=DUAL[0]), unregistered), (later, unregistered)]
    seen = successors(taking_over, state.policy.rules, FLAG_MS)
    assert (seen.imei_key.tolist(), seen.subject_imsi.tolist(), seen.last_ms.tolist()) == (
        [DUAL[0]], [IMEI_SUBJECT], [T0 + 5])
