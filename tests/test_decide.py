"""One named test per case of the rule list (rules/default.toml, README "The policy")."""

from __future__ import annotations

from datetime import date
import tomllib

import numpy as np
import pytest

from enforcer.clock import MS_PER_DAY
from enforcer.engine.decide import Decision, decide, decision_at
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.imei import ImeiRules, luhn_digit, parse_imei
from enforcer.engine.lists import BlackReason, Lists
from enforcer.engine.pairset import PairSet
from enforcer.engine.devices import Cartables, DeviceColumns, DeviceRecord, Source, build_devices
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import EnforcementState
from enforcer.engine.subscriber import parse_imsi
from rules.policy import DEFAULT_POLICY, Policy, Scope, Verdict, parse_policy

T0 = 1_790_000_000_000
OWNER, SPOUSE, BUYER, HELPER, STRANGER = (989121111111, 989123333333, 989122222222,
                                          989124444444, 989125555555)
DUAL = (35209900176148, 35209900176149)  # one dual-SIM phone, slots 0 and 1
SINGLE = 86012345000010
UNOWNED = 35111111000000  # imported, never activated
WHITE_ONLY = 35111111000100  # on the white list, no device record
STOLEN = 35222222000000
CLONED = 35222222000100
CUT_FOR_BUYER = 35333333000000  # owned by OWNER, cut off for BUYER
CUT_IMEI = 35444444000000
UNREGISTERED = 35999999000000
ROAMER_IMSI = "310260123456789"


def home_imsi(msisdn: int) -> str:
    return f"43211{msisdn % 10**10:010d}"


def full(key: int) -> str:
    text = f"{key:014d}"
    return text + luhn_digit(text)


def make_state(policy: Policy) -> EnforcementState:
    white = sorted({*DUAL, SINGLE, UNOWNED, WHITE_ONLY, STOLEN, CUT_FOR_BUYER})
    lists = Lists.build(
        1, bitmap_from_sorted_keys(np.array(white, np.uint64)),
        {BlackReason.STOLEN: bitmap_from_sorted_keys(np.array([STOLEN], np.uint64)),
         BlackReason.CLONED: bitmap_from_sorted_keys(np.array([CLONED], np.uint64))},
        cut_imeis=bitmap_from_sorted_keys(np.array([CUT_IMEI], np.uint64)),
        cut_pairs=PairSet.from_pairs(np.array([CUT_FOR_BUYER], np.uint64),
                                     np.array([int(home_imsi(BUYER))], np.uint64)))
    day = date(2024, 3, 1)
    columns = DeviceColumns.from_records([
        DeviceRecord(DUAL, OWNER, Source.IMPORT, day),
        DeviceRecord((SINGLE,), OWNER, Source.PRE_SCHEME, day),
        DeviceRecord((UNOWNED,), None, Source.IMPORT, day),
        DeviceRecord((STOLEN,), OWNER, Source.IMPORT, day),
        DeviceRecord((CUT_FOR_BUYER,), OWNER, Source.PASSENGER, day),
    ])
    cartables = Cartables.from_links(np.array([OWNER, SPOUSE], np.uint64),
                                     np.array([1, 1], np.uint32))
    operator_sims = PairSet.from_pairs(np.array([DUAL[1], UNOWNED], np.uint64),
                                       np.array([HELPER, HELPER], np.uint64))
    devices, built = build_devices(lists.white_index, columns, cartables, operator_sims)
    assert built.devices == 5
    return EnforcementState(lists, devices, policy)


@pytest.fixture()
def state(policy: Policy) -> EnforcementState:
    return make_state(policy)


def attach(state: EnforcementState, rules: ImeiRules, imei: str | int, msisdn: int,
           imsi: str | None = None, emergency: bool = False, ts: int = T0) -> Decision:
    event = AttachEvent(parse_imei(str(imei), rules), parse_imsi(imsi or home_imsi(msisdn)),
                        msisdn, ts, emergency)
    batch = AttachBatch.from_events([event])
    return decision_at(decide(batch, state), batch, 0)


def test_emergency_attach_from_a_blacklisted_imei_is_never_refused(state, rules) -> None:
    d = attach(state, rules, full(STOLEN), STRANGER, emergency=True)
    assert d.verdict is Verdict.WHITELISTED and d.rule == "emergency"
    assert d.record_history and d.cutoff_now is None and d.notice is None


def test_emergency_attach_on_a_cut_off_pair_is_never_refused(state, rules) -> None:
    d = attach(state, rules, CUT_FOR_BUYER, BUYER, emergency=True)
    assert d.verdict is Verdict.WHITELISTED


def test_blacklisted_imei_is_refused_and_cut_off_at_once(state, rules) -> None:
    d = attach(state, rules, full(STOLEN), OWNER)
    assert d.verdict is Verdict.BLACKLISTED and d.rule == "blacklisted"
    assert d.black_reason is BlackReason.STOLEN
    assert d.cutoff_now is Scope.IMEI


def test_cloned_imei_on_the_black_list_is_refused(state, rules) -> None:
    d = attach(state, rules, CLONED, STRANGER)
    assert d.verdict is Verdict.BLACKLISTED and d.black_reason is BlackReason.CLONED


def test_cut_off_pair_is_refused_for_that_sim_only(state, rules) -> None:
    assert attach(state, rules, CUT_FOR_BUYER, BUYER).verdict is Verdict.BLACKLISTED
    assert attach(state, rules, CUT_FOR_BUYER, BUYER).rule == "cut_off"
    owners_own_use = attach(state, rules, CUT_FOR_BUYER, OWNER)
    assert owners_own_use.verdict is Verdict.WHITELISTED


def test_cut_off_imei_is_refused_for_every_sim(state, rules) -> None:
    for msisdn in (OWNER, BUYER, STRANGER):
        assert attach(state, rules, CUT_IMEI, msisdn).verdict is Verdict.BLACKLISTED


def test_malformed_imei_is_greylisted_and_recorded(state, rules) -> None:
    for imei in ("004999010640000", "35209900ABCDEF", "000000000000000", "12345"):
        d = attach(state, rules, imei, OWNER)
        assert (d.verdict, d.rule, d.record_history) == (Verdict.GREYLISTED, "malformed", True)


def test_malformed_can_be_configured_to_blacklisted(rules) -> None:
    data = tomllib.loads(DEFAULT_POLICY.read_text())
    next(r for r in data["rules"] if r["name"] == "malformed")["verdict"] = "BLACKLISTED"
    strict = make_state(parse_policy(data))
    assert attach(strict, rules, "004999010640000", OWNER).verdict is Verdict.BLACKLISTED


def test_owner_on_a_registered_device_is_whitelisted(state, rules) -> None:
    for imei in (full(DUAL[0]), DUAL[1], SINGLE):
        d = attach(state, rules, imei, OWNER)
        assert (d.verdict, d.rule, d.notice) == (Verdict.WHITELISTED, "owner", None)


def test_decision_reports_the_device_and_slot(state, rules) -> None:
    first, second = attach(state, rules, DUAL[0], OWNER), attach(state, rules, DUAL[1], OWNER)
    assert first.device == second.device is not None
    assert (first.slot, second.slot) == (0, 1)


def test_another_sim_of_the_owners_national_id_cartable_counts_as_owner(state, rules) -> None:
    assert attach(state, rules, SINGLE, SPOUSE).verdict is Verdict.WHITELISTED


def test_operator_sim_is_whitelisted_on_its_imei_only(state, rules) -> None:
    assert attach(state, rules, DUAL[1], HELPER).rule == "owner"
    assert attach(state, rules, DUAL[0], HELPER).rule == "other_cartable"


def test_operator_sim_on_a_device_in_no_cartable_is_whitelisted(state, rules) -> None:
    assert attach(state, rules, UNOWNED, HELPER).verdict is Verdict.WHITELISTED
    assert attach(state, rules, UNOWNED, BUYER).rule == "no_cartable"


def test_a_cartable_sibling_may_use_both_slots_of_a_dual_sim_phone(state, rules) -> None:
    for imei in DUAL:
        assert attach(state, rules, imei, SPOUSE).verdict is Verdict.WHITELISTED


def test_registered_device_used_by_another_sim_gets_an_ownership_transfer_notice(
        state, rules) -> None:
    d = attach(state, rules, SINGLE, BUYER)
    assert (d.verdict, d.rule, d.reason) == (Verdict.GREYLISTED, "other_cartable", "not_owner")
    assert d.notice is not None
    assert (d.notice.kind, d.notice.scope) == ("ownership_transfer", Scope.PAIR)
    assert d.notice.deadline_ms == T0 + 30 * MS_PER_DAY
    assert d.notice.reminder_days == (7, 1) and d.notice.sms


def test_moving_the_sim_into_the_other_slot_warns_for_that_slots_imei(state, rules) -> None:
    slot0, slot1 = attach(state, rules, DUAL[0], BUYER), attach(state, rules, DUAL[1], BUYER)
    assert slot0.notice is not None and slot1.notice is not None
    assert slot0.notice.kind == slot1.notice.kind == "ownership_transfer"
    assert (slot0.slot, slot1.slot) == (0, 1)


def test_registered_device_in_no_cartable_needs_activation(state, rules) -> None:
    for imei in (UNOWNED, WHITE_ONLY):
        d = attach(state, rules, imei, BUYER)
        assert (d.verdict, d.rule) == (Verdict.GREYLISTED, "no_cartable")
        assert d.notice is not None and d.notice.kind == "activation_required"
        assert d.notice.scope is Scope.PAIR


def test_unregistered_device_with_a_home_sim_gets_an_imei_notice(state, rules) -> None:
    d = attach(state, rules, full(UNREGISTERED), STRANGER)
    assert (d.verdict, d.rule) == (Verdict.GREYLISTED, "unregistered")
    assert d.notice is not None and d.notice.kind == "unregistered"
    assert d.notice.scope is Scope.IMEI and d.notice.sms
    assert d.notice.deadline_ms == T0 + 30 * MS_PER_DAY


def test_traveller_deadline_is_30_days_after_the_attach(state, rules) -> None:
    """The decision counts from the attach it sees; keeping the first sighting's deadline
    when the same device is seen again is the notice store's job."""
    first_use = T0 + 5 * MS_PER_DAY
    d = attach(state, rules, UNREGISTERED, STRANGER, ts=first_use)
    assert d.notice is not None and d.notice.deadline_ms == first_use + 30 * MS_PER_DAY


def test_inbound_roamer_gets_grace_without_sms(state, rules) -> None:
    d = attach(state, rules, UNREGISTERED, 14155550100, imsi=ROAMER_IMSI)
    assert (d.verdict, d.rule) == (Verdict.GREYLISTED, "roamer")
    assert d.notice is not None and d.notice.kind == "roamer_grace" and not d.notice.sms
    assert d.notice.scope is Scope.IMEI and d.notice.reminder_days == ()


def test_roamer_on_a_registered_device_is_decided_like_anyone(state, rules) -> None:
    assert attach(state, rules, SINGLE, 14155550100, imsi=ROAMER_IMSI).rule == "other_cartable"


def test_two_forms_of_one_imei_are_decided_alike(state, rules) -> None:
    forms = [full(SINGLE), f"imei-{full(SINGLE)}", f"imeisv-{SINGLE}07", f" {SINGLE} "]
    assert len({attach(state, rules, f, BUYER) for f in forms}) == 1


def test_exempt_tac_falls_through_to_the_next_rule(rules) -> None:
    data = tomllib.loads(DEFAULT_POLICY.read_text())
    unregistered = next(r for r in data["rules"] if r["name"] == "unregistered")
    unregistered["exempt_tacs"] = [f"{UNREGISTERED:014d}"[:8]]
    exempting = make_state(parse_policy(data))
    d = attach(exempting, rules, UNREGISTERED, STRANGER)
    assert (d.rule, d.verdict) == ("fallback", Verdict.WHITELISTED)


def test_exempt_condition_skips_the_rule(rules) -> None:
    data = tomllib.loads(DEFAULT_POLICY.read_text())
    malformed = next(r for r in data["rules"] if r["name"] == "malformed")
    malformed["exempt_when"] = ["unregistered_home"]
    exempting = make_state(parse_policy(data))
    assert attach(exempting, rules, "004999010640000", OWNER).rule == "unregistered"
    assert attach(exempting, rules, "004999010640000", 14155550100,
                  imsi=ROAMER_IMSI).rule == "malformed"


def test_a_batch_is_decided_event_by_event(state, rules) -> None:
    """Deciding a batch equals deciding each event alone, whatever the order."""
    cases = [(full(STOLEN), OWNER), (SINGLE, BUYER), (DUAL[0], OWNER), ("12", OWNER),
             (UNREGISTERED, STRANGER), (CUT_FOR_BUYER, BUYER), (UNOWNED, BUYER)] * 3
    events = [AttachEvent(parse_imei(str(i), rules), parse_imsi(home_imsi(m)), m, T0 + n)
              for n, (i, m) in enumerate(cases)]
    batch = AttachBatch.from_events(events)
    together = decide(batch, state)
    alone = [decision_at(decide(AttachBatch.from_events([e]), state),
                         AttachBatch.from_events([e]), 0) for e in events]
    assert [decision_at(together, batch, i) for i in range(len(events))] == alone

