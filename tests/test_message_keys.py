"""Every message about an IMEI is keyed by its 14-digit key, leading zeros kept, as on
`attach-events` (docs/messages.md): verdicts, cutoff requests, a notice's SMS and commands;
pure, then end to end with an IMEI whose reporting body is 01."""

from __future__ import annotations

from dataclasses import replace

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from enforcer.config import load_config
from enforcer.engine.decide import decide
from enforcer.engine.effects import message_key, verdicts_of
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.imei import parse_imei
from enforcer.engine.noticemessages import step_messages
from enforcer.engine.lifecycle import Step
from enforcer.engine.subscriber import parse_imsi
from tests.kafkatools import produce, read_all, wait_for
from tests.test_decide import BUYER, full, home_imsi, make_state
from tests.test_notices import notice
from tests.test_registry_events import applied, registry_event, with_verdicts
from tests.test_worker import attach, now_ms

LEADING_ZERO = "01215800375276"  # a key below 10^13: printed plainly it loses its zero


@given(st.integers(0, 10**14 - 1))
def test_a_message_key_is_the_14_digits_of_the_imei_key(imei_key: int) -> None:
    key = message_key(imei_key)
    assert len(key) == 14 and key.isdigit() and int(key) == imei_key


def test_verdicts_are_keyed_by_14_digits_and_a_malformed_imei_by_none(policy, rules) -> None:
    events = [AttachEvent(parse_imei(imei, rules), parse_imsi(home_imsi(BUYER)), BUYER, 0)
              for imei in (full(int(LEADING_ZERO)), "not an imei")]
    batch = AttachBatch.from_events(events)
    verdicts = verdicts_of(batch, decide(batch, make_state(policy)))
    assert [v.key for v in verdicts] == [LEADING_ZERO.encode(), None]
    assert verdicts[0].value["imei"] == LEADING_ZERO
    assert [v.idempotency_key.split(":")[1] for v in verdicts] == [LEADING_ZERO, "malformed"]


def test_a_notices_sms_and_commands_are_keyed_by_14_digits() -> None:
    settings = load_config(environ={}).notices
    n = replace(notice(0), imei_key=int(LEADING_ZERO))
    messages = [m for step in (Step.WARNING, Step.CUTOFF, Step.RESOLVED)
                for m in step_messages(n, step, settings, None)]
    assert {m.stream for m in messages} == {"notifications", "commands"}
    assert {m.key for m in messages} == {LEADING_ZERO.encode()}


def test_every_output_about_an_imei_with_a_leading_zero_keeps_it(env, worker) -> None:
    with_verdicts(env)
    running = worker()
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    # Unregistered: a verdict, a notice and its warning SMS.
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [attach(full(int(LEADING_ZERO)), BUYER,
                                                               now_ms())])
    wait_for(lambda: read_all(bootstrap, env["EIR_KAFKA__NOTIFICATIONS_TOPIC"]))
    # Black-listed: the next attach asks for a cutoff at once.
    produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [registry_event(
        "b1", "blacklisted", imeis=[LEADING_ZERO], reason="stolen")])
    wait_for(lambda: applied(running) == 1)
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [attach(LEADING_ZERO, BUYER, now_ms())])
    wait_for(lambda: any(msgspec.json.decode(m.value).get("type") == "cutoff_requested"
                         for m in read_all(bootstrap, env["EIR_KAFKA__COMMANDS_TOPIC"])))
    verdicts = read_all(bootstrap, env["EIR_KAFKA__VERDICTS_TOPIC"])
    assert [msgspec.json.decode(m.value)["rule"] for m in verdicts] == [
        "unregistered", "blacklisted"]
    for topic in ("VERDICTS", "NOTIFICATIONS", "COMMANDS"):
        keys = {m.key for m in read_all(bootstrap, env[f"EIR_KAFKA__{topic}_TOPIC"])}
        assert keys == {LEADING_ZERO.encode()}, topic
