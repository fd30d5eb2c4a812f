"""The command line's option types: each reads a value the user typed, or says in one line
what is wrong with it and what was expected (argparse prints it as `eir-enforcer <command>:
argument --option: …`, and exits 2). Pure: no configuration, no files but the one named."""

from __future__ import annotations

import argparse
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, NoReturn, TypeVar

from enforcer.clock import parse_time_ms
from enforcer.engine.identity import Mode, read_imei, read_imsi, read_msisdn
from enforcer.engine.imei import ImeiParse, ImeiRules, mistyped
from enforcer.engine.subscriber import Imsi

EXIT_USAGE = 2

BIGINT_MAX = 2**63 - 1  # notice ids are PostgreSQL bigints
# The times the command line takes: what a PostgreSQL timestamptz and a Python datetime hold.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FIRST_MS, LAST_MS = ((moment.replace(tzinfo=timezone.utc) - EPOCH) // timedelta(milliseconds=1)
                     for moment in (datetime.min, datetime.max))
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Which IMEIs have a key does not depend on configured test TACs or placeholders.
ANY_RULES = ImeiRules.from_config([], [])
T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line, naming the option and what it expects,
    and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def value_type(read: Callable[[str], T]) -> Callable[[str], T]:
    """An option type from a reader that raises ValueError saying what is wrong."""
    def convert(text: str) -> T:
        try:
            return read(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    convert.__name__ = read.__name__
    return convert


def _time_ms(text: str) -> int:
    """A time as the topics read it (enforcer.clock.parse_time_ms), within what the database
    and the JSON output can write."""
    ms = parse_time_ms(text)
    if not FIRST_MS <= ms <= LAST_MS:
        raise ValueError(f"{text!r} is not within years 0001-9999")
    return ms


def _imsi(text: str) -> Imsi:
    return read_imsi(text, Mode.LENIENT)


def _msisdn(text: str) -> int:
    return read_msisdn(text, Mode.LENIENT)


def _keyed_imei(text: str) -> ImeiParse:
    """An IMEI a command looks up, parsed: one with no key can be in no table."""
    imei = read_imei(text, Mode.LENIENT, ANY_RULES)
    if imei.imei_key is None:
        raise ValueError(f"{text!r} is not an IMEI ({', '.join(p.value for p in imei.problems)})"
                         "; give 14-16 digits")
    return imei


def _imei_key(text: str) -> int:
    """The key of an IMEI a command looks up."""
    return _keyed_imei(text).imei_key


def _asked_imei_key(text: str) -> int:
    """The key of an IMEI a person typed to ask about a phone: as `_imei_key`, and refused
    when its check digit does not match (`mistyped`: the answer would be another phone's)."""
    imei = _keyed_imei(text)
    why = mistyped(imei)
    if why is not None:
        raise ValueError(f"{text!r}: {why}")
    return imei.imei_key


def whole_number_type(lowest: int, highest: int = BIGINT_MAX) -> Callable[[str], int]:
    """Whole numbers from `lowest` to `highest` (a bigint's largest by default)."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise ValueError(f"{value} is less than {lowest}")
        if value > highest:
            raise ValueError(f"{value} is more than {highest}")
        return value
    return value_type(whole_number)


def number_type(lowest: float, highest: float, above_lowest: bool) -> Callable[[str], float]:
    """Finite numbers up to `highest` (math.inf: no bound), from `lowest` (above it, if
    `above_lowest`)."""
    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text} is not a finite number")
        if not (value > lowest if above_lowest else value >= lowest) or value > highest:
            if math.isinf(highest):  # "(0, inf]" would take what is refused just above
                raise ValueError(f"{text} is not {'above' if above_lowest else 'at least'} "
                                 f"{lowest:g}")
            raise ValueError(f"{text} is not within {'(' if above_lowest else '['}{lowest:g}, "
                             f"{highest:g}]")
        return value
    return value_type(number)


def log_level(text: str) -> str:
    """A logging level's name, in any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def existing_file(text: str) -> Path:
    """A file that is there (not a directory) and may be opened for reading: read later, it
    would fail half-way. What its content holds is the reader's to judge."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text}")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from exc
    return path


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("a blank value says nothing; give some text")
    return text


# Times and identities are read as the stream reads them: docs/messages.md, "Times" and
# "Identities" (the lenient mode).
TIME = value_type(_time_ms)
IMSI = value_type(_imsi)
MSISDN = value_type(_msisdn)
IMEI_KEY = value_type(_imei_key)
ASKED_IMEI_KEY = value_type(_asked_imei_key)
POSITIVE = whole_number_type(1)
NON_NEGATIVE = whole_number_type(0)
NONBLANK = value_type(_nonblank)
