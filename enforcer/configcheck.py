"""What a configuration value may be: the constraints enforcer/config.py declares beside each
key's type (typing.Annotated metadata), checked when the configuration is loaded. Each says
what it expects in words, so that a bad value is one line naming the key, what was expected
and what was given: `must be above 0, not -5`."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


# The largest integer shown as one in a message; past it a float is shown as Python writes it.
WHOLE_SHOWN_UP_TO = 1e15
PORT_MAX = 65535
CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
# libpq's parameters with a fixed set of values, and those that are whole numbers (libpq's
# manual, "Parameter Key Words", PostgreSQL 18): it checks them only when it connects.
DSN_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby",
                             "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
}
DSN_WHOLE_NUMBERS = frozenset({"keepalives", "keepalives_idle", "keepalives_interval",
                               "keepalives_count", "tcp_user_timeout"})
DSN_WHOLE_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)  # as libpq's strtol reads one
# RFC 1123 host names, dot-separated labels of letters, digits and inner hyphens.
HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")


def shown(value: Any) -> str:
    """A value as a message quotes it: numbers as written (-5, not -5.0), true and false as
    TOML writes them, text quoted."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() \
            and abs(value) < WHOLE_SHOWN_UP_TO:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class Range:
    """A finite number from `lowest` (or above it, when `above`) to `highest`."""

    lowest: float
    highest: float = math.inf
    above: bool = False  # `lowest` itself is too low

    def complaint(self, value: float) -> str | None:
        if math.isnan(value):
            return f"must be a number, not {shown(value)}"
        if value < self.lowest or (self.above and value == self.lowest):
            return (f"must be {'above' if self.above else 'at least'} {shown(self.lowest)}, "
                    f"not {shown(value)}")
        if value > self.highest or math.isinf(value):
            return f"must be at most {shown(self.highest)}, not {shown(value)}"
        return None


@dataclass(frozen=True)
class Form:
    """Text that `accepts` (it returns False, or raises ValueError saying why), described as
    `what`. A secret's value is never quoted back."""

    what: str
    accepts: Callable[[Any], bool]
    secret: bool = False

    def complaint(self, value: Any) -> str | None:
        try:
            if self.accepts(value):
                return None
            why = ""
        except ValueError as exc:
            why = " ".join(str(exc).split())  # one line, whatever the library wrote
        if self.secret:
            return f"must be {self.what}{': ' + why if why else ''}"
        return f"must be {self.what}, not {shown(value)}{f' ({why})' if why else ''}"


def matching(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(pattern)
    return lambda text: compiled.fullmatch(text) is not None


def cron_fields(expression: str) -> dict[str, str]:
    """A crontab line as APScheduler's CronTrigger takes it: five fields, or six with seconds
    first. Raises ValueError."""
    fields = expression.split()
    names = CRON_FIELDS if len(fields) == len(CRON_FIELDS) else ("second", *CRON_FIELDS)
    if len(fields) != len(names):
        raise ValueError("needs 5 fields (or 6, seconds first)")
    return dict(zip(names, fields))


def _cron(expression: str) -> bool:
    """Empty (the job is off), or an expression APScheduler parses."""
    # Imported here: the configuration is read by the pure engine too, which must not carry
    # the scheduler or the database client along (tests/test_architecture.py).
    from apscheduler.triggers.cron import CronTrigger

    if expression:
        CronTrigger(timezone="UTC", **cron_fields(expression))
    return True


def _time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _dsn(text: str) -> bool:
    """libpq's parse of the string, then the values libpq itself checks only when it
    connects (PostgreSQL's libpq manual, "Parameter Key Words"). Nothing the operator wrote
    is quoted back: a word libpq could not read may be a password."""
    from psycopg import ProgrammingError  # as the scheduler in _cron
    from psycopg.conninfo import conninfo_to_dict, timeout_from_conninfo

    try:
        params = conninfo_to_dict(text)
    except ProgrammingError as exc:
        # libpq quotes what it read (a word, an option's name, a token): cut there, since a
        # quote inside a password would put the quoting out of step.
        why = str(exc).split('"', 1)[0].rstrip(": ")
        raise ValueError('missing "=" after a word' if why == "missing" else why) from None
    try:
        timeout_from_conninfo(params)  # psycopg reads connect_timeout itself, not libpq
    except ProgrammingError:
        raise ValueError("connect_timeout must be a number of seconds") from None
    for name, value in params.items():
        if name in DSN_CHOICES and value not in DSN_CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(DSN_CHOICES[name])}")
        if name in DSN_WHOLE_NUMBERS and not DSN_WHOLE_NUMBER.fullmatch(str(value)):
            raise ValueError(f"{name} must be a whole number")
        if name == "port" and not all(_port_or_empty(p) for p in str(value).split(",")):
            raise ValueError(f"port must be 1 to {PORT_MAX} (several: separated by commas)")
    return True


def _port_or_empty(text: str) -> bool:
    return not text.strip() or (DSN_WHOLE_NUMBER.fullmatch(text) is not None
                                and 1 <= int(text) <= PORT_MAX)


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return HOST_NAME.match(text) is not None
    return True


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _host_ports(text: str) -> bool:
    for server in text.split(","):
        host, _, port = server.strip().rpartition(":")
        if not (host and port.isdigit() and 1 <= int(port) <= PORT_MAX):
            return False
    return True


def tokens(min_secret_chars: int) -> Form:
    """Clients of the status query as name:secret, each name once, each secret at least
    `min_secret_chars` long; the secrets are never quoted back."""
    def accepts(entries: list[str]) -> bool:
        names: set[str] = set()
        for entry in entries:
            name, sep, secret = entry.partition(":")
            if not sep or not name:
                raise ValueError(f"an entry of {len(entry)} characters is not name:secret")
            if len(secret) < min_secret_chars:
                raise ValueError(f"the secret of {name!r} is shorter than that")
            if name in names:
                raise ValueError(f"client {name!r} is named twice")
            names.add(name)
        return True
    return Form(f"name:secret entries, each name once, each secret {min_secret_chars} "
                "characters or more", accepts, secret=True)


NONBLANK = Form("some text", lambda text: bool(text.strip()))
# Free text: a path, a name or a secret, where empty has its own meaning (said in defaults.toml).
ANY_TEXT = Form("text", lambda text: True)
CLOCK_TIME = Form("a time of day HH:MM (00:00 to 23:59)",
                  matching(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]"))
TIME_ZONE = Form("a time zone of the IANA database, such as Asia/Tehran or UTC", _time_zone)
CRON = Form("a cron expression (minute hour day-of-month month day-of-week, or six fields "
            "with seconds first), or empty to turn the job off", _cron)
DSN = Form("a PostgreSQL connection string (postgresql://user@host:port/database, or "
           "key=value pairs)", _dsn, secret=True)
ADDRESS = Form("an IP address or host name to listen on (0.0.0.0: every interface)", _address)
IPV4_ADDRESS = Form("an IPv4 address of this host to listen on (0.0.0.0: every interface)",
                    _ipv4)
DIAMETER_IDENTITY = Form("a host name (a DiameterIdentity, RFC 6733 §4.3.1)",
                         lambda text: HOST_NAME.match(text) is not None)
DIAMETER_URI = Form("a DiameterURI aaa://host[:port][;transport=tcp|sctp] (RFC 6733 §4.3.1)",
                    matching(r"aaas?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?"
                             r"(?:;transport=(?:tcp|sctp))?(?:;protocol=diameter)?"))
HOST_PORTS = Form("host:port, or several separated by commas", _host_ports)
# Kafka's own rule for topic names (kafka.common.internals.Topic).
TOPIC = Form("a Kafka topic name (1-249 of a-z, A-Z, 0-9, '.', '_', '-'; not '.' or '..')",
             matching(r"(?!\.{1,2}\Z)[A-Za-z0-9._-]{1,249}"))
TAC_PREFIX = Form("the start of a TAC (1 to 8 digits)", matching(r"[0-9]{1,8}"))
IMEI_DIGITS = Form("an IMEI or IMEISV (14 to 16 digits)", matching(r"[0-9]{14,16}"))
