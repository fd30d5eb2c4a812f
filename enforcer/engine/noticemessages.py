"""What a notice's step says, pure: the SMS for the gateway (`eir.notifications`) and the
command for provisioning (`eir.commands`), each with its idempotency key (notice id and
step) in the body, as the outbox stores them.

The SMS text comes from `notices.templates` (kind -> step -> language -> text), checked at
start by `check_templates`. A text names the device by its 15-digit IMEI, the one *#06#
shows (the 14-digit key and its Luhn check digit, 3GPP TS 23.003 §6.2.1 and Annex B),
gives the deadline in the Persian calendar, and writes numbers in the digits of its
language.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import jdatetime
import msgspec

from enforcer.clock import MS_PER_S, iso
from enforcer.config import ConfigError, NoticesConfig
from enforcer.engine.effects import Stream, message_key
from enforcer.engine.imei import luhn_digit
from enforcer.engine.lifecycle import Notice, Step
from rules.policy import Policy

ASCII_DIGITS = "0123456789"
TEMPLATES_KEY = "notices.templates"


@dataclass(frozen=True)
class Language:
    """How a language writes numbers and the months of both calendars."""

    numerals: dict[int, str]  # str.translate table from ASCII digits to its own
    jalali_months: tuple[str, ...]  # Farvardin first
    gregorian_months: tuple[str, ...]  # January first
    unknown_model: str  # {model} where the TAC database does not name the phone's

    def number(self, ascii_digits: str) -> str:
        return ascii_digits.translate(self.numerals)


LANGUAGES = {
    "fa": Language(str.maketrans(ASCII_DIGITS, "۰۱۲۳۴۵۶۷۸۹"),
                   tuple(jdatetime.date.j_months_fa),
                   ("ژانویه", "فوریه", "مارس", "آوریل", "مه", "ژوئن", "ژوئیه", "اوت",
                    "سپتامبر", "اکتبر", "نوامبر", "دسامبر"),
                   "مدل ثبت‌نشده"),
    "en": Language({}, tuple(jdatetime.date.j_months_en),
                   ("January", "February", "March", "April", "May", "June", "July",
                    "August", "September", "October", "November", "December"),
                   "model not on record"),
}
# What a template may name: the IMEI, the deadline's day in the Persian calendar and in the
# Gregorian one (as "2 Dey 1405", "23 December 2026"), the help code (notices.ussd_code),
# the phone's make and model as the TAC database names them (enforcer.engine.devicemodel).
PLACEHOLDERS = ("imei", "deadline", "deadline_gregorian", "code", "model")
# The steps with an SMS, each needing its texts (a release has none).
SMS_STEPS = tuple(s for s in Step if s is not Step.RELEASED)
STEPS = tuple(s.value for s in SMS_STEPS)


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


def notice_kinds(policy: Policy) -> dict[str, bool]:
    """The notice kinds the policy's rules open -> whether any of them sends SMS."""
    kinds: dict[str, bool] = {}
    for rule in policy.rules:
        if rule.notice_kind is not None:
            kinds[rule.notice_kind] = kinds.get(rule.notice_kind, False) or rule.sms
    return kinds


def check_templates(settings: NoticesConfig, policy: Policy, shipped: Policy,
                    live: frozenset[str] = frozenset()) -> None:
    """Refuse, naming the key, what a text could not be rendered from: a kind neither
    `policy` nor the `shipped` one (rules/default.toml) opens, a step or language that
    does not exist, a placeholder not in PLACEHOLDERS (or with a conversion or format),
    and a step missing in `notices.language` for a kind the policy sends SMS for, or of
    which `live` notices that send SMS are still stored (a kind an operator took out of the
    policy: their last steps still go out, and a missing text would stop the sweep on them).

    Raises ConfigError."""
    if settings.language not in LANGUAGES:
        raise ConfigError(f"configuration key 'notices.language': '{settings.language}' is "
                          f"not one of {', '.join(LANGUAGES)}")
    kinds = notice_kinds(policy)
    known = kinds.keys() | notice_kinds(shipped).keys() | live
    for kind, steps in settings.templates.items():
        where = f"{TEMPLATES_KEY}.{kind}"
        if kind not in known:
            raise ConfigError(f"configuration key '{where}': no rule of the policy opens "
                              f"notices of kind '{kind}' (kinds: {', '.join(sorted(known))})")
        for step, texts in steps.items():
            _known(step, STEPS, "step", where)
            for language, text in texts.items():
                _known(language, tuple(LANGUAGES), "language", f"{where}.{step}")
                _check_placeholders(text, f"{where}.{step}.{language}")
    needed = {kind: "the policy sends SMS" for kind, sms in kinds.items() if sms}
    needed |= {kind: "live notices that send SMS are" for kind in live - needed.keys()}
    for kind, why in needed.items():
        for step in STEPS:
            if settings.language not in settings.templates.get(kind, {}).get(step, {}):
                raise ConfigError(f"configuration key '{TEMPLATES_KEY}.{kind}.{step}."
                                  f"{settings.language}' is missing: {why} "
                                  f"for notices of kind '{kind}'")


def _known(key: str, allowed: tuple[str, ...], what: str, where: str) -> None:
    if key not in allowed:
        raise ConfigError(f"configuration key '{where}.{key}': unknown {what} "
                          f"(one of {', '.join(allowed)})")


def _check_placeholders(text: str, where: str) -> None:
    try:
        fields = [(name, conversion, spec)
                  for _, name, spec, conversion in string.Formatter().parse(text)
                  if name is not None]
    except ValueError as exc:  # a lone brace
        raise ConfigError(f"configuration key '{where}': {exc} (a literal brace is "
                          "written twice: {{ or }})") from None
    for name, conversion, spec in fields:
        if name not in PLACEHOLDERS:
            raise ConfigError(f"configuration key '{where}': unknown placeholder "
                              f"'{{{name}}}' (placeholders: "
                              f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
        if conversion or spec:
            raise ConfigError(f"configuration key '{where}': placeholder '{{{name}}}' takes "
                              "no conversion or format")


@lru_cache(maxsize=4096)
def _calendar_dates(day: date, language: str) -> tuple[str, str]:
    """(Persian calendar, Gregorian) forms of a deadline's day in a language: thousands of
    notices share a day."""
    lang = LANGUAGES[language]
    jalali = jdatetime.date.fromgregorian(date=day)
    return (lang.number(f"{jalali.day} {lang.jalali_months[jalali.month - 1]} {jalali.year}"),
            lang.number(f"{day.day} {lang.gregorian_months[day.month - 1]} {day.year}"))


def full_imei(imei_key: int) -> str:
    """The 15 ASCII digits a subscriber sees with *#06#: the key and its Luhn check digit
    (3GPP TS 23.003 Annex B)."""
    key = f"{imei_key:014d}"
    return key + luhn_digit(key)


def sms_text(notice: Notice, step: Step, settings: NoticesConfig, model: str | None) -> str:
    """The text of a step's SMS in `notices.language`; `model` is the phone's make and model
    (`devicemodel.model_name`), None when not known. The templates must have passed
    `check_templates` against the policy that opened the notice (else KeyError)."""
    language = settings.language
    lang = LANGUAGES[language]
    day = datetime.fromtimestamp(notice.deadline_ms / MS_PER_S, ZoneInfo(settings.timezone))
    jalali, gregorian = _calendar_dates(day.date(), language)
    template = settings.templates[notice.kind][step.value][language]
    return template.format(imei=lang.number(full_imei(notice.imei_key)), deadline=jalali,
                           deadline_gregorian=gregorian, code=lang.number(settings.ussd_code),
                           model=lang.unknown_model if model is None else model)


def _sms(notice: Notice, step: Step, settings: NoticesConfig,
         model: str | None) -> OutboxMessage:
    key = idempotency_key(notice, step)
    body = {"idempotency_key": key, "notice_id": notice.id, "step": step.value,
            "kind": notice.kind, "msisdn": str(notice.msisdn), "imei": f"{notice.imei_key:014d}",
            "deadline": iso(notice.deadline_ms), "language": settings.language,
            "text": sms_text(notice, step, settings, model)}
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


def step_messages(notice: Notice, step: Step, settings: NoticesConfig,
                  model: str | None) -> list[OutboxMessage]:
    """What goes out when `notice` (as it stands after the step) takes `step`; `model` as
    `sms_text` takes it."""
    out = []
    if step is Step.CUTOFF:
        out.append(_command(notice, step, Action.CUTOFF))
    elif step in (Step.RESOLVED, Step.RELEASED):
        out.append(_command(notice, step, Action.RESTORE))
    if step not in SMS_STEPS:  # released: nobody has used that SIM in that phone for long
        return out
    if notice.sms and (step is not Step.RESOLVED or settings.resolved_sms):
        out.append(_sms(notice, step, settings, model))
    return out
