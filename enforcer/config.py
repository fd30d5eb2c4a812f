"""One typed configuration object: defaults.toml, then the operator's TOML file, then
environment variables EIR_<SECTION>__<KEY>."""

from __future__ import annotations

import os
import tomllib
import types
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, get_type_hints

DEFAULTS = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "EIR_"
# Tables whose keys an operator may add to: a policy may name notice kinds of its own.
OPEN_TABLES = ("notices.templates.",)


class ConfigError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names the key."""


@dataclass(frozen=True)
class ImeiConfig:
    test_tac_prefixes: list[str]
    placeholders: list[str]


@dataclass(frozen=True)
class StateConfig:
    dir: str


@dataclass(frozen=True)
class PolicyConfig:
    file: str


@dataclass(frozen=True)
class ListsConfig:
    csv_chunk_lines: int
    bad_rows_reported: int
    max_bad_share: float
    max_shrink_share: float
    max_leading_zero_fall: float


@dataclass(frozen=True)
class ServicesConfig:
    dir: str
    kafka_port: int
    postgres_port: int


@dataclass(frozen=True)
class KafkaConfig:
    client: str
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    ssl_cafile: str
    client_id: str
    group_id: str
    session_timeout_ms: int
    attach_topic: str
    attach_dlq_topic: str
    notifications_topic: str
    commands_topic: str
    verdicts_topic: str
    publish_verdicts: bool
    registry_topic: str
    registry_dlq_topic: str
    dead_letter_max_bytes: int


@dataclass(frozen=True)
class PostgresConfig:
    dsn: str


@dataclass(frozen=True)
class WorkerConfig:
    batch_max_events: int
    batch_max_wait_ms: int
    max_event_age_days: int
    max_event_future_s: int
    retry_first_s: float
    retry_max_s: float
    gc_threshold: int
    name: str


@dataclass(frozen=True)
class RegistryConfig:
    max_event_age_days: int


@dataclass(frozen=True)
class HistoryConfig:
    resolution_s: int
    dedupe_pairs: int
    keep_days: int


@dataclass(frozen=True)
class JobsConfig:
    timezone: str
    reconcile_cron: str
    consistency_cron: str
    retention_cron: str
    lock_wait_s: float
    attempts: int
    retry_delay_s: float
    drop_dir: str
    drop_settle_s: float
    consistency_shards: int


@dataclass(frozen=True)
class NoticesConfig:
    sweep_every_s: float
    sweepers: int
    batch: int
    count_every_s: float
    quiet_start: str
    quiet_end: str
    timezone: str
    sms_gap_hours: float
    lapse_days: int
    language: str
    ussd_code: str
    resolved_sms: bool
    # SMS texts: notice kind -> step -> language -> text; checked against the policy at
    # start (enforcer.noticemessages.check_templates).
    templates: dict[str, dict[str, dict[str, str]]]


@dataclass(frozen=True)
class HttpConfig:
    bind: str
    port: int
    timeout_s: float
    tokens: list[str]
    rate_per_s: float
    burst: int
    pool_size: int
    db_wait_s: float


@dataclass(frozen=True)
class ClonesConfig:
    cell_sites: str


@dataclass(frozen=True)
class EicConfig:
    bind: str
    port: int
    follow_s: float
    backlog: int


@dataclass(frozen=True)
class ClockConfig:
    file: str


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
    notices: NoticesConfig
    http: HttpConfig
    eic: EicConfig
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
                raise ConfigError(f"configuration key '{name}' must be a table")
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
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"environment variable {var} must be true or false")
        return text.lower() in ("true", "1")
    if isinstance(current, list):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(current, (int, float)):
        try:
            return type(current)(text)
        except ValueError as exc:
            raise ConfigError(f"environment variable {var} must be a number") from exc
    return text


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        name = f"{where}{f.name}"
        if f.name not in data:
            raise ConfigError(f"configuration key '{name}' is missing")
        hint = hints[f.name]
        value = data[f.name]
        if is_dataclass(hint):
            values[f.name] = _build(hint, value, f"{name}.")
        else:
            values[f.name] = _check_type(name, value, hint)
    return cls(**values)


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = getattr(hint, "__origin__", None)
    if origin is list:
        (item,) = hint.__args__
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"configuration key '{name}' must be a list of {item.__name__}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"configuration key '{name}' must be a table")
        _, item = hint.__args__
        return {k: _check_type(f"{name}.{k}", v, item) for k, v in value.items()}
    if isinstance(hint, types.UnionType):
        hint = tuple(hint.__args__)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"configuration key '{name}' has the wrong type")
    return value
