"""One reader of identity forms: a PEI's IMEI, a SUPI's IMSI and a GPSI's MSISDN, in a strict
mode or a lenient one, chosen where each is used (docs/messages.md, "Identities").

- STRICT reads 3GPP TS 29.571 §5.3.2's Pei, Supi and Gpsi as a 5G core writes them, exactly:
  `imei-` and 15 digits, `imeisv-` and 16, `imsi-` and 5 to 15, `msisdn-` and 5 to 15, in
  lower case, nothing around them. The other forms those patterns name are valid but name no
  IMEI, IMSI or MSISDN (a wireline PEI `mac-…`/`eui-…`, a SUPI `nai-…`/`gci-…`/`gli-…`, a GPSI
  `extid-…@…`, and a GPSI `msisdn-` whose digits are no international number): OtherForm.
  Anything else is refused: only the patterns' catch-all `.+` admits it, which is there so
  that a later release's forms pass a schema check, not so that a receiver guesses at them.
  `eir-enforcer serve` (N5g-eir) reads this way.
- LENIENT reads what operator feeds write: `enforcer.engine.imei.parse_imei` (bare digits or a
  number, `imei-`/`imeisv-` in any case, whitespace, Persian digits; never refused, a
  malformed IMEI is decided), `enforcer.engine.subscriber.parse_imsi` and `parse_msisdn` (digits or
  a number, `imsi-`/`msisdn-` in any case, `+`, whitespace). The stream (attach and registry
  events), the registry's files, the command line and the status query read this way.

The modes differ in the forms they take, never in which digits make an identity: both read
digits through the same rules (`imsi_from_digits`, `msisdn_from_digits`, `parse_imei`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from enforcer.engine.imei import IMEI_DIGITS, IMEISV_DIGITS, ImeiParse, ImeiRules, parse_imei
from enforcer.engine.subscriber import (IMSI_MAX_DIGITS, IMSI_MIN_DIGITS, IdentityError, Imsi,
                                        imsi_from_digits, msisdn_from_digits, parse_imsi,
                                        parse_msisdn)

# TS 29.571 §5.3.2: an MSISDN in a Gpsi has the same 5-15 digits as an IMSI in a Supi.
GPSI_MIN_DIGITS, GPSI_MAX_DIGITS = 5, 15
PEI = re.compile(rf"(?:imei-[0-9]{{{IMEI_DIGITS}}}|imeisv-[0-9]{{{IMEISV_DIGITS}}})\Z")
WIRELINE_PEI = re.compile(
    r"(?:mac(?:-[0-9a-fA-F]{2}){6}(?:-untrusted)?|eui(?:-[0-9a-fA-F]{2}){8})\Z")
SUPI = re.compile(rf"imsi-([0-9]{{{IMSI_MIN_DIGITS},{IMSI_MAX_DIGITS}}})\Z")
OTHER_SUPI = re.compile(r"(?:nai|gci|gli)-.+\Z")
GPSI = re.compile(rf"msisdn-([0-9]{{{GPSI_MIN_DIGITS},{GPSI_MAX_DIGITS}}})\Z")
OTHER_GPSI = re.compile(r"extid-[^@]+@[^@]+\Z")


class Mode(StrEnum):
    STRICT = "strict"  # TS 29.571 §5.3.2, as a 5G core writes it: serve
    LENIENT = "lenient"  # as operator feeds write it: the stream, files, CLI, status query


class OtherForm(IdentityError):
    """A PEI, SUPI or GPSI that TS 29.571 allows but that names no IMEI, IMSI or MSISDN: no
    list holds it, so a check goes on without it (strict mode only)."""


def read_imei(value: Any, mode: Mode, rules: ImeiRules) -> ImeiParse:
    """A PEI's IMEI (strict) or an IMEI field (lenient), parsed: key, check digit, problems.
    Strict raises OtherForm for a wireline PEI and IdentityError for what is no Pei; lenient
    never raises (a value with no key is `malformed`, with its problems)."""
    if mode is Mode.STRICT:
        if not (isinstance(value, str) and PEI.match(value)):
            if isinstance(value, str) and WIRELINE_PEI.match(value):
                raise OtherForm("a wireline PEI (mac-, eui-) names no IMEI")
            raise IdentityError(
                f"pei must be imei-<{IMEI_DIGITS} digits>, imeisv-<{IMEISV_DIGITS} digits>, "
                "mac-… or eui-…")
    return parse_imei(value, rules)


def read_imsi(value: Any, mode: Mode) -> Imsi:
    """A SUPI's IMSI (strict) or an IMSI field (lenient). Raises OtherForm for a SUPI that is
    a NAI, GCI or GLI, and IdentityError for what is no IMSI."""
    if mode is Mode.LENIENT:
        return parse_imsi(value)
    if isinstance(value, str):
        found = SUPI.match(value)
        if found is not None:
            return imsi_from_digits(found[1])
        if OTHER_SUPI.match(value):
            raise OtherForm("a SUPI that is a NAI, GCI or GLI names no IMSI")
    raise IdentityError(f"supi must be imsi-<{IMSI_MIN_DIGITS}-{IMSI_MAX_DIGITS} digits>, "
                        "nai-…, gci-… or gli-…")


def read_msisdn(value: Any, mode: Mode) -> int:
    """A GPSI's MSISDN (strict) or an MSISDN field (lenient). Raises OtherForm for a GPSI
    that is an external identifier, or whose digits are no international number (the
    pattern allows a leading 0 and 5 digits; E.164 does not), and IdentityError for what is
    no GPSI (strict) or no MSISDN (lenient)."""
    if mode is Mode.LENIENT:
        return parse_msisdn(value)
    if isinstance(value, str):
        found = GPSI.match(value)
        if found is not None:
            try:
                return msisdn_from_digits(found[1])
            except IdentityError as exc:
                raise OtherForm(f"gpsi names no subscriber number: {exc}") from exc
        if OTHER_GPSI.match(value):
            raise OtherForm("a GPSI that is an external identifier names no MSISDN")
    raise IdentityError(f"gpsi must be msisdn-<{GPSI_MIN_DIGITS}-{GPSI_MAX_DIGITS} digits> "
                        "or extid-<id>@<domain>")
