"""SMS texts per notice kind, step and language: each says what is wrong and what to do,
names the phone by the 15 digits *#06# shows, dates the deadline in the Persian calendar,
and writes Persian texts in Persian digits; an operator's templates are checked at start;
docs/messages.md shows what the renderer writes; a real worker sends them."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from enforcer.clock import MS_PER_DAY, MS_PER_S, ManualClock
from enforcer.db.notices import see
from enforcer.engine.decide import decide
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.config import ConfigError, NoticesConfig, load_config
from enforcer.engine.imei import CheckDigit, ImeiRules, parse_imei
from enforcer.engine.devicemodel import MODEL_CHARS
from enforcer.engine.noticemessages import (LANGUAGES, SMS_STEPS, STEPS, check_templates,
                                            full_imei, sms_text, step_messages)
from enforcer.engine.lifecycle import Notice, NoticeState, Step
from enforcer.engine.opening import notice_sightings
from enforcer.engine.subscriber import parse_imsi
from rules.policy import DEFAULT_POLICY, Policy, Scope, load_policy
from tests.kafkatools import produce, wait_for
from tests.test_cli import run
from tests.test_decide import BUYER, SINGLE, STRANGER, UNOWNED, UNREGISTERED, home_imsi, make_state
from tests.test_notice_lifecycle import T0, sent
from tests.test_worker import attach

DOC = Path(__file__).resolve().parents[1] / "docs" / "messages.md"
KINDS = ("ownership_transfer", "activation_required", "unregistered", "roamer_grace", "misuse",
         "counterfeit", "model_blocked")
PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"
# A concatenated SMS part holds 67 UCS-2 characters (Persian) or 153 of the GSM 7-bit
# alphabet (3GPP TS 23.038, TS 23.040 §9.2.3.24.1); three parts and two at most.
MAX_CHARS = {"fa": 3 * 67, "en": 2 * 153}
# 2026-12-23 10:00 in Tehran: 2 Dey 1405.
DEADLINE_MS = T0 + 30 * MS_PER_DAY
DEADLINE = {"fa": "۲ دی ۱۴۰۵", "en": "2 Dey 1405"}
KEY = 35209900176148  # its 15 digits: 352099001761481
# What each kind asks the subscriber to do (warning, reminder, cutoff), and what it must
# never say: a buyer is not asked to register, a clone victim neither.
TO_DO = {
    "ownership_transfer": {"fa": "فروشنده", "en": "seller"},
    "activation_required": {"fa": "کد فعال‌سازی", "en": "activation code"},
    "unregistered": {"fa": "گمرک", "en": "customs"},
    "roamer_grace": {"fa": "گمرک", "en": "customs"},
    "misuse": {"fa": "اپراتور", "en": "operator"},
    "counterfeit": {"fa": "اپراتور", "en": "operator"},
    "model_blocked": {"fa": "گوشی دیگری", "en": "another phone"},
}
NEVER = {
    "ownership_transfer": {"fa": ("ثبت کنید", "گمرک"), "en": ("register it", "customs")},
    "activation_required": {"fa": ("فروشنده", "گمرک"), "en": ("seller", "customs")},
    "unregistered": {"fa": ("فروشنده", "فعال"), "en": ("seller", "activat")},
    "roamer_grace": {"fa": ("فروشنده", "فعال"), "en": ("seller", "activat")},
    "misuse": {"fa": ("ثبت کنید", "فروشنده", "گمرک"), "en": ("register it", "seller", "customs")},
    "counterfeit": {"fa": ("ثبت کنید", "فروشنده", "گمرک"),
                    "en": ("register it", "seller", "customs")},
    "model_blocked": {"fa": ("ثبت کنید", "فروشنده", "گمرک"),
                      "en": ("register it", "seller", "customs")},
}
LIFTED = {"fa": "برداشته شد", "en": "lifted"}
# {model}: the longest a text is given (devicemodel.MODEL_CHARS), and the one docs/messages.md
# shows (352099001761481's TAC in the tests' TAC file).
LONG_MODEL = "X" * MODEL_CHARS
DOC_MODEL = "Samsung Galaxy S21"


@pytest.fixture(scope="module")
def settings() -> NoticesConfig:
    return load_config(environ={}).notices


def notice(kind: str = "ownership_transfer", key: int = KEY,
           deadline_ms: int = DEADLINE_MS) -> Notice:
    return Notice(17, kind, Scope.PAIR, key, 432111234567890, 989121234567, "rule",
                  NoticeState.WARNED, T0, deadline_ms, T0, (7, 1), 1, True, None)


def in_language(settings: NoticesConfig, language: str) -> NoticesConfig:
    return replace(settings, language=language)


def test_every_kind_of_the_shipped_policy_has_its_texts(settings: NoticesConfig) -> None:
    shipped = load_policy()
    assert {r.notice_kind for r in shipped.rules if r.notice_kind} == set(KINDS)
    assert set(settings.templates) == set(KINDS)
    check_templates(settings, shipped, shipped)


@pytest.mark.parametrize("model", [None, LONG_MODEL])
@pytest.mark.parametrize("language", ["fa", "en"])
@pytest.mark.parametrize("step", SMS_STEPS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_step_and_language_says_what_is_wrong_and_what_to_do(
        settings: NoticesConfig, kind: str, step: Step, language: str,
        model: str | None) -> None:
    text = sms_text(notice(kind), step, in_language(settings, language), model)
    imei = LANGUAGES[language].number("352099001761481")
    assert imei in text and imei + LANGUAGES[language].number("0") not in text
    assert LANGUAGES[language].number("*7777#") in text
    if step is Step.RESOLVED:
        assert LIFTED[language] in text
    else:
        assert TO_DO[kind][language] in text
    if step in (Step.WARNING, Step.REMINDER):
        assert DEADLINE[language] in text
    assert not any(phrase in text.lower() for phrase in NEVER[kind][language])
    assert len(text) <= MAX_CHARS[language]
    if language == "fa":
        assert not re.search(r"[0-9]", text)  # every number in Persian digits
        assert not re.search("[يك]", text)  # Persian yeh and kaf, not the Arabic letters
    else:
        assert text.isascii()


def test_a_release_is_the_restore_command_alone(settings: NoticesConfig) -> None:
    """A cut subject gone for notices.cut_idle_days: the provisioning side lifts the cutoff,
    and no SMS goes to a SIM nobody has used in that phone for a year."""
    released = replace(notice(), state=NoticeState.LAPSED)
    (command,) = step_messages(released, Step.RELEASED, settings, None)
    body = msgspec.json.decode(command.body)
    assert (command.stream, body["action"], body["imei"], body["imsi"]) == (
        "commands", "restore", f"{KEY:014d}", "432111234567890")
    assert command.idempotency_key.endswith("-released")


def test_the_imei_in_a_text_is_the_one_the_phone_shows(settings: NoticesConfig) -> None:
    text = sms_text(notice(key=49015420323751), Step.WARNING, in_language(settings, "en"), None)
    assert "490154203237518" in text  # GSMA TS.06's example IMEI, check digit 8


@given(st.integers(min_value=0, max_value=10**14 - 1))
def test_the_full_imei_is_the_key_and_its_check_digit(key: int) -> None:
    rules = ImeiRules((), frozenset())
    parsed = parse_imei(full_imei(key), rules)
    assert (parsed.imei_key, parsed.check_digit) == (key, CheckDigit.VALID)
    persian = parse_imei(LANGUAGES["fa"].number(full_imei(key)), rules)
    assert (persian.imei_key, persian.check_digit) == (key, CheckDigit.VALID)


@given(st.text(alphabet="0123456789*#", max_size=20))
def test_persian_digits_read_back_as_the_same_number(digits: str) -> None:
    persian = LANGUAGES["fa"].number(digits)
    assert all(c not in "0123456789" for c in persian)
    assert "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c
                   for c in persian) == digits


@pytest.mark.parametrize(("deadline", "fa", "en"), [
    # 00:30 in Tehran is still the day before in UTC: the local day is the one named.
    (datetime(2026, 12, 22, 21, 0, tzinfo=timezone.utc), "۲ دی ۱۴۰۵", "2 Dey 1405"),
    (datetime(2027, 3, 21, 8, 0, tzinfo=timezone.utc), "۱ فروردین ۱۴۰۶", "1 Farvardin 1406"),
    (datetime(2027, 3, 20, 8, 0, tzinfo=timezone.utc), "۲۹ اسفند ۱۴۰۵", "29 Esfand 1405"),
])
def test_the_deadline_is_its_local_day_in_the_persian_calendar(
        settings: NoticesConfig, deadline: datetime, fa: str, en: str) -> None:
    late = notice(deadline_ms=int(deadline.timestamp() * MS_PER_S))
    assert fa in sms_text(late, Step.WARNING, in_language(settings, "fa"), None)
    assert en in sms_text(late, Step.WARNING, in_language(settings, "en"), None)


def test_the_message_carries_the_text_and_the_key(settings: NoticesConfig) -> None:
    (message,) = step_messages(notice("misuse"), Step.WARNING, settings, None)
    assert message.stream == "notifications" and message.key == str(KEY).encode()
    assert "۳۵۲۰۹۹۰۰۱۷۶۱۴۸۱" in message.body.decode()


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> NoticesConfig:
    path = tmp_path / "eir.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=environ or {}).notices


def policy_with(tmp_path: Path, kind: str, sms: bool = True) -> Policy:
    """The shipped policy with the unregistered rule's notices of another kind."""
    text = DEFAULT_POLICY.read_text().replace('notice_kind = "unregistered"',
                                              f'notice_kind = "{kind}"\nsms = {str(sms).lower()}')
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return load_policy(path)


def test_an_operator_overrides_one_text_and_keeps_the_others(tmp_path: Path,
                                                             settings: NoticesConfig) -> None:
    mine = load(tmp_path, '[notices.templates.misuse]\nwarning.fa = "شناسه {imei} جعلی است؛'
                          ' تا {deadline} با {code} تماس بگیرید."\n')
    check_templates(mine, load_policy(), load_policy())
    assert sms_text(notice("misuse"), Step.WARNING, mine, None) == (
        "شناسه ۳۵۲۰۹۹۰۰۱۷۶۱۴۸۱ جعلی است؛ تا ۲ دی ۱۴۰۵ با *۷۷۷۷# تماس بگیرید.")
    shipped = settings.templates["misuse"]["warning"]["en"]
    assert mine.templates["misuse"]["warning"]["en"] == shipped
    assert mine.templates["unregistered"] == settings.templates["unregistered"]


def test_a_kind_of_the_operators_own_policy_takes_its_own_texts(tmp_path: Path) -> None:
    steps = "".join(f'{s}.fa = "{s}: گوشی {{imei}} تا {{deadline}}"\n' for s in STEPS)
    mine = load(tmp_path, f"[notices.templates.court_hold]\n{steps}")
    check_templates(mine, policy_with(tmp_path, "court_hold"), load_policy())
    assert sms_text(notice("court_hold"), Step.CUTOFF, mine, None) == (
        "cutoff: گوشی ۳۵۲۰۹۹۰۰۱۷۶۱۴۸۱ تا ۲ دی ۱۴۰۵")


@pytest.mark.parametrize(("text", "message"), [
    ("[notices.templates.ownership-transfer]\nwarning.fa = 'x'\n",
     "'notices.templates.ownership-transfer': no rule of the policy opens"),
    ("[notices.templates.misuse]\nwarn.fa = 'x'\n",
     r"'notices.templates.misuse.warn': unknown step \(one of warning, reminder, cutoff, "
     "resolved"),
    ("[notices.templates.misuse]\nwarning.ar = 'x'\n",
     r"'notices.templates.misuse.warning.ar': unknown language \(one of fa, en"),
    ("[notices.templates.misuse]\nwarning.en = 'IMEI {imei} of {imsi}'\n",
     "'notices.templates.misuse.warning.en': unknown placeholder '{imsi}'"),
    ("[notices.templates.misuse]\nwarning.en = 'IMEI {0}'\n",
     "'notices.templates.misuse.warning.en': unknown placeholder '{0}'"),
    ("[notices.templates.misuse]\nwarning.en = 'IMEI {imei!r}'\n",
     "'notices.templates.misuse.warning.en': placeholder '{imei}' takes no conversion"),
    ("[notices.templates.misuse]\nwarning.en = 'IMEI {imei:>20}'\n",
     "'notices.templates.misuse.warning.en': placeholder '{imei}' takes no conversion"),
    ("[notices.templates.misuse]\nwarning.en = 'IMEI {imei'\n",
     r"'notices.templates.misuse.warning.en': .* \(a literal brace is written twice"),
    ("[notices]\nlanguage = 'de'\n", "'notices.language': 'de' is not one of fa, en"),
])
def test_templates_that_cannot_be_rendered_are_refused_naming_the_key(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_templates(load(tmp_path, text), load_policy(), load_policy())


def test_a_text_of_the_wrong_type_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'notices.templates.misuse.warning.fa': must be text"):
        load(tmp_path, "[notices.templates.misuse]\nwarning.fa = 3\n")
    with pytest.raises(ConfigError, match="'notices.templates.misuse.warning': must be a table"):
        load(tmp_path, "[notices.templates.misuse]\nwarning = 'x'\n")


def test_a_kind_the_policy_sends_sms_for_needs_every_step_in_the_language(
        tmp_path: Path) -> None:
    partial = load(tmp_path, "[notices.templates.court_hold]\nwarning.fa = '{imei}'\n")
    with pytest.raises(ConfigError, match="'notices.templates.court_hold.reminder.fa' is "
                                          "missing: the policy sends SMS"):
        check_templates(partial, policy_with(tmp_path, "court_hold"), load_policy())
    check_templates(partial, policy_with(tmp_path, "court_hold", sms=False), load_policy())
    english = load(tmp_path, "[notices.templates.court_hold]\nwarning.fa = '{imei}'\n",
                   {"EIR_NOTICES__LANGUAGE": "en"})
    with pytest.raises(ConfigError, match="'notices.templates.court_hold.warning.en' is "
                                          "missing"):
        check_templates(english, policy_with(tmp_path, "court_hold"), load_policy())


def test_live_notices_of_a_kind_the_policy_dropped_still_need_their_texts(
        settings: NoticesConfig) -> None:
    """Their last steps (the cutoff, or the resolved SMS when the sweep closes them under the
    new policy) still go out: a missing text would stop the sweep on them, round after
    round."""
    with pytest.raises(ConfigError, match="'notices.templates.court_hold.warning.fa' is "
                                          "missing: live notices that send SMS are"):
        check_templates(settings, load_policy(), load_policy(), frozenset({"court_hold"}))
    check_templates(settings, load_policy(), load_policy(), frozenset({"misuse"}))


# The worker binds its HTTP port before it checks the texts: not the default one, which
# another eir-enforcer on the host (a demo) may hold.
ANY_PORT = {"EIR_HTTP__PORT": "0"}


def test_a_worker_stops_at_start_while_notices_of_a_kind_without_texts_are_live(
        tmp_path: Path, dsn, rules: ImeiRules) -> None:
    """An operator's own kind, taken out of the policy with its texts while some of its
    notices are live: the worker says which text it lacks instead of starting."""
    own = policy_with(tmp_path, "court_hold")
    batch = AttachBatch.from_events([AttachEvent(parse_imei(full_imei(UNREGISTERED), rules),
                                                 parse_imsi(home_imsi(STRANGER)), STRANGER, T0)])
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert see(conn, notice_sightings(batch, decide(batch, make_state(own))),
                   own.rules) == {"court_hold": 1}
    result = run("run", check=False, env={**os.environ, "EIR_POSTGRES__DSN": dsn, **ANY_PORT})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert ("configuration key 'notices.templates.court_hold.warning.fa' is missing: live "
            "notices that send SMS are for notices of kind 'court_hold'") in line


def test_a_worker_with_a_bad_template_stops_at_start_naming_it(tmp_path: Path, dsn) -> None:
    path = tmp_path / "eir.toml"
    path.write_text("[notices.templates.misuse]\nwarning.en = 'IMEI {imsi}'\n")
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn, **ANY_PORT}
    for command in (["run"], ["notices", "cancel", "1", "--reason", "x"]):
        result = run("--config", str(path), *command, check=False, env=env)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert ("configuration key 'notices.templates.misuse.warning.en': unknown placeholder"
                " '{imsi}' (placeholders: {imei}, {deadline}, {deadline_gregorian}, {code},"
                " {model})" in line)


def doc_block(settings: NoticesConfig) -> str:
    """docs/messages.md's texts: each kind's warning in each language."""
    out = []
    for kind in KINDS:
        out.append(f"- `{kind}`")
        for language in LANGUAGES:
            text = sms_text(notice(kind), Step.WARNING, in_language(settings, language),
                            DOC_MODEL)
            out.append(f"  - {language}: {text}")
    return "\n".join(out)


def test_the_documented_texts_are_the_rendered_ones(settings: NoticesConfig) -> None:
    documented = re.search(r"<!-- sms-texts -->\n(.*?)\n<!-- /sms-texts -->", DOC.read_text(),
                           re.DOTALL)
    assert documented is not None, "docs/messages.md lost its sms-texts markers"
    expected = doc_block(settings)
    assert documented.group(1) == expected, f"docs/messages.md should read:\n{expected}"


def test_a_real_worker_sends_each_kind_its_own_text(env, worker) -> None:
    """The buyer of a used phone, the holder of a phone never activated and of one never
    registered each get the text of their case, in Persian, from the worker's sweep."""
    worker(ManualClock(T0))
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, BUYER, T0), attach(UNOWNED, STRANGER, T0),
             attach(UNREGISTERED, STRANGER + 1, T0)])
    wait_for(lambda: len(sent(env, "notifications")) == 3)
    texts = {m["kind"]: (m["imei"], m["text"]) for m in sent(env, "notifications")}
    fa = LANGUAGES["fa"]
    for kind, key in (("ownership_transfer", SINGLE), ("activation_required", UNOWNED),
                      ("unregistered", UNREGISTERED)):
        imei, text = texts[kind]
        assert imei == f"{key:014d}"
        assert fa.number(full_imei(key)) in text
        assert DEADLINE["fa"] in text and TO_DO[kind]["fa"] in text
        assert not re.search(r"[0-9]", text)


def test_a_text_names_the_phones_model_or_says_it_is_not_on_record(
        settings: NoticesConfig) -> None:
    for language, lang in LANGUAGES.items():
        mine = in_language(settings, language)
        assert "Nokia 105" in sms_text(notice("model_blocked"), Step.WARNING, mine, "Nokia 105")
        assert lang.unknown_model in sms_text(notice("model_blocked"), Step.WARNING, mine, None)
