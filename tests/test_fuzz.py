"""Bad input, fuzzed: random bytes, wrong types, huge numbers and strings, Persian and
Arabic-Indic digits, IMEIs as numbers too short to be read, deep or enormous JSON, repeated
keys, cut-off messages. The decoders never raise and give each its reason (hypothesis picks
the kinds and seeds); a real worker fed a mixed stream loses none, dead-letters each bad one
with its reason, and keeps going."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.batchdecode import decode_poll
from enforcer.engine.attachdecode import DeadLetter, TimeWindow
from enforcer.engine.registrydecode import decode_registry_event
from enforcer.engine.events import NO_KEY
from tests.harness.fuzz import MAKERS, fuzzed_attaches, fuzzed_registry_events
from enforcer.engine.imei import ImeiRules
from tests.kafkatools import produce, read_all, wait_for
from tests.test_worker import attach, now_ms
from tests.test_decide import OWNER, SINGLE

NOW_MS = 1_795_000_000_000
WINDOW = TimeWindow.around(NOW_MS, 60, 300)
ATTACHES = 1000
REGISTRY_EVENTS = 200


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(MAKERS), st.integers(0, 2**32))
def test_every_kind_of_bad_attach_gets_its_reason(rules: ImeiRules, make, seed: int) -> None:
    fuzzed = make(random.Random(seed), NOW_MS)  # noqa: S311
    decoded = decode_poll([fuzzed.value], rules, WINDOW)
    assert len(decoded.batch) + len(decoded.dead) == 1
    if fuzzed.reason is not None:
        assert [letter.reason for _, letter in decoded.dead] == [fuzzed.reason]
    if fuzzed.category == "short_number_imei":  # decided, as malformed with no key
        assert decoded.batch.imei_key.tolist() == [NO_KEY]
        assert decoded.batch.malformed.tolist() == [True]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32))
def test_every_kind_of_bad_registry_change_gets_its_reason(rules: ImeiRules, seed: int) -> None:
    for fuzzed in fuzzed_registry_events(seed, 5, NOW_MS):
        decoded = decode_registry_event(fuzzed.value, rules, WINDOW)
        if fuzzed.reason is not None:
            assert isinstance(decoded, DeadLetter) and decoded.reason == fuzzed.reason


def test_a_worker_fed_a_fuzzed_stream_loses_nothing_and_keeps_going(env, worker) -> None:
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    attaches = fuzzed_attaches(3, ATTACHES, now_ms())
    changes = fuzzed_registry_events(4, REGISTRY_EVENTS, now_ms())
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [f.value for f in attaches])
    produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [f.value for f in changes])
    running = worker()
    metrics = running.worker.metrics

    def decided() -> float:
        return sum(s.value for f in metrics.collectors.collect() for s in f.samples
                   if s.name == "eir_events_consumed_total")

    wait_for(lambda: decided() + len(read_all(bootstrap, env["EIR_KAFKA__ATTACH_DLQ_TOPIC"]))
             == ATTACHES, timeout_s=120)
    dead = {int(dict(m.headers)["dlq-source-offset"]): dict(m.headers)["dlq-reason"].decode()
            for m in read_all(bootstrap, env["EIR_KAFKA__ATTACH_DLQ_TOPIC"])}
    for offset, fuzzed in enumerate(attaches):
        if fuzzed.reason is not None:
            assert dead.get(offset) == fuzzed.reason, (fuzzed.category, offset)
    wait_for(lambda: len(read_all(bootstrap, env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"]))
             == REGISTRY_EVENTS, timeout_s=120)
    # Still deciding: a good attach after all of it goes through.
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [attach(SINGLE, OWNER, now_ms())])
    wait_for(lambda: decided() + len(dead) == ATTACHES + 1)
    assert running.thread.is_alive()
