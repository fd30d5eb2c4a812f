"""The worker's logs: one JSON object per line by default, `--log-format text` for people,
and no subscriber's number in clear in either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from enforcer.embedded.services import free_port
from tests.kafkatools import committed, produce, wait_for
from tests.test_decide import BUYER, OWNER, SINGLE, home_imsi
from tests.test_worker import attach, now_ms


def worker_log(env: dict[str, str], form: str, level: str = "INFO") -> list[str]:
    """Run a worker over a few attaches (one of them a buyer's, which opens a notice) and
    return what it logged at `level`."""
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, OWNER, t), attach(SINGLE, BUYER, t + 1), b"junk"])
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "enforcer.app.cli", "--log-level", level, "--log-format", form,
         "run"], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: committed(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                                   env["EIR_KAFKA__GROUP_ID"],
                                   env["EIR_KAFKA__ATTACH_TOPIC"]) == 3)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    return err.splitlines()


def clear_numbers(lines: list[str]) -> list[str]:
    numbers = [str(n) for n in (OWNER, BUYER)] + [home_imsi(n) for n in (OWNER, BUYER)]
    return [line for line in lines if any(n in line for n in numbers)]


def test_json_lines_by_default_and_no_number_in_clear(env) -> None:
    lines = worker_log(env, "json")
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"worker started", "worker stopping"} <= {e["event"] for e in events}
    assert all({"ts", "level", "logger", "event"} <= e.keys() for e in events)
    assert clear_numbers(lines) == []


def test_text_for_people_with_the_same_fields(env) -> None:
    lines = worker_log(env, "text")
    started = next(line for line in lines if " worker started" in line)
    assert started.split()[1:4] == ["info", "eir.lifecycle", "worker"]
    assert f'attach_topic="{env["EIR_KAFKA__ATTACH_TOPIC"]}"' in started
    assert not started.startswith("{")
    assert clear_numbers(lines) == []


def test_run_says_once_at_the_default_level_what_it_listens_on_and_consumes(env) -> None:
    """Trial finding 10: neither run nor serve said it had started, nor on which port."""
    port = free_port()
    lines = worker_log({**env, "EIR_HTTP__PORT": str(port), "EIR_HTTP__BIND": "127.0.0.1"},
                       "json", level="WARNING")
    events = [json.loads(line) for line in lines]
    (started,) = [e for e in events if e["event"] == "worker started"]
    assert {k: started[k] for k in ("logger", "http", "bootstrap_servers", "attach_topic",
                                    "group", "registry_topic")} == {
        "logger": "eir.lifecycle", "http": f"127.0.0.1:{port}",
        "bootstrap_servers": env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
        "attach_topic": env["EIR_KAFKA__ATTACH_TOPIC"], "group": env["EIR_KAFKA__GROUP_ID"],
        "registry_topic": env["EIR_KAFKA__REGISTRY_TOPIC"]}
    assert "worker stopped" in [e["event"] for e in events]
    # Asked for errors only, it says nothing of it.
    assert not any("worker started" in line for line in worker_log(env, "json", "ERROR"))


def test_an_error_is_told_in_full_only_when_it_cannot_quote_a_row() -> None:
    """Network and broker errors of either client and a failed database connection in full;
    a statement's error by class and SQLSTATE; anything else by class (it may quote the
    number it choked on)."""
    import confluent_kafka
    import psycopg
    from kafka.errors import KafkaTimeoutError

    from enforcer.logs import describe

    refused = psycopg.OperationalError("connection to server at \"10.0.0.5\", port 5432\n failed")
    unique = psycopg.errors.UniqueViolation("duplicate key value (989121234567)")
    assert describe(refused) == ('OperationalError: connection to server at "10.0.0.5", '
                                 'port 5432 failed')
    assert describe(unique) == "UniqueViolation (SQLSTATE 23505)"
    assert describe(KafkaTimeoutError("no broker")) == repr(KafkaTimeoutError("no broker"))
    broker = confluent_kafka.KafkaException(confluent_kafka.KafkaError(
        confluent_kafka.KafkaError._TRANSPORT))
    assert describe(broker) == repr(broker)
    assert describe(ConnectionResetError(104, "reset")) == repr(ConnectionResetError(104, "reset"))
    assert describe(ValueError("989121234567")) == "ValueError"


def test_a_process_that_only_logs_loads_no_kafka_client() -> None:
    """The fold's process imports the logs and no consumer: neither client is loaded (about
    half a second of its start)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, enforcer.jobs.fold; "
         "print(sorted(m for m in ('kafka', 'confluent_kafka') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
