"""Decoding attach messages: the reference decoder's dead-letter reasons, and the vectorized
poll decoder held to the reference's answers on generated messages."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.batchdecode import decode_poll
from enforcer.engine.attachdecode import (DeadLetter, TimeWindow, decode_attach, duplicate_key,
                                         may_repeat_a_key)
from enforcer.engine.events import NO_KEY
from enforcer.engine.imei import ImeiRules

NOW = 1_790_000_000_000
WINDOW = TimeWindow.around(NOW, 60, 300)
GOOD = {"imei": "352099001761481", "imsi": "432111234567890", "msisdn": "989121234567",
        "ts": NOW}


def encode(message: object) -> bytes:
    return message if isinstance(message, bytes) else msgspec.json.encode(message)


@pytest.mark.parametrize(("message", "reason"), [
    (b"", "not_json"), (b"{", "not_json"), (b"[]", "not_an_object"),
    (b'{"imei": "\x80"}', "not_json"),  # not UTF-8 inside a string
    (b"x" * 5000, "too_large"),
    ({k: v for k, v in GOOD.items() if k != "ts"}, "missing_field"),
    (GOOD | {"msisdn": None}, "missing_field"),
    (GOOD | {"imei": 3.5}, "bad_imei"), (GOOD | {"imei": True}, "bad_imei"),
    (GOOD | {"imsi": "4321"}, "bad_imsi"), (GOOD | {"imsi": "imsi-abc"}, "bad_imsi"),
    (GOOD | {"msisdn": "0912123456"}, "bad_msisdn"), (GOOD | {"msisdn": "98-912"}, "bad_msisdn"),
    (GOOD | {"ts": "yesterday"}, "bad_ts"), (GOOD | {"ts": True}, "bad_ts"),
    (GOOD | {"ts": "2026-09-21"}, "bad_ts"), (GOOD | {"ts": "2026-09-21T12:00:00+03"}, "bad_ts"),
    (GOOD | {"ts": "2026-02-29T12:00:00Z"}, "bad_ts"), (GOOD | {"ts": "9" * 4000}, "bad_ts"),
    (GOOD | {"ts": [NOW]}, "bad_ts"),
    (GOOD | {"ts": 1}, "absurd_ts"), (GOOD | {"ts": NOW + 3_600_000}, "absurd_ts"),
    (GOOD | {"emergency": "yes"}, "bad_field"), (GOOD | {"rat": 5}, "bad_field"),
])
def test_reference_dead_letter_reasons(rules: ImeiRules, message: object, reason: str) -> None:
    decoded = decode_attach(encode(message), rules, WINDOW)
    assert isinstance(decoded, DeadLetter) and decoded.reason == reason


@pytest.mark.parametrize("ts", [
    "2026-09-21T14:13:20Z", "2026-09-21T14:13:20z", "2026-09-21t14:13:20Z",  # RFC 3339 §5.6
    "2026-09-21T17:43:20.000999+03:30", "2026-09-21 14:13:20Z", "2026-09-21T14:13:20",
    "1790000000000", 1_790_000_000_000, 1_790_000_000_000.0])
def test_ts_is_read_as_its_instant(rules: ImeiRules, ts: object) -> None:
    decoded = decode_attach(encode(GOOD | {"ts": ts}), rules, WINDOW)
    assert not isinstance(decoded, DeadLetter) and decoded.ts_ms == NOW


def test_accepted_forms(rules: ImeiRules) -> None:
    for message in (GOOD, GOOD | {"ts": "2026-09-21T12:00:00Z"}, GOOD | {"imsi": 432111234567890},
                    GOOD | {"msisdn": "+989121234567"}, GOOD | {"imei": "imei-352099001761481"},
                    GOOD | {"emergency": True, "rat": "NR", "cell": "abc", "extra": [1]}):
        assert not isinstance(decode_attach(encode(message), rules, WINDOW), DeadLetter)


@pytest.mark.parametrize(("imei", "key", "problems"), [
    (13327001001504, None, ["number_too_short"]),  # issue 18: 013327001001504 as a number
    (133270010015040, 13327001001504, []), (1332700100150407, 13327001001504, []),
    ("13327001001504", 13327001001504, []), ("013327001001504", 1332700100150, [])])
def test_an_imei_as_a_number_is_read_only_with_15_or_16_digits(
        rules: ImeiRules, imei: object, key: int | None, problems: list[str]) -> None:
    """A number holds no leading zero: one of 14 digits or fewer is decided as malformed,
    with no key, on both decoders."""
    message = encode(GOOD | {"imei": imei})
    decoded = decode_attach(message, rules, WINDOW)
    poll = decode_poll([message], rules, WINDOW)
    assert not isinstance(decoded, DeadLetter) and not poll.dead
    assert (decoded.imei.imei_key, [p.value for p in decoded.imei.problems]) == (key, problems)
    assert (int(poll.batch.imei_key[0]), bool(poll.batch.malformed[0])) == (
        NO_KEY if key is None else key, bool(problems))


digits = st.text(alphabet="0123456789", min_size=0, max_size=18)
texts = st.one_of(digits, st.text(max_size=20), st.sampled_from(
    ["imei-352099001761481", " 35209900176148", "۳۵۲۰۹۹۰۰۱۷۶۱۴۸۱", "004999010640000",
     "00441234123456", "77777777777777", "0912123456", "+989121234567", "imsi-432111234567890"]))
values = st.one_of(texts, st.integers(-10, 10**16), st.none(), st.booleans(), st.floats())
# IMEIs as JSON numbers too, of every width around the 14 digits of a key.
imeis = st.one_of(texts, st.integers(0, 18).flatmap(lambda n: st.integers(0, 10**n)))
messages = st.one_of(
    st.fixed_dictionaries({"imei": imeis, "imsi": texts, "msisdn": texts,
                           "ts": st.integers(NOW - 70 * 86_400_000, NOW + 600_000)},
                          optional={"emergency": st.one_of(st.booleans(), values),
                                    "rat": st.one_of(st.text(max_size=3), values)}),
    st.fixed_dictionaries({"imei": values, "imsi": values, "msisdn": values, "ts": values}),
    st.just(GOOD), imeis.map(lambda imei: GOOD | {"imei": imei}), st.binary(max_size=30))


@given(st.lists(messages, max_size=25))
@settings(max_examples=400, deadline=None)
def test_poll_decoder_agrees_with_the_reference(rules: ImeiRules, batch: list) -> None:
    values = [encode(m) for m in batch]
    poll = decode_poll(values, rules, WINDOW)
    expected_events, expected_dead = [], []
    for i, value in enumerate(values):
        one = decode_attach(value, rules, WINDOW)
        (expected_dead if isinstance(one, DeadLetter) else expected_events).append((i, one))
    assert [(i, d.reason) for i, d in poll.dead] == [(i, d.reason) for i, d in expected_dead]
    assert poll.positions.tolist() == [i for i, _ in expected_events]
    b = poll.batch
    for row, (_, event) in enumerate(expected_events):
        key = NO_KEY if event.imei.key is None else int(event.imei.key)
        assert (int(b.imei_key[row]), bool(b.malformed[row]), int(b.imsi[row]),
                int(b.mcc[row]), int(b.msisdn[row]), int(b.ts_ms[row]),
                bool(b.emergency[row])) == (
            int(key), event.imei.malformed, event.imsi.value, event.imsi.mcc, event.msisdn,
            event.ts_ms, event.emergency)


def test_a_poll_with_bytes_that_are_not_utf8_in_a_string_dead_letters_them(
        rules: ImeiRules) -> None:
    poll = decode_poll([b'{"imei": "\xff", "imsi": 1}', encode(GOOD)], rules, WINDOW)
    assert [(i, d.reason) for i, d in poll.dead] == [(0, "not_json")]
    assert poll.positions.tolist() == [1]


def written(pairs: list[tuple[str, object]], spaces: list[str]) -> bytes:
    """An object with these pairs in order (repeats kept), whitespace before each `:` as
    RFC 8259 §4 allows."""
    return ("{" + ", ".join(f"{msgspec.json.encode(k).decode()}{s}:{s}"
                            f"{msgspec.json.encode(v).decode()}"
                            for (k, v), s in zip(pairs, spaces)) + "}").encode()


@given(st.lists(st.tuples(st.sampled_from(["imei", "imsi", "ts", "a:", 'b"', "c\\"]),
                          st.one_of(st.text(max_size=8), st.integers())),
                min_size=1, max_size=6),
       st.lists(st.sampled_from(["", " ", "\t", "\n  "]), min_size=6, max_size=6))
def test_a_repeated_key_is_always_looked_at_whatever_the_spacing(pairs, spaces) -> None:
    value = written(pairs, spaces)
    keys = {k for k, _ in pairs}
    if len(keys) < len(pairs):
        assert may_repeat_a_key(value, len(keys))
        assert duplicate_key(value, len(keys)) is not None
    else:
        assert not may_repeat_a_key(value, len(keys))  # strings' colons are not separators


def test_an_attach_repeating_a_key_spaced_before_its_colon_is_refused(rules: ImeiRules) -> None:
    value = written([*GOOD.items(), ("msisdn", "989129999999")], [" "] * 5)
    decoded = decode_attach(value, rules, WINDOW)
    assert isinstance(decoded, DeadLetter) and decoded.reason == "duplicate_key"
    assert decode_poll([value], rules, WINDOW).dead[0][1].reason == "duplicate_key"
