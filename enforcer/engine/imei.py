"""IMEI identity: every form a network or a registry file sends, reduced to the 14-digit key.

The parser never raises. A value that cannot yield a key says why in `problems`; a value
that yields a key but is not a real device identity (all zeros, a test TAC, a placeholder
burnt into cheap basebands) keeps its key and is flagged `malformed` with the reason.
A wrong Luhn digit is a finding (`check_digit = mismatch`), never a malformation: networks
do not reliably send the check digit. An IMEI given as a number (a JSON number) is read only
with 15 or 16 digits: a number holds no leading zero, so one of 14 digits or fewer may be a
key or an IMEI of TAC 0… that lost its zero (`number_too_short`).
"""

from __future__ import annotations

import numbers
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # the configuration only names what it holds; the engine reads no file
    from enforcer.config import Config

KEY_DIGITS = 14
TAC_DIGITS = 8
SNR_SPACE = 10**(KEY_DIGITS - TAC_DIGITS)  # serial numbers under one TAC
IMEI_DIGITS = 15
IMEISV_DIGITS = 16
# 3GPP TS 29.571 Pei: "imei-" and 15 digits, or "imeisv-" and 16.
PEI_FORMS = {"imei-": 15, "imeisv-": 16}
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# The smallest number read as an IMEI: 15 digits, an IMEI whose TAC does not begin with 0.
SMALLEST_NUMBER = 10**KEY_DIGITS
# 3GPP TS 23.003 §6.2.1: the check digit is sent as a spare 0 over the air.
SPARE_CHECK_DIGIT = "0"


class CheckDigit(StrEnum):
    VALID = "valid"
    MISMATCH = "mismatch"
    ABSENT = "absent"


class Problem(StrEnum):
    EMPTY = "empty"
    NON_DIGIT = "non_digit"
    HEX = "hex"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    ALL_ZEROS = "all_zeros"
    REPEATED_DIGIT = "repeated_digit"
    TEST_TAC = "test_tac"
    PLACEHOLDER = "placeholder"
    PEI_FORM = "pei_form"  # imei-/imeisv- followed by the wrong number of digits
    NUMBER_TOO_SHORT = "number_too_short"  # a number of 14 digits or fewer: see WHY


# Why a problem is one, where its name alone does not say (a dead letter's detail).
WHY = {Problem.NUMBER_TOO_SHORT: "a JSON number cannot carry a leading zero, so an IMEI sent "
       "as a number needs 15 or 16 digits; send IMEIs as strings"}


@dataclass(frozen=True, slots=True)
class ImeiRules:
    """What counts as a test TAC or a placeholder IMEI; loaded from configuration."""

    test_tac_prefixes: tuple[str, ...]
    placeholder_keys: frozenset[str]

    @classmethod
    def from_config(cls, test_tac_prefixes: list[str], placeholders: list[str]) -> ImeiRules:
        return cls(
            test_tac_prefixes=tuple(test_tac_prefixes),
            placeholder_keys=frozenset(p.strip()[:KEY_DIGITS] for p in placeholders),
        )


class ImeiParse(NamedTuple):
    """One parsed IMEI. A NamedTuple, not a dataclass: it is built once per attach event,
    and a frozen dataclass costs several times as much to construct."""

    input: str
    key: str | None
    tac: str | None
    snr: str | None
    svn: str | None
    check_digit: CheckDigit
    problems: tuple[Problem, ...] = ()

    @property
    def malformed(self) -> bool:
        return bool(self.problems)

    @property
    def imei_key(self) -> int | None:
        return None if self.key is None else int(self.key)

    def as_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "key": self.key,
            "tac": self.tac,
            "snr": self.snr,
            "svn": self.svn,
            "check_digit": self.check_digit.value,
            "malformed": self.malformed,
            "problems": [p.value for p in self.problems],
        }


def mistyped(imei: ImeiParse) -> str | None:
    """Why an IMEI a person typed to ask about a phone (the buyer's status query) is not
    answered: its check digit is not the one its other 14 digits give (3GPP TS 23.003
    Annex B, Luhn), as any one digit mistyped makes it, and the answer would be about another
    phone. None when it checks out, has no check digit (14 digits, an IMEISV) or has the
    spare 0 a network sends. Networks' IMEIs are never held to it (`CheckDigit`)."""
    if imei.check_digit is not CheckDigit.MISMATCH or imei.key is None:
        return None
    return (f"its check digit is not the {luhn_digit(imei.key)} its first {KEY_DIGITS} digits "
            "give: a digit mistyped?")


# Luhn doubles every second digit from the left; these are the doubled digits' digit sums.
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_ZERO = ord("0")


def luhn_digit(digits14: str) -> str:
    """The IMEI check digit over TAC+SNR (ASCII digits)."""
    raw = digits14.encode()
    plain, doubled = raw[0::2], raw[1::2].translate(_DOUBLED)
    total = sum(plain) - _ZERO * len(plain) + sum(doubled)
    return str(-total % 10)


def _ascii_digits(text: str) -> str:
    # Registry files from Iran may carry Persian or Arabic-Indic digits; they are digits.
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return value if isinstance(value, str) else repr(value)


def _failure(raw: str, problem: Problem) -> ImeiParse:
    return ImeiParse(raw, None, None, None, None, CheckDigit.ABSENT, (problem,))


def parse_imei(value: Any, rules: ImeiRules) -> ImeiParse:
    """An IMEI field as the stream, files and command line give it (text, bytes or an
    integer: docs/messages.md, "Identities"), reduced to its 14-digit key. Never raises: a
    value with no key, or no real device's, says why in `problems`."""
    if type(value) is str and KEY_DIGITS <= len(value) <= IMEISV_DIGITS \
            and value.isdigit() and value.isascii():
        return _from_digits(value, value, rules, None)
    raw = _as_text(value)
    if isinstance(value, numbers.Integral) and 0 <= value < SMALLEST_NUMBER:
        return _failure(raw, Problem.NUMBER_TOO_SHORT)
    text = raw.strip()
    lowered = text.lower()
    pei_digits = None
    for prefix, digits in PEI_FORMS.items():
        if lowered.startswith(prefix):
            text, pei_digits = text[len(prefix):], digits
            break
    if not text:
        return _failure(raw, Problem.EMPTY)
    digits = _ascii_digits(text)
    if not (digits.isascii() and digits.isdigit()):
        hexlike = all(c in HEX_DIGITS for c in digits)
        return _failure(raw, Problem.HEX if hexlike else Problem.NON_DIGIT)
    if len(digits) < KEY_DIGITS:
        return _failure(raw, Problem.TOO_SHORT)
    if len(digits) > IMEISV_DIGITS:
        return _failure(raw, Problem.TOO_LONG)

    return _from_digits(raw, digits, rules, pei_digits)


def _from_digits(raw: str, digits: str, rules: ImeiRules, pei_digits: int | None) -> ImeiParse:
    """14 to 16 ASCII digits: the key, the check digit or SVN, and the key's problems."""
    key = digits[:KEY_DIGITS]
    svn = None
    check = CheckDigit.ABSENT
    if len(digits) == IMEI_DIGITS:
        sent = digits[KEY_DIGITS]
        if sent == luhn_digit(key):
            check = CheckDigit.VALID
        elif sent != SPARE_CHECK_DIGIT:
            check = CheckDigit.MISMATCH
    elif len(digits) == IMEISV_DIGITS:
        svn = digits[KEY_DIGITS:]
    problems = key_problems(key, rules)
    if pei_digits is not None and len(digits) != pei_digits:
        problems += (Problem.PEI_FORM,)
    return ImeiParse(raw, key, key[:TAC_DIGITS], key[TAC_DIGITS:], svn, check, problems)


def key_problems(key: str, rules: ImeiRules) -> tuple[Problem, ...]:
    """What makes a 14-digit key no real device's (none: a device's)."""
    problems: list[Problem] = []
    if key.count(key[0]) == KEY_DIGITS:
        problems.append(Problem.ALL_ZEROS if key[0] == "0" else Problem.REPEATED_DIGIT)
    if key.startswith(rules.test_tac_prefixes):
        problems.append(Problem.TEST_TAC)
    if key in rules.placeholder_keys:
        problems.append(Problem.PLACEHOLDER)
    return tuple(problems)


def imei_rules(config: Config) -> ImeiRules:
    """The rules `[imei]` of the configuration sets."""
    return ImeiRules.from_config(config.imei.test_tac_prefixes, config.imei.placeholders)
