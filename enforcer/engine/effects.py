"""The hand-off from decisions to the rest of the network, as messages (docs/messages.md).

Pure: a decided batch in, the messages it asks for out. Each message carries an idempotency
key derived from what it is about (IMEI, and IMSI when the scope is a pair), so a replayed
batch asks for the same keys and whoever consumes them can drop the repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from enforcer.clock import iso
from enforcer.engine.decide import Decisions, decision_at
from enforcer.engine.events import NO_KEY, AttachBatch
from rules.policy import Scope

ANY_SIM = "*"
# In a verdict's idempotency key, where a malformed IMEI has no key to give.
MALFORMED = "malformed"
# Every message to the network carries its idempotency key in this header too.
IDEMPOTENCY_HEADER = "idempotency-key"
# How long a producer flush may take before the batch (or the outbox round) is retried.
FLUSH_TIMEOUT_S = 30.0


class Stream(StrEnum):
    """Which configured topic a message goes to."""

    NOTIFICATIONS = "notifications"
    COMMANDS = "commands"
    VERDICTS = "verdicts"


@dataclass(frozen=True)
class Outgoing:
    stream: Stream
    key: bytes | None  # message_key, so one device's messages stay in one partition
    idempotency_key: str
    value: dict[str, object]


def message_key(imei_key: int) -> bytes:
    """The Kafka key of a message about one IMEI: its 14-digit key in ASCII digits, leading
    zeros kept, as on `attach-events` (docs/messages.md)."""
    return f"{imei_key:014d}".encode()


def _subject(scope: Scope, imei_key: int, imsi: int) -> str:
    return f"{imei_key:014d}:{imsi if scope is Scope.PAIR else ANY_SIM}"


def effects_of(batch: AttachBatch, decisions: Decisions) -> list[Outgoing]:
    """Cutoff requests of black-listed IMEIs, one per idempotency key. (Notices go through
    the notices table and its outbox: `enforcer/notices/`, `consumers/outbox.py`.)"""
    rules = decisions.policy.rules
    wants = np.array([r.cutoff_now for r in rules], dtype=bool)
    out: dict[str, Outgoing] = {}
    for i in np.flatnonzero(wants[decisions.rule]).tolist():
        d = decision_at(decisions, batch, i)
        if d.cutoff_now is None:
            continue
        imei_key, imsi, msisdn = (int(batch.imei_key[i]), int(batch.imsi[i]),
                                  int(batch.msisdn[i]))
        key = f"cutoff:{d.cutoff_now.value}:{_subject(d.cutoff_now, imei_key, imsi)}"
        out.setdefault(key, Outgoing(Stream.COMMANDS, message_key(imei_key), key, {
            "type": "cutoff_requested", "idempotency_key": key, "action": "cutoff",
            "scope": d.cutoff_now.value,
            "black_reason": d.black_reason.value if d.black_reason else None,
            "imei": f"{imei_key:014d}", "imsi": str(imsi), "msisdn": str(msisdn),
            "seen_at": iso(int(batch.ts_ms[i])), "rule": d.rule, "reason": d.reason}))
    return list(out.values())


def verdicts_of(batch: AttachBatch, decisions: Decisions) -> list[Outgoing]:
    """Every decision, for operators who want the full stream (off by default)."""
    names = [r.name for r in decisions.policy.rules]
    verdicts = [r.verdict.value for r in decisions.policy.rules]
    reasons = [r.reason for r in decisions.policy.rules]
    out = []
    for key, imsi, msisdn, ts, rule in zip(
            batch.imei_key.tolist(), batch.imsi.tolist(), batch.msisdn.tolist(),
            batch.ts_ms.tolist(), decisions.rule.tolist()):
        # A malformed IMEI gave no key: its verdict has no device to keep in order with.
        imei = f"{key:014d}" if key != NO_KEY else None
        idempotency = f"verdict:{imei or MALFORMED}:{imsi}:{ts}"
        kafka_key = message_key(key) if imei else None
        out.append(Outgoing(Stream.VERDICTS, kafka_key, idempotency, {
            "imei": imei, "imsi": str(imsi),
            "msisdn": str(msisdn), "ts": iso(ts), "verdict": verdicts[rule],
            "rule": names[rule], "reason": reasons[rule]}))
    return out
