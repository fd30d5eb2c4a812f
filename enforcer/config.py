"""One typed configuration object: defaults.toml, then the operator's TOML file, then
environment variables EIR_<SECTION>__<KEY>.

Every key's type says what it may be: its range or form is declared beside it (typing.Annotated,
with the constraints of enforcer.configcheck; a Literal for a choice), and a rule between
keys in its section's __post_init__. All are checked at load, so that a bad value stops any
command at once with one line naming the key, what was expected and what was given."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, get_args, get_origin, get_type_hints

from enforcer.configcheck import (ADDRESS, ANY_TEXT, CLOCK_TIME, CRON, DIAMETER_IDENTITY,
                                  DIAMETER_URI, DSN, HOST_PORTS, IMEI_DIGITS, IPV4_ADDRESS,
                                  NONBLANK, PORT_MAX, TAC_PREFIX, TIME_ZONE, TOPIC, Range, shown,
                                  tokens)

DEFAULTS = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "EIR_"
# Tables whose keys an operator may add to: a policy may name notice kinds of its own.
OPEN_TABLES = ("notices.templates.",)

# The C int most counts end in (a socket's backlog, a poll's size, the collector's threshold).
INT_MAX = 2**31 - 1
# The longest time any key gives: past it a wait overflows threading's TIMEOUT_MAX, a
# schedule datetime's year 9999, a window epoch milliseconds in int64.
CENTURY_DAYS = 36_525
CENTURY_HOURS = CENTURY_DAYS * 24
CENTURY_S = CENTURY_HOURS * 3600
# APScheduler counts an interval in microseconds and runs one of 0 every second instead.
MIN_INTERVAL_S = 0.001
# confluent-kafka's consume() takes at most this many messages at a time.
MAX_POLL_RECORDS = 1_000_000
# Each of these holds a PostgreSQL connection: past the server's default max_connections
# they would be refused.
MAX_CONNECTIONS = 100
# A stock broker's group.min.session.timeout.ms and group.max.session.timeout.ms: outside
# them it refuses the consumer group's join, and the worker would consume nothing.
SESSION_TIMEOUT_MS = Range(6_000, 1_800_000)
# A thread's turn with the interpreter lock (sys.setswitchinterval): CPython counts it in
# microseconds, and below some 50 its threads would pass the lock more than they run; past a
# second no thread waiting for it would count a change within one.
SWITCH_INTERVAL_MS = Range(0.05, 1000)
# The most a process may lower its own priority by (nice(2)).
MAX_NICE = 19
# A fetch's wait at the broker: kafka-python refuses one as long as its request timeout (30 s
# by default), and a change may take a second to count anyway.
FETCH_WAIT_MS = Range(0, 10_000)
# The largest request a producer sends: librdkafka's default message.max.bytes, set on
# kafka-python's max_request_size too (1 MiB by its default), so both clients refuse alike.
MAX_REQUEST_BYTES = 1_000_000
# Beyond what `consumers.deadletters.measure` counts, a request holds the record batch's header
# (61 bytes) and the record's own length, offset, time and attribute fields.
RECORD_FRAMING_BYTES = 128
# Room for the dlq-* headers at their longest (a detail of 1 KiB, a 249-character topic).
MIN_DEAD_LETTER_BYTES = 4096
# A status query client's secret is at least this long.
MIN_SECRET_CHARS = 16

Count = Annotated[int, Range(1, INT_MAX)]
CountOrZero = Annotated[int, Range(0, INT_MAX)]
Connections = Annotated[int, Range(1, MAX_CONNECTIONS)]
Seconds = Annotated[float, Range(0, CENTURY_S, above=True)]
SecondsOrZero = Annotated[float, Range(0, CENTURY_S)]
Interval = Annotated[Seconds, Range(MIN_INTERVAL_S)]
Days = Annotated[int, Range(1, CENTURY_DAYS)]
Share = Annotated[float, Range(0, 1)]
Port = Annotated[int, Range(1, PORT_MAX)]
Text = Annotated[str, NONBLANK]
AnyText = Annotated[str, ANY_TEXT]
Topic = Annotated[str, TOPIC]
TimeZone = Annotated[str, TIME_ZONE]
ClockTime = Annotated[str, CLOCK_TIME]
Cron = Annotated[str, CRON]


class ConfigError(ValueError):
    """A setting is missing, unknown, of the wrong type or out of its range; the message
    names the key."""


def config_error(key: str, complaint: str) -> ConfigError:
    """The error of a key whose value is wanting: `complaint` says what was expected."""
    return ConfigError(f"configuration key '{key}': {complaint}")


@dataclass(frozen=True)
class ImeiConfig:
    test_tac_prefixes: list[Annotated[str, TAC_PREFIX]]
    placeholders: list[Annotated[str, IMEI_DIGITS]]


@dataclass(frozen=True)
class StateConfig:
    dir: Text


@dataclass(frozen=True)
class PolicyConfig:
    file: AnyText  # empty: rules/default.toml


@dataclass(frozen=True)
class ListsConfig:
    csv_chunk_lines: Count
    bad_rows_reported: CountOrZero
    max_bad_share: Share
    max_shrink_share: Share
    max_leading_zero_fall: Share


@dataclass(frozen=True)
class ServicesConfig:
    dir: Text
    kafka_port: Port
    postgres_port: Port


@dataclass(frozen=True)
class KafkaConfig:
    client: Literal["kafka-python", "confluent"]
    bootstrap_servers: Annotated[str, HOST_PORTS]
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    sasl_username: AnyText
    sasl_password: AnyText
    ssl_cafile: AnyText  # empty: the system's CAs
    client_id: Text
    group_id: Text
    session_timeout_ms: Annotated[int, SESSION_TIMEOUT_MS]
    attach_topic: Topic
    attach_dlq_topic: Topic
    notifications_topic: Topic
    commands_topic: Topic
    verdicts_topic: Topic
    publish_verdicts: bool
    registry_topic: Topic
    registry_dlq_topic: Topic
    registry_fetch_wait_ms: Annotated[int, FETCH_WAIT_MS]
    dead_letter_max_bytes: Annotated[int, Range(MIN_DEAD_LETTER_BYTES,
                                                MAX_REQUEST_BYTES - RECORD_FRAMING_BYTES)]

    def __post_init__(self) -> None:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl != bool(self.sasl_mechanism):
            raise config_error("kafka.sasl_mechanism", "must be PLAIN, SCRAM-SHA-256 or "
                               "SCRAM-SHA-512 with a SASL_ security_protocol, and empty "
                               f"without one, not {shown(self.sasl_mechanism)} with "
                               f"{self.security_protocol}")
        # A topic the worker writes that it also reads would feed it its own output: a dead
        # letter read back would be dead-lettered again, for ever.
        for key in ("registry_topic", "attach_dlq_topic", "registry_dlq_topic",
                    "notifications_topic", "commands_topic", "verdicts_topic"):
            topic = getattr(self, key)
            read = next((r for r in ("attach_topic", "registry_topic")
                         if r != key and getattr(self, r) == topic), None)
            if read is not None:
                raise config_error(f"kafka.{key}", f"must not be a topic the worker reads "
                                   f"(kafka.{read}), not {shown(topic)}")


@dataclass(frozen=True)
class PostgresConfig:
    dsn: Annotated[str, DSN]


@dataclass(frozen=True)
class WorkerConfig:
    batch_max_events: Annotated[int, Range(1, MAX_POLL_RECORDS)]
    batch_max_wait_ms: Count
    max_event_age_days: Days
    max_event_future_s: Annotated[int, Range(0, CENTURY_S)]
    retry_first_s: Seconds
    retry_max_s: Seconds
    gc_threshold: Count
    switch_interval_ms: Annotated[float, SWITCH_INTERVAL_MS]
    name: AnyText  # empty: host:pid

    def __post_init__(self) -> None:
        if self.retry_max_s < self.retry_first_s:
            raise config_error("worker.retry_max_s", "must be at least worker.retry_first_s "
                               f"({shown(self.retry_first_s)}), not {shown(self.retry_max_s)}")


@dataclass(frozen=True)
class RegistryConfig:
    max_event_age_days: Days


@dataclass(frozen=True)
class HistoryConfig:
    resolution_s: Annotated[int, Range(1, CENTURY_S)]
    dedupe_pairs: Count
    keep_days: Days


@dataclass(frozen=True)
class RetentionConfig:
    outbox_days: Days
    closed_notice_days: Days
    status_query_days: Days
    job_run_days: Days
    registry_incarnation_days: Days
    # Twice db.subscribers.SEEN_AT_STEP_DAYS at least: a SIM in use is never taken.
    subscriber_days: Annotated[int, Range(60, CENTURY_DAYS)]
    batch_rows: Count
    partitions_ahead: Count
    lock_timeout_s: Seconds


@dataclass(frozen=True)
class JobsConfig:
    timezone: TimeZone
    reconcile_cron: Cron
    consistency_cron: Cron
    retention_cron: Cron
    fold_cron: Cron
    lock_wait_s: SecondsOrZero
    attempts: Count
    retry_delay_s: SecondsOrZero
    drop_dir: Text
    drop_settle_s: SecondsOrZero
    import_failures: Count
    child_nice: Annotated[int, Range(0, MAX_NICE)]
    consistency_shards: Count


@dataclass(frozen=True)
class NoticesConfig:
    sweep_every_s: Interval
    woken_gap_s: SecondsOrZero
    sweepers: Connections
    batch: Count
    count_every_s: SecondsOrZero
    quiet_start: ClockTime
    quiet_end: ClockTime
    timezone: TimeZone
    sms_gap_hours: Annotated[float, Range(0, CENTURY_HOURS)]
    lapse_days: Days
    cut_idle_days: Days
    # One of enforcer.engine.noticemessages.LANGUAGES, checked with the texts at start.
    language: Text
    ussd_code: Text
    resolved_sms: bool
    # SMS texts: notice kind -> step -> language -> text; checked against the policy at
    # start (enforcer.engine.noticemessages.check_templates).
    templates: dict[str, dict[str, dict[str, str]]]


@dataclass(frozen=True)
class HttpConfig:
    bind: Annotated[str, ADDRESS]
    port: Annotated[int, Range(0, PORT_MAX)]  # 0: no HTTP server
    timeout_s: Seconds
    tokens: Annotated[list[str], tokens(MIN_SECRET_CHARS)]
    rate_per_s: Annotated[float, Range(0, above=True)]
    burst: Count
    pool_size: Connections
    db_wait_s: Seconds


@dataclass(frozen=True)
class ClonesConfig:
    cell_sites: AnyText  # empty: cells are not compared


@dataclass(frozen=True)
class EicConfig:
    bind: Annotated[str, ADDRESS]
    port: Port
    follow_s: Seconds
    backlog: Count


@dataclass(frozen=True)
class CheckFeedConfig:
    publish_checks: bool
    queue_size: Count
    ack_timeout_s: Seconds


# RFC 3539 §3.4.1: Tw is 6 s at least, so that a peer busy for a moment (or a network
# slow for one) is not taken for a dead one.
MIN_WATCHDOG_S = 6


@dataclass(frozen=True)
class S13Config:
    enabled: bool
    bind: Annotated[str, IPV4_ADDRESS]
    port: Port
    transport: Literal["tcp", "sctp"]
    origin_host: Annotated[str, DIAMETER_IDENTITY]
    origin_realm: Annotated[str, DIAMETER_IDENTITY]
    peers: list[Annotated[str, DIAMETER_URI]]
    watchdog_s: Annotated[Seconds, Range(MIN_WATCHDOG_S)]
    max_connections: Count


@dataclass(frozen=True)
class ClockConfig:
    file: AnyText  # empty: the system clock


@dataclass(frozen=True)
class Config:
    clock: ClockConfig
    imei: ImeiConfig
    state: StateConfig
    policy: PolicyConfig
    lists: ListsConfig
    services: ServicesConfig
    kafka: KafkaConfig
    postgres: PostgresConfig
    worker: WorkerConfig
    registry: RegistryConfig
    history: HistoryConfig
    jobs: JobsConfig
    retention: RetentionConfig
    notices: NoticesConfig
    http: HttpConfig
    eic: EicConfig
    s13: S13Config
    check_feed: CheckFeedConfig
    clones: ClonesConfig


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    merged = _read_toml(DEFAULTS)
    if path:
        _merge(merged, _read_toml(Path(path)), where="")
    _apply_env(merged, os.environ if environ is None else environ)
    return _build(Config, merged, "")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc


def _merge(base: dict[str, Any], override: dict[str, Any], where: str) -> None:
    for key, value in override.items():
        name = f"{where}{key}"
        if key not in base and name.startswith(OPEN_TABLES):
            base[key] = value
            continue
        if key not in base:
            raise ConfigError(f"unknown configuration key '{name}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise config_error(name, f"must be a table, not {shown(value)}")
            _merge(base[key], value, f"{name}.")
        else:
            base[key] = value


def _apply_env(merged: dict[str, Any], environ: Mapping[str, str]) -> None:
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX):].lower().partition("__")
        if section not in merged or key not in merged[section]:
            raise ConfigError(f"environment variable {var} names no configuration key")
        current = merged[section][key]
        merged[section][key] = _parse_env(var, text, current)


def _parse_env(var: str, text: str, current: Any) -> Any:
    """The variable's text as the type of the key's default."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"environment variable {var}: must be true or false, "
                              f"not {shown(text)}")
        return text.lower() in ("true", "1")
    if isinstance(current, list):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(current, (int, float)):
        try:
            return type(current)(text)
        except ValueError:
            raise ConfigError(f"environment variable {var}: must be "
                              f"{TYPE_NAMES[type(current)]}, not {shown(text)}") from None
    return text


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls, include_extras=True)
    values = {}
    for f in fields(cls):
        name = f"{where}{f.name}"
        if f.name not in data:
            raise ConfigError(f"configuration key '{name}' is missing")
        hint = hints[f.name]
        if is_dataclass(hint):
            values[f.name] = _build(hint, data[f.name], f"{name}.")
        else:
            values[f.name] = _value(name, data[f.name], hint)
    return cls(**values)  # its __post_init__ checks the rules between its keys


def _value(name: str, value: Any, hint: Any) -> Any:
    """The value as its type says, within the constraints annotated on it."""
    constraints: tuple[Any, ...] = ()
    if get_origin(hint) is Annotated:
        hint, *constraints = get_args(hint)
    value = _typed(name, value, hint)
    for constraint in constraints:
        complaint = constraint.complaint(value)
        if complaint is not None:
            raise config_error(name, complaint)
    return value


# What a value of each plain type is called in a message.
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _typed(name: str, value: Any, hint: Any) -> Any:
    origin = get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise config_error(name, f"must be a list, not {shown(value)}")
        (item,) = get_args(hint)
        return [_value(name, v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise config_error(name, f"must be a table, not {shown(value)}")
        _, item = get_args(hint)
        return {k: _value(f"{name}.{k}", v, item) for k, v in value.items()}
    if origin is Literal:
        choices = get_args(hint)
        if not isinstance(value, str) or value not in choices:
            raise config_error(name, f"must be one of {', '.join(map(shown, choices))}, "
                               f"not {shown(value)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise config_error(name, f"must be {TYPE_NAMES[hint]}, not {shown(value)}")
    return value
