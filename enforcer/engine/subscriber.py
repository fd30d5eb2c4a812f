"""SIM identities: IMSI (the subscription) and MSISDN (its phone number), and masking them
for logs and listings."""

from __future__ import annotations

from typing import Any, NamedTuple

MCC_DIGITS = 3
# 3GPP TS 29.571 §5.3.2 Supi: imsi- and 5-15 digits (TS 23.003 §2.2: at most 15). Operators'
# are 14-15 (MCC 3, MNC 2-3, MSIN), but a 5G core may send any of these: the stream takes
# what serve takes.
IMSI_MIN_DIGITS, IMSI_MAX_DIGITS = 5, 15
# E.164 allows at most 15 digits; anything under 7 is no subscriber number.
MSISDN_MIN_DIGITS, MSISDN_MAX_DIGITS = 7, 15
MASK_KEEP_HEAD, MASK_KEEP_TAIL = 5, 2
PEI_STYLE_PREFIXES = {"imsi": "imsi-", "msisdn": "msisdn-"}


class IdentityError(ValueError):
    """An IMSI or MSISDN that is not one; the message says which and why."""


class Imsi(NamedTuple):
    digits: str

    @property
    def value(self) -> int:
        return int(self.digits)

    @property
    def mcc(self) -> int:
        return int(self.digits[:MCC_DIGITS])


def _digits(value: Any, what: str, prefix: str) -> str:
    if type(value) is str:  # the common cases first: bare digits, or after imsi-/msisdn-
        text = value[len(prefix):] if value.startswith(prefix) else value
        if text.isdigit() and text.isascii():
            return text
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise IdentityError(f"{what} must be a string of digits, got {type(value).__name__}")
    text = str(value).strip()
    if text.lower().startswith(prefix):
        text = text[len(prefix):]
    if not (text.isascii() and text.isdigit()):
        raise IdentityError(f"{what} must contain only digits")
    return text


def parse_imsi(value: Any) -> Imsi:
    """An IMSI as operator feeds write it (`enforcer.engine.identity.Mode.LENIENT`): digits as a
    string or a number, or `imsi-` in any case, with whitespace around. Raises IdentityError."""
    return imsi_from_digits(_digits(value, "IMSI", PEI_STYLE_PREFIXES["imsi"]))


def imsi_from_digits(digits: str) -> Imsi:
    """ASCII digits as an IMSI, whichever form they came in; raises IdentityError."""
    if not IMSI_MIN_DIGITS <= len(digits) <= IMSI_MAX_DIGITS:
        raise IdentityError(
            f"IMSI must have {IMSI_MIN_DIGITS}-{IMSI_MAX_DIGITS} digits, got {len(digits)}")
    return Imsi(digits)


def parse_msisdn(value: Any) -> int:
    """An MSISDN as operator feeds write it (`enforcer.engine.identity.Mode.LENIENT`): digits as a
    string or a number, after `+` or `msisdn-` in any case, with whitespace around. Raises
    IdentityError."""
    text = value.strip().removeprefix("+") if type(value) is str and not value.isdigit() \
        else value
    return msisdn_from_digits(_digits(text, "MSISDN", PEI_STYLE_PREFIXES["msisdn"]))


def msisdn_from_digits(digits: str) -> int:
    """ASCII digits as an MSISDN: an international number (ITU-T E.164: at most 15
    digits, a country code first, so never a leading 0). Raises IdentityError."""
    if not MSISDN_MIN_DIGITS <= len(digits) <= MSISDN_MAX_DIGITS:
        raise IdentityError(
            f"MSISDN must have {MSISDN_MIN_DIGITS}-{MSISDN_MAX_DIGITS} digits, got {len(digits)}")
    if digits[0] == "0":
        raise IdentityError("MSISDN must be in international form (no leading 0)")
    return int(digits)


def mask(number: int | str) -> str:
    """98912*****67: enough to tell numbers apart in a log, not enough to call one."""
    text = str(number)
    hidden = len(text) - MASK_KEEP_HEAD - MASK_KEEP_TAIL
    if hidden <= 0:
        return "*" * len(text)
    return text[:MASK_KEEP_HEAD] + "*" * hidden + text[-MASK_KEEP_TAIL:]
