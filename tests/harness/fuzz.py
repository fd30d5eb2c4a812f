"""Malformed input, on purpose: what a broken or hostile producer might put on the attach
and registry topics. Seeded, so a run can be repeated; each message comes with the
dead-letter reason it must get, or None where being decided is right too (a malformed IMEI
is a decision, not a dead letter). The fuzz test and bench/fuzz.py feed these to a real
worker."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import msgspec

# Persian and Arabic-Indic digits: what a form filled in Tehran may send instead of 0-9.
FOREIGN_DIGITS = ("۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩")
MAX_DEPTH = 5000
ENORMOUS_BYTES = 50_000  # a dozen times the largest attach the decoder reads
WRONG_VALUES: tuple[object, ...] = ([1, 2], {"a": 1}, True, None, 1.5, "", -1)


@dataclass(frozen=True)
class Fuzzed:
    category: str
    value: bytes
    reason: str | None  # the dead-letter reason it must get; None: decided or dead-lettered


def _attach(rng: random.Random, now_ms: int) -> dict[str, object]:
    return {"imei": f"35{rng.randrange(10**12):012d}", "imsi": f"43211{rng.randrange(10**10):010d}",
            "msisdn": f"98912{rng.randrange(10**7):07d}", "ts": now_ms - rng.randrange(3_600_000)}


def _json(data: object) -> bytes:
    return msgspec.json.encode(data)


def _random_bytes(rng: random.Random, now_ms: int) -> Fuzzed:
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    return Fuzzed("random_bytes", b"\xff" + raw, "not_json")  # \xff: never valid JSON


def _not_an_object(rng: random.Random, now_ms: int) -> Fuzzed:
    return Fuzzed("not_an_object", _json(rng.choice([[1, 2], "x", 3, 2.5, True])),
                  "not_an_object")


def _wrong_type(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    field = rng.choice(["imsi", "msisdn", "ts"])
    event[field] = rng.choice(WRONG_VALUES)
    return Fuzzed("wrong_type", _json(event), None)


def _huge_number(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    field = rng.choice(["imsi", "msisdn", "ts"])
    digits = "9" * rng.randrange(20, 400)
    text = _json(event).replace(_json(event[field]), digits.encode(), 1)
    return Fuzzed("huge_number", text, None)


def _huge_string(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    event[rng.choice(["imei", "imsi", "msisdn"])] = "7" * rng.randrange(5000, 20000)
    return Fuzzed("huge_string", _json(event), "too_large")


def _foreign_digits(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    digits = rng.choice(FOREIGN_DIGITS)
    field = rng.choice(["imei", "imsi", "msisdn"])
    event[field] = "".join(digits[int(c)] for c in str(event[field]))
    return Fuzzed("foreign_digits", _json(event), None)


def _short_number_imei(rng: random.Random, now_ms: int) -> Fuzzed:
    """An IMEI as a JSON number of 14 digits or fewer, as a spreadsheet saves one: decided
    as malformed (number_too_short), never read as a key."""
    event = _attach(rng, now_ms)
    event["imei"] = rng.randrange(10**rng.randrange(1, 15))
    return Fuzzed("short_number_imei", _json(event), None)


def _deep(rng: random.Random, now_ms: int) -> Fuzzed:
    depth = rng.randrange(100, MAX_DEPTH)
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    return Fuzzed("deep", opener * depth + b"1" + closer * depth, None)


def _enormous(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    event["padding"] = ["x" * 100] * (ENORMOUS_BYTES // 100)
    return Fuzzed("enormous", _json(event), "too_large")


def _duplicate_key(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    field = rng.choice(list(event))
    text = _json(event)
    return Fuzzed("duplicate_key",
                  text[:-1] + b"," + _json(field) + b":" + _json(event[field]) + b"}",
                  "duplicate_key")


def _truncated(rng: random.Random, now_ms: int) -> Fuzzed:
    text = _json(_attach(rng, now_ms))
    return Fuzzed("truncated", text[:rng.randrange(1, len(text) - 1)], "not_json")


def _missing_field(rng: random.Random, now_ms: int) -> Fuzzed:
    event = _attach(rng, now_ms)
    del event[rng.choice(["imei", "imsi", "msisdn", "ts"])]
    return Fuzzed("missing_field", _json(event), "missing_field")


MAKERS: tuple[Callable[[random.Random, int], Fuzzed], ...] = (
    _random_bytes, _not_an_object, _wrong_type, _huge_number, _huge_string, _foreign_digits,
    _short_number_imei, _deep, _enormous, _duplicate_key, _truncated, _missing_field)


def fuzzed_attaches(seed: int, count: int, now_ms: int) -> list[Fuzzed]:
    rng = random.Random(seed)  # noqa: S311 - test input, not secrets
    return [rng.choice(MAKERS)(rng, now_ms) for _ in range(count)]


def _registry_event(rng: random.Random, now_ms: int) -> dict[str, object]:
    return {"event_id": f"fuzz-{rng.randrange(10**12)}", "type": "ownership_set",
            "time": now_ms, "device_id": f"D{rng.randrange(10**6)}",
            "owner_msisdn": f"98912{rng.randrange(10**7):07d}", "via": "activation"}


def _registry_malformed(rng: random.Random, now_ms: int) -> Fuzzed:
    """A registry change broken one way or another; each of these is a dead letter."""
    event = _registry_event(rng, now_ms)
    how = rng.randrange(7)
    if how == 0:
        return Fuzzed("random_bytes", b"\xff" + rng.randbytes(rng.randrange(1, 300)),
                      "not_json")
    if how == 1:
        text = _json(event)
        return Fuzzed("truncated", text[:rng.randrange(1, len(text) - 1)], "not_json")
    if how == 2:
        event["type"] = rng.choice(["", "device_stolen", "x" * 50, "OWNERSHIP_SET"])
        return Fuzzed("unknown_type", _json(event), "unknown_type")
    if how == 3:
        event[rng.choice(["device_id", "owner_msisdn", "via"])] = rng.choice(WRONG_VALUES[:3])
        return Fuzzed("wrong_type", _json(event), "bad_shape")
    if how == 4:
        text = _json(event)
        return Fuzzed("duplicate_key", text[:-1] + b',"owner_msisdn":"989120000000"}',
                      "duplicate_key")
    if how == 5:
        del event["device_id"]
        event["imeis"] = [rng.randrange(10**rng.randrange(1, 15))]
        return Fuzzed("short_number_imei", _json(event), "bad_imei")
    event["owner_msisdn"] = "".join(rng.choice(FOREIGN_DIGITS)[int(c)]
                                    for c in str(event["owner_msisdn"]))
    return Fuzzed("foreign_digits", _json(event), None)


def fuzzed_registry_events(seed: int, count: int, now_ms: int) -> list[Fuzzed]:
    rng = random.Random(seed)  # noqa: S311 - test input, not secrets
    return [_registry_malformed(rng, now_ms) for _ in range(count)]
