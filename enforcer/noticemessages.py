"""What a notice's step says, pure: the SMS for the gateway (`eir.notifications`) and the
command for provisioning (`eir.commands`), each with its idempotency key (notice id and
step) in the body, as the outbox stores them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import jdatetime
import msgspec

from enforcer.clock import MS_PER_S, iso
from enforcer.config import NoticesConfig
from enforcer.effects import Stream, message_key
from enforcer.notices import Notice, Step


class Action:
    CUTOFF = "cutoff"
    RESTORE = "restore"


@dataclass(frozen=True)
class OutboxMessage:
    stream: str
    key: bytes  # message_key: one device's messages stay in order in one partition
    idempotency_key: str
    body: bytes


def idempotency_key(notice: Notice, step: Step) -> str:
    """One per notice and step; reminders are numbered."""
    suffix = f"-{notice.reminders_done}" if step is Step.REMINDER else ""
    return f"notice-{notice.id}-{step.value}{suffix}"


@lru_cache(maxsize=4096)
def _calendar_dates(day: date) -> tuple[str, str]:
    """(Gregorian, Persian) forms of a deadline's day: thousands of notices share a day."""
    return day.isoformat(), jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d")


def sms_text(notice: Notice, step: Step, settings: NoticesConfig) -> str:
    day = datetime.fromtimestamp(notice.deadline_ms / MS_PER_S, ZoneInfo(settings.timezone))
    gregorian, jalali = _calendar_dates(day.date())
    template = getattr(settings.templates, f"{step.value}_{settings.language}")
    return template.format(imei=f"{notice.imei_key:014d}", deadline=gregorian,
                           deadline_jalali=jalali, code=settings.ussd_code)


def _sms(notice: Notice, step: Step, settings: NoticesConfig) -> OutboxMessage:
    key = idempotency_key(notice, step)
    body = {"idempotency_key": key, "notice_id": notice.id, "step": step.value,
            "kind": notice.kind, "msisdn": str(notice.msisdn), "imei": f"{notice.imei_key:014d}",
            "deadline": iso(notice.deadline_ms), "language": settings.language,
            "text": sms_text(notice, step, settings)}
    return OutboxMessage(Stream.NOTIFICATIONS.value, message_key(notice.imei_key), key,
                         msgspec.json.encode(body))


def _command(notice: Notice, step: Step, action: str) -> OutboxMessage:
    key = idempotency_key(notice, step)
    body = {"idempotency_key": key, "command_id": key, "action": action,
            "scope": notice.scope.value, "imei": f"{notice.imei_key:014d}",
            "imsi": str(notice.imsi), "msisdn": str(notice.msisdn), "reason": notice.kind,
            "notice_id": notice.id}
    return OutboxMessage(Stream.COMMANDS.value, message_key(notice.imei_key), key,
                         msgspec.json.encode(body))


def step_messages(notice: Notice, step: Step, settings: NoticesConfig) -> list[OutboxMessage]:
    """What goes out when `notice` (as it stands after the step) takes `step`."""
    out = []
    if step is Step.CUTOFF:
        out.append(_command(notice, step, Action.CUTOFF))
    elif step is Step.RESOLVED:
        out.append(_command(notice, step, Action.RESTORE))
    if notice.sms and (step is not Step.RESOLVED or settings.resolved_sms):
        out.append(_sms(notice, step, settings))
    return out
