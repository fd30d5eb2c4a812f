"""`eir-enforcer notices list|show|cancel`: the NOC's view of notices, and its hand on
them. Numbers are masked unless asked for in full. A cancel by hand goes the way the
registry's does: a cut subject gets its restore through the outbox, and every worker drops
it from its cut-off list when it next follows the table."""

from __future__ import annotations

from typing import Callable

import msgspec
import psycopg

from enforcer.clock import Clock, iso
from enforcer.config import Config
from enforcer.db.notices import NoticeRow, enqueue, find, lock, messages_of, record, transitions_of
from enforcer.engine.devicemodel import model_name
from enforcer.engine.effects import Stream
from enforcer.engine.lifecycle import LIVE, Notice
from enforcer.engine.subscriber import mask
from enforcer.engine.tacs import TacDatabase
from enforcer.notices.resolve import cancellation

BY_HAND = "noc"


def notice_json(notice: Notice, reveal: bool) -> dict[str, object]:
    def shown(number: int) -> str:
        return str(number) if reveal else mask(number)
    return {"id": notice.id, "kind": notice.kind, "scope": notice.scope.value,
            "imei": f"{notice.imei_key:014d}", "imsi": shown(notice.imsi),
            "msisdn": shown(notice.msisdn), "rule": notice.rule, "state": notice.state.value,
            "opened": iso(notice.opened_ms), "deadline": iso(notice.deadline_ms),
            "last_seen": iso(notice.last_seen_ms), "reminders_done": notice.reminders_done,
            "sms": notice.sms}


def row_json(row: NoticeRow, reveal: bool) -> dict[str, object]:
    return {**notice_json(row.notice, reveal),
            "next_due": iso(row.next_due_ms) if row.next_due_ms is not None else None,
            "closed_reason": row.closed_reason, "superseded_by": row.superseded_by}


def show(conn: psycopg.Connection, notice_id: int, reveal: bool,
         model: Callable[[int], dict[str, object] | None]) -> dict[str, object] | None:
    """The notice, its transitions and its messages; `model` says what the notice's IMEI
    key's model is (enforcer.engine.devicemodel.model_json)."""
    found = find(conn, notice_id=notice_id, limit=1)
    if not found:
        return None
    return {**row_json(found[0], reveal), "model": model(found[0].notice.imei_key),
            "transitions": [{"at": at.isoformat(), "from": f, "to": t, "step": step,
                             "reason": reason} for at, f, t, step, reason
                            in transitions_of(conn, notice_id)],
            "messages": [{"stream": stream, "idempotency_key": key,
                          "created": created.isoformat(),
                          "sent": sent.isoformat() if sent else None, **_says(stream, body)}
                         for stream, key, created, sent, body in messages_of(conn, notice_id)]}


def _says(stream: str, body: bytes) -> dict[str, object]:
    """What a message says, none of the subscriber's numbers in it: an SMS's text (its
    placeholders are the IMEI, the deadline and the help code), a command's action."""
    message = msgspec.json.decode(body)
    if stream == Stream.NOTIFICATIONS:
        return {"language": message["language"], "text": message["text"]}
    return {"action": message["action"]}


def cancel(conn: psycopg.Connection, notice_id: int, reason: str, config: Config,
           clock: Clock, tacs: TacDatabase | None) -> Notice | None:
    """The notice as cancelled, or None when it is not live (or not there); a restore's SMS
    names the phone's model from `tacs` (the snapshot's TAC database, None without one)."""
    with conn.transaction():
        notice = lock(conn, notice_id)
        if notice is None or notice.state not in LIVE:
            return None
        change, messages = cancellation(notice, f"{BY_HAND}: {reason}", config.notices,
                                        model_name(tacs, notice.imei_key))
        now = clock.now_ms()
        record(conn, [change], now)
        enqueue(conn, messages, now)
    return change.notice
