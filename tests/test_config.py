"""The configuration as an operator meets it: every key's range or form checked at load, a
bad value one line naming the key and what was expected, for every command; the start of
`run` and `serve`, which waits for a service that is not up yet, refuses an address it
cannot listen on, and stops on SIGTERM whatever holds it up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import psycopg
import pytest

from enforcer.config import DEFAULTS, Config, ConfigError, load_config
from enforcer.configcheck import DSN_CHOICES, DSN_WHOLE_NUMBERS
from enforcer.reach import Backoff, Stopped, Unreachable, when_reachable
from enforcer.embedded.services import free_port

CLI = [sys.executable, "-m", "enforcer.app.cli"]
LOOPBACK = "127.0.0.1"
SECRET = "s" * 16
SIGNALLED_FOR_S = 30  # a process asked to stop this long and still there is deaf
# A handler that takes the stop event's lock hangs about one signal in two here.
TRIES_AGAINST_A_RACE = 10
ROOT = Path(__file__).resolve().parent.parent
SIGNAL_EVERY_S = 0.5

# (variable, value, what the line says after "configuration key "), one row at least for each
# kind of constraint: each is what the trial's operator ran into, or its like.
BAD_VALUES = [
    # numbers: above, at least, at most, a share, not a number at all
    ("EIR_NOTICES__SWEEP_EVERY_S", "-5", "'notices.sweep_every_s': must be above 0, not -5"),
    ("EIR_NOTICES__SWEEP_EVERY_S", "0", "'notices.sweep_every_s': must be above 0, not 0"),
    ("EIR_NOTICES__SWEEP_EVERY_S", "1e-7",
     "'notices.sweep_every_s': must be at least 0.001, not 1e-07"),
    ("EIR_NOTICES__SWEEP_EVERY_S", "nan", "'notices.sweep_every_s': must be a number, not nan"),
    ("EIR_WORKER__RETRY_MAX_S", "inf", "'worker.retry_max_s': must be at most 3155760000, not inf"),
    ("EIR_WORKER__BATCH_MAX_EVENTS", "0", "'worker.batch_max_events': must be at least 1, not 0"),
    ("EIR_WORKER__BATCH_MAX_EVENTS", "1000001",
     "'worker.batch_max_events': must be at most 1000000, not 1000001"),
    ("EIR_WORKER__BATCH_MAX_WAIT_MS", "0", "'worker.batch_max_wait_ms': must be at least 1"),
    ("EIR_EIC__FOLLOW_S", "0", "'eic.follow_s': must be above 0, not 0"),
    ("EIR_HTTP__PORT", "99999", "'http.port': must be at most 65535, not 99999"),
    ("EIR_EIC__PORT", "99999", "'eic.port': must be at most 65535, not 99999"),
    ("EIR_EIC__PORT", "0", "'eic.port': must be at least 1, not 0"),
    ("EIR_LISTS__MAX_BAD_SHARE", "2", "'lists.max_bad_share': must be at most 1, not 2"),
    ("EIR_LISTS__MAX_SHRINK_SHARE", "-0.1", "'lists.max_shrink_share': must be at least 0"),
    ("EIR_NOTICES__SMS_GAP_HOURS", "-1", "'notices.sms_gap_hours': must be at least 0, not -1"),
    ("EIR_NOTICES__LAPSE_DAYS", "0", "'notices.lapse_days': must be at least 1, not 0"),
    ("EIR_NOTICES__SWEEPERS", "101", "'notices.sweepers': must be at most 100, not 101"),
    ("EIR_JOBS__ATTEMPTS", "0", "'jobs.attempts': must be at least 1, not 0"),
    ("EIR_HTTP__RATE_PER_S", "0", "'http.rate_per_s': must be above 0, not 0"),
    ("EIR_KAFKA__SESSION_TIMEOUT_MS", "100",
     "'kafka.session_timeout_ms': must be at least 6000, not 100"),
    ("EIR_KAFKA__REGISTRY_FETCH_WAIT_MS", "10001",
     "'kafka.registry_fetch_wait_ms': must be at most 10000, not 10001"),
    ("EIR_WORKER__SWITCH_INTERVAL_MS", "0.01",
     "'worker.switch_interval_ms': must be at least 0.05, not 0.01"),
    ("EIR_KAFKA__DEAD_LETTER_MAX_BYTES", "100",
     "'kafka.dead_letter_max_bytes': must be at least 4096, not 100"),
    # RFC 3539 §3.4.1: Tw of 6 s at least.
    ("EIR_S13__WATCHDOG_S", "5.9", "'s13.watchdog_s': must be at least 6, not 5.9"),
    # forms of text
    ("EIR_NOTICES__QUIET_START", "25:00",
     "'notices.quiet_start': must be a time of day HH:MM (00:00 to 23:59), not '25:00'"),
    ("EIR_NOTICES__QUIET_END", "8:00", "'notices.quiet_end': must be a time of day HH:MM"),
    ("EIR_NOTICES__TIMEZONE", "Mars/Olympus",
     "'notices.timezone': must be a time zone of the IANA database, such as Asia/Tehran or "
     "UTC, not 'Mars/Olympus'"),
    ("EIR_JOBS__TIMEZONE", "", "'jobs.timezone': must be a time zone"),
    ("EIR_JOBS__RECONCILE_CRON", "61 * * * *",
     "'jobs.reconcile_cron': must be a cron expression (minute hour day-of-month month "
     "day-of-week, or six fields with seconds first), or empty to turn the job off, not "
     "'61 * * * *' (Error validating expression '61'"),
    ("EIR_JOBS__RETENTION_CRON", "daily", "'jobs.retention_cron': must be a cron expression"),
    ("EIR_POSTGRES__DSN", "not a dsn",
     "'postgres.dsn': must be a PostgreSQL connection string (postgresql://user@host:port/"
     "database, or key=value pairs): missing \"=\" after a word"),
    ("EIR_POSTGRES__DSN", "host=pg nosuch=1",
     "'postgres.dsn': must be a PostgreSQL connection string (postgresql://user@host:port/"
     "database, or key=value pairs): invalid connection option"),
    ("EIR_POSTGRES__DSN", "host=pg connect_timeout=soon",
     "'postgres.dsn': must be a PostgreSQL connection string (postgresql://user@host:port/"
     "database, or key=value pairs): connect_timeout must be a number of seconds"),
    ("EIR_POSTGRES__DSN", "host=pg sslmode=bogus",
     "'postgres.dsn': must be a PostgreSQL connection string (postgresql://user@host:port/"
     "database, or key=value pairs): sslmode must be one of disable, allow, prefer, require, "
     "verify-ca, verify-full"),
    ("EIR_POSTGRES__DSN", "postgresql://eir@pg:99999/eir",
     "'postgres.dsn': must be a PostgreSQL connection string (postgresql://user@host:port/"
     "database, or key=value pairs): port must be 1 to 65535 (several: separated by commas)"),
    ("EIR_POSTGRES__DSN", "host=pg keepalives_idle=half",
     "'postgres.dsn': must be a PostgreSQL connection string (postgresql://user@host:port/"
     "database, or key=value pairs): keepalives_idle must be a whole number"),
    ("EIR_NOTICES__USSD_CODE", "", "'notices.ussd_code': must be some text, not ''"),
    ("EIR_STATE__DIR", " ", "'state.dir': must be some text, not ' '"),
    ("EIR_KAFKA__GROUP_ID", "", "'kafka.group_id': must be some text, not ''"),
    ("EIR_KAFKA__ATTACH_TOPIC", "attach events",
     "'kafka.attach_topic': must be a Kafka topic name (1-249 of a-z, A-Z, 0-9, '.', '_', '-'; "
     "not '.' or '..'), not 'attach events'"),
    ("EIR_KAFKA__COMMANDS_TOPIC", "..", "'kafka.commands_topic': must be a Kafka topic name"),
    ("EIR_KAFKA__BOOTSTRAP_SERVERS", "kafka",
     "'kafka.bootstrap_servers': must be host:port, or several separated by commas, not "
     "'kafka'"),
    ("EIR_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:99999",
     "'kafka.bootstrap_servers': must be host:port"),
    ("EIR_HTTP__BIND", "every interface", "'http.bind': must be an IP address or host name"),
    ("EIR_IMEI__TEST_TAC_PREFIXES", "0010,00x1",
     "'imei.test_tac_prefixes': must be the start of a TAC (1 to 8 digits), not '00x1'"),
    ("EIR_IMEI__PLACEHOLDERS", "111",
     "'imei.placeholders': must be an IMEI or IMEISV (14 to 16 digits), not '111'"),
    # secrets: said wrong, never quoted back
    ("EIR_HTTP__TOKENS", "ussd:short",
     "'http.tokens': must be name:secret entries, each name once, each secret 16 characters "
     "or more: the secret of 'ussd' is shorter than that"),
    ("EIR_HTTP__TOKENS", f"ussd:{SECRET},ussd:{SECRET}x", "'http.tokens': must be name:secret "
     "entries, each name once, each secret 16 characters or more: client 'ussd' is named twice"),
    # choices
    ("EIR_KAFKA__CLIENT", "java",
     "'kafka.client': must be one of 'kafka-python', 'confluent', not 'java'"),
    ("EIR_KAFKA__SECURITY_PROTOCOL", "TLS", "'kafka.security_protocol': must be one of"),
    # rules between keys
    ("EIR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL",
     "'kafka.sasl_mechanism': must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with a SASL_ "
     "security_protocol, and empty without one, not '' with SASL_SSL"),
    ("EIR_KAFKA__SASL_MECHANISM", "PLAIN", "'kafka.sasl_mechanism': must be PLAIN"),
    ("EIR_KAFKA__ATTACH_DLQ_TOPIC", "attach-events",
     "'kafka.attach_dlq_topic': must not be a topic the worker reads (kafka.attach_topic), "
     "not 'attach-events'"),
    ("EIR_KAFKA__VERDICTS_TOPIC", "registry-events",
     "'kafka.verdicts_topic': must not be a topic the worker reads (kafka.registry_topic)"),
    ("EIR_KAFKA__REGISTRY_TOPIC", "attach-events",
     "'kafka.registry_topic': must not be a topic the worker reads (kafka.attach_topic)"),
    ("EIR_WORKER__RETRY_MAX_S", "0.1",
     "'worker.retry_max_s': must be at least worker.retry_first_s (0.5), not 0.1"),
]


@pytest.mark.parametrize(("variable", "value", "said"), BAD_VALUES,
                         ids=[f"{v}={x}" for v, x, _ in BAD_VALUES])
def test_a_bad_value_is_refused_at_load_naming_the_key(variable: str, value: str,
                                                       said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(environ={variable: value})
    line = str(refused.value)
    assert line.startswith(f"configuration key {said}"), line
    assert "\n" not in line


@pytest.mark.parametrize(("text", "said"), [
    ("[notices]\nsweep_every_s = 'fast'\n", "'notices.sweep_every_s': must be a number, not "
                                            "'fast'"),
    ("[http]\nport = true\n", "'http.port': must be a whole number, not true"),
    ("[http]\nport = 9108.5\n", "'http.port': must be a whole number, not 9108.5"),
    ("[notices]\nresolved_sms = 'yes'\n", "'notices.resolved_sms': must be true or false"),
    ("[imei]\nplaceholders = '004999010640000'\n", "'imei.placeholders': must be a list"),
    ("[http]\ntokens = [5]\n", "'http.tokens': must be text, not 5"),
    ("[lists]\nmax_bad_share = inf\n", "'lists.max_bad_share': must be at most 1, not inf"),
])
def test_a_value_of_the_wrong_type_in_a_file_is_refused_naming_the_key(
        tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "eir.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^configuration key {said}"):
        load_config(path, environ={})


def test_a_bad_number_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="^environment variable EIR_HTTP__PORT: must be a "
                                          "whole number, not '9108.5'$"):
        load_config(environ={"EIR_HTTP__PORT": "9108.5"})


def test_a_dsn_is_never_quoted_back() -> None:
    """It may hold a password."""
    with pytest.raises(ConfigError) as refused:
        load_config(environ={"EIR_POSTGRES__DSN": "postgresql://eir:hunter2@pg/eir?x=1"})
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("dsn", ["hunter2", "host=pg password='hunter2", "host=pg hunter2",
                                 "postgresql://eir:hunter2@pg:5432,pg2:port/eir",
                                 'host=pg hu"nter2', 'postgresql://eir:hu"nter2@[::1/eir',
                                 "password=foo hunter2=baz"])
def test_a_dsn_libpq_cannot_read_is_not_quoted_back_either(dsn: str) -> None:
    with pytest.raises(ConfigError, match="^configuration key 'postgres.dsn'") as refused:
        load_config(environ={"EIR_POSTGRES__DSN": dsn})
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("dsn", [
    "postgresql://eir@pg1:5432,pg2:5433/eir", "postgresql://eir@a,b:2/eir",
    "postgresql://eir@a:,b/eir", "host=/var/run/postgresql dbname=eir",
    "postgresql://%2Fvar%2Frun%2Fpostgresql/eir", "host=pg port=", "host=pg port=' 5432'",
    "host=pg connect_timeout=-5", "host=pg connect_timeout=2.5", "host=pg password='a b\\' c'",
    "host=pg sslmode=verify-full target_session_attrs=read-write keepalives_idle=+30",
    "service=eir"])
def test_a_dsn_libpq_takes_is_taken(dsn: str) -> None:
    load_config(environ={"EIR_POSTGRES__DSN": dsn})


def test_every_libpq_parameter_with_a_fixed_form_is_checked_as_libpq_names_it() -> None:
    """A name misspelled here would let a bad value through to the connection."""
    from psycopg.conninfo import conninfo_to_dict

    for name in (*DSN_CHOICES, *DSN_WHOLE_NUMBERS):
        assert conninfo_to_dict(f"{name}=1") == {name: "1"}


def leaves(cls: type, where: str = "") -> list[tuple[str, Any]]:
    hints = get_type_hints(cls, include_extras=True)
    found = []
    for f in fields(cls):
        hint = hints[f.name]
        found += leaves(hint, f"{where}{f.name}.") if is_dataclass(hint) \
            else [(f"{where}{f.name}", hint)]
    return found


def declares_its_form(hint: Any) -> bool:
    """Annotated with a constraint (on the key, or on each item of a list), a choice, or a
    switch; the SMS texts (a table) are checked against the policy at start."""
    if get_origin(hint) is Annotated:
        return True
    if get_origin(hint) is list:
        return declares_its_form(get_args(hint)[0])
    return hint is bool or get_origin(hint) in (Literal, dict)


def test_every_key_declares_its_range_or_form() -> None:
    keys = leaves(Config)
    defaults = tomllib.loads(DEFAULTS.read_text())
    assert {key for key, _ in keys} == {f"{section}.{key}" for section, table in defaults.items()
                                        for key in table}
    assert [key for key, hint in keys if not declares_its_form(hint)] == []


def test_the_defaults_and_the_production_example_are_within_every_range() -> None:
    load_config(environ={})
    load_config(Path(__file__).parents[1] / "deploy" / "eir-enforcer.toml", environ={})


# --- the start of `run` and `serve` -------------------------------------------------------

def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.mark.parametrize("command", [["run"], ["serve"], ["lists", "stats"], ["db", "migrate"]])
def test_every_command_stops_at_a_bad_value_with_one_line(command: list[str]) -> None:
    result = cli(*command, env={"EIR_NOTICES__SWEEP_EVERY_S": "-5"})
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("eir-enforcer: configuration key 'notices.sweep_every_s': must be "
                             "above 0, not -5\n")


@pytest.mark.parametrize("command", [["db", "migrate"], ["notices", "list"]])
def test_a_database_that_refuses_is_one_line_naming_the_key(command: list[str]) -> None:
    result = cli(*command, env={"EIR_POSTGRES__DSN": f"postgresql://eir@{LOOPBACK}:1/eir"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("eir-enforcer: PostgreSQL (postgres.dsn): connection "), \
        result.stderr
    assert "Connection refused" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(("command", "section"), [("run", "http"), ("serve", "eic")])
def test_a_port_in_use_stops_the_start_with_one_line_naming_it(command: str,
                                                               section: str) -> None:
    """A second worker (or serve) on the same host: nothing else is tried first (the
    database and broker named here are not there)."""
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        result = cli(command, env={f"EIR_{section.upper()}__PORT": str(port),
                                   f"EIR_{section.upper()}__BIND": LOOPBACK,
                                   "EIR_POSTGRES__DSN": "postgresql://eir@127.0.0.1:1/eir",
                                   "EIR_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"eir-enforcer: configuration key '{section}.port': {port} is in "
                             f"use on {LOOPBACK} (another eir-enforcer on this host?); give a "
                             "free port\n")


def test_an_address_not_of_this_host_is_named() -> None:
    result = cli("serve", env={"EIR_EIC__BIND": "192.0.2.1"})  # TEST-NET-1, RFC 5737
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("eir-enforcer: configuration key 'eic.bind': 192.0.2.1 is "
                                    "no address of this host (")
    assert result.stderr.count("\n") == 1


def started(command: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--log-level", "INFO", command], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def waiting_lines(process: subprocess.Popen, service: str) -> list[str]:
    """Lines read until the first that says `service` is waited for."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if '"not reachable at start, trying again"' in line and f'"{service}"' in line:
            return seen
    raise AssertionError(f"ended without waiting for {service}: {''.join(seen)}")


def stopped(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    return process.returncode, rest


@pytest.mark.parametrize("command", ["run", "serve"])
def test_started_before_the_database_it_waits_and_stops_on_sigterm(command: str) -> None:
    process = started(command, {"EIR_POSTGRES__DSN": "postgresql://eir@127.0.0.1:1/eir",
                                "EIR_WORKER__RETRY_FIRST_S": "0.1", "EIR_EIC__FOLLOW_S": "0.1",
                                "EIR_HTTP__PORT": "0", "EIR_EIC__PORT": str(free_port())})
    lines = waiting_lines(process, "postgres")
    code, rest = stopped(process)
    assert code == 0, rest
    assert "Connection refused" in lines[-1]
    assert "Traceback" not in rest


def test_started_before_the_broker_it_waits_and_stops_on_sigterm(env: dict[str, str]) -> None:
    nowhere = f"{LOOPBACK}:{free_port()}"
    process = started("run", {**env, "EIR_KAFKA__BOOTSTRAP_SERVERS": nowhere,
                              "EIR_WORKER__RETRY_FIRST_S": "0.1"})
    lines = waiting_lines(process, "kafka")
    code, rest = stopped(process)
    assert code == 0, rest
    assert f"no broker of {nowhere} answered" in lines[-1]
    assert "Traceback" not in rest


def test_a_second_sigterm_ends_a_start_that_does_not_return() -> None:
    """postgres.dsn naming a port where something accepts and never answers (another
    service's): the connection waits, whatever the first SIGTERM asked; the second ends the
    process at once."""
    with socket.create_server((LOOPBACK, 0)) as silent:
        silent.settimeout(SIGNALLED_FOR_S)
        process = started("run", {"EIR_HTTP__PORT": "0", "EIR_POSTGRES__DSN":
                                  f"postgresql://eir@{LOOPBACK}:{silent.getsockname()[1]}/eir"})
        accepted, _ = silent.accept()  # the worker is in its connection now
        with accepted:
            # Signals sent together may arrive as one: each waits a little for the end.
            for _ in range(int(SIGNALLED_FOR_S / SIGNAL_EVERY_S)):
                process.send_signal(signal.SIGTERM)
                try:
                    process.communicate(timeout=SIGNAL_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                process.kill()
                process.communicate()
    assert process.returncode == -signal.SIGTERM


# --- when_reachable, on its own -------------------------------------------------------------

def test_a_step_is_tried_again_until_its_service_answers() -> None:
    tries: list[int] = []

    def step() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise psycopg.OperationalError("connection refused")
        if len(tries) == 2:
            raise Unreachable("no broker answered")
        return "up"

    assert when_reachable(step, "kafka", Backoff(0.001, 0.002), threading.Event()) == "up"
    assert len(tries) == 3


def test_a_step_that_fails_otherwise_is_not_tried_again() -> None:
    def step() -> None:
        raise ConfigError("configuration key 'x': must be y")

    with pytest.raises(ConfigError):
        when_reachable(step, "postgres", Backoff(0.001, 0.002), threading.Event())


def test_waiting_ends_when_asked_to_stop() -> None:
    stop = threading.Event()

    def step() -> None:
        stop.set()  # SIGTERM while the service is away
        raise Unreachable("no broker answered")

    with pytest.raises(Stopped):
        when_reachable(step, "kafka", Backoff(3600, 3600), stop)


def test_nothing_is_tried_once_stopped() -> None:
    stop = threading.Event()
    stop.set()
    tried: list[int] = []
    with pytest.raises(Stopped):
        when_reachable(lambda: tried.append(1), "kafka", Backoff(1, 1), stop)
    assert tried == []


# The main thread in `Event.wait` as often as it can be, holding the event's lock at times:
# a handler taking that lock there would wait for it for ever.
BUSY_WAITER = """
import threading
from enforcer.app.process import stop_on_signals
stop = threading.Event()
stop_on_signals(stop)
print("ready", flush=True)
while not stop.wait(0):
    pass
"""


def test_a_stop_signal_is_taken_whatever_the_main_thread_holds() -> None:
    for _ in range(TRIES_AGAINST_A_RACE):
        process = subprocess.Popen([sys.executable, "-c", BUSY_WAITER], cwd=ROOT,
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=SIGNALLED_FOR_S) == 0
        finally:
            process.kill()
            process.wait()
