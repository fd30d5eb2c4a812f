"""Decode a whole poll of attach messages into one batch of columns.

Almost every message has the usual shape: string digits for IMEI, IMSI and MSISDN and an
epoch-millisecond `ts`. msgspec checks that shape while it parses, in C, and those messages
go straight to numpy columns, parsed with vectorized string operations. Every other
message (a prefix, whitespace, a number where a string is usual, anything broken) goes
through `decode_attach`, the reference decoder, so both paths give the same answer; a
property test holds them to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Sequence

import msgspec
import numpy as np

from enforcer.engine.attachdecode import (JSON_ERRORS, MAX_MESSAGE_BYTES, REQUIRED, DeadLetter,
                                          TimeWindow, may_repeat_a_key, decode_attach)
from enforcer.engine.digits import decimal_values
from enforcer.engine.events import AttachBatch, AttachEvent, operator_code
from enforcer.engine.tacs import rat_of
from enforcer.engine.imei import IMEISV_DIGITS, KEY_DIGITS, ImeiRules
from enforcer.engine.subscriber import (IMSI_MAX_DIGITS, IMSI_MIN_DIGITS, MCC_DIGITS,
                                        MSISDN_MAX_DIGITS, MSISDN_MIN_DIGITS)

@dataclass(frozen=True, eq=False)
class DecodedPoll:
    batch: AttachBatch  # the decodable messages, in their order in the poll
    positions: np.ndarray  # int64: each batch event's position in the poll
    dead: list[tuple[int, DeadLetter]]  # position in the poll, why


class _Usual(msgspec.Struct):
    """The usual shape, strictly: no coercion, so anything else is not usual."""

    imei: str
    imsi: str
    msisdn: str
    ts: Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
    emergency: bool = False
    mcc_mnc: str | None = None
    rat: str | None = None
    cell: str | None = None


_usual = msgspec.json.Decoder(_Usual)


def _keys(fields: _Usual) -> int:
    """The keys the message held at the least (an `emergency: false` may be there too)."""
    return (len(REQUIRED) + fields.emergency + (fields.mcc_mnc is not None)
            + (fields.rat is not None) + (fields.cell is not None))


def decode_poll(values: Sequence[bytes | None], rules: ImeiRules,
                window: TimeWindow) -> DecodedPoll:
    usual: list[int] = []
    fields: list[_Usual] = []
    unusual: list[int] = []
    for i, value in enumerate(values):
        if value is None or len(value) > MAX_MESSAGE_BYTES:
            unusual.append(i)
            continue
        try:
            decoded = _usual.decode(value)
        except JSON_ERRORS:
            unusual.append(i)
            continue
        if may_repeat_a_key(value, _keys(decoded)):
            unusual.append(i)  # the slow path tells a repeated key from a busy string
        else:
            fields.append(decoded)
            usual.append(i)
    fast, rejected = _columns(fields, rules, window)
    unusual = sorted(unusual + [usual[j] for j in rejected])
    keep = np.setdiff1d(np.arange(len(usual)), np.array(rejected, dtype=np.int64))
    events: list[AttachEvent] = []
    event_positions: list[int] = []
    dead: list[tuple[int, DeadLetter]] = []
    for i in unusual:
        decoded = decode_attach(values[i], rules, window)
        if isinstance(decoded, DeadLetter):
            dead.append((i, decoded))
        else:
            events.append(decoded)
            event_positions.append(i)
    slow = AttachBatch.from_events(events)
    positions = np.concatenate([np.array(usual, dtype=np.int64)[keep],
                                np.array(event_positions, dtype=np.int64)])
    both = AttachBatch(*(np.concatenate([getattr(fast.take(keep), f), getattr(slow, f)])
                         for f in AttachBatch.__dataclass_fields__))
    order = np.argsort(positions, kind="stable")
    return DecodedPoll(both.take(order), positions[order], dead)


def _ascii(texts: list[str], width: int) -> np.ndarray | None:
    """Fixed-width bytes one wider than the widest usual value (so that a longer one shows
    as too long), or None when a text is not ASCII."""
    try:
        return np.array(texts, dtype=f"S{width + 1}")
    except UnicodeEncodeError:
        return None


def _columns(fields: list[_Usual], rules: ImeiRules,
             window: TimeWindow) -> tuple[AttachBatch, list[int]]:
    """The usual messages as columns, and which of them the vectorized checks could not
    vouch for (they go to the reference decoder instead)."""
    if not fields:
        return AttachBatch.empty(), []
    imeis, imsis, msisdns = [f.imei for f in fields], [f.imsi for f in fields], \
        [f.msisdn for f in fields]
    ts, emergency = [f.ts for f in fields], [f.emergency for f in fields]
    imei = _ascii(imeis, IMEISV_DIGITS)
    imsi = _ascii(imsis, IMSI_MAX_DIGITS)
    msisdn = _ascii(msisdns, MSISDN_MAX_DIGITS)
    if imei is None or imsi is None or msisdn is None:
        return AttachBatch.empty(), list(range(len(fields)))
    ts_ms = np.array(ts, dtype=np.int64)
    imei_len, imsi_len, msisdn_len = (np.strings.str_len(a) for a in (imei, imsi, msisdn))
    good = (np.strings.isdigit(imei) & (imei_len >= KEY_DIGITS)
            & (imei_len <= IMEISV_DIGITS)
            & np.strings.isdigit(imsi) & (imsi_len >= IMSI_MIN_DIGITS)
            & (imsi_len <= IMSI_MAX_DIGITS)
            & np.strings.isdigit(msisdn) & (msisdn_len >= MSISDN_MIN_DIGITS)
            & (msisdn_len <= MSISDN_MAX_DIGITS) & ~np.strings.startswith(msisdn, b"0")
            & (ts_ms >= window.now_ms - window.max_age_ms)
            & (ts_ms <= window.now_ms + window.max_future_ms))
    rejected = np.flatnonzero(~good).tolist()
    key14 = np.where(good, imei, b"0" * KEY_DIGITS).astype(f"S{KEY_DIGITS}")
    imsi_ok = np.where(good, imsi, b"0" * IMSI_MIN_DIGITS)
    batch = AttachBatch(
        imei_key=decimal_values(key14),
        malformed=_malformed(key14, rules),
        imsi=decimal_values(imsi_ok),
        mcc=decimal_values(imsi_ok.astype(f"S{MCC_DIGITS}")).astype(np.uint16),
        msisdn=decimal_values(np.where(good, msisdn, b"0")),
        ts_ms=ts_ms,
        emergency=np.array(emergency, dtype=bool),
        operator=np.array([operator_code(f.mcc_mnc) for f in fields], dtype=np.uint32),
        cell=np.array([f.cell for f in fields] + [None], dtype=object)[:-1],
        rat=np.fromiter((rat_of(f.rat) for f in fields), np.uint8, len(fields)))
    return batch, rejected


def _malformed(key14: np.ndarray, rules: ImeiRules) -> np.ndarray:
    """The problems a 14-digit key can have: one digit repeated, a test TAC, a placeholder."""
    digits = np.frombuffer(key14.tobytes(), dtype=np.uint8).reshape(len(key14), KEY_DIGITS)
    repeated = (digits == digits[:, :1]).all(axis=1)
    test_tac = np.zeros(len(key14), dtype=bool)
    for prefix in rules.test_tac_prefixes:
        test_tac |= np.strings.startswith(key14, prefix.encode())
    placeholder = np.isin(key14, np.array(sorted(rules.placeholder_keys), dtype=f"S{KEY_DIGITS}"))
    return repeated | test_tac | placeholder

