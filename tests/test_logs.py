"""The worker's logs: one JSON object per line by default, `--log-format text` for people,
and no subscriber's number in clear in either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.kafkatools import committed, produce, wait_for
from tests.test_decide import BUYER, OWNER, SINGLE, home_imsi
from tests.test_worker import attach, now_ms


def worker_log(env: dict[str, str], form: str) -> list[str]:
    """Run a worker over a few attaches (one of them a buyer's, which opens a notice) and
    return what it logged at INFO."""
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, OWNER, t), attach(SINGLE, BUYER, t + 1), b"junk"])
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "enforcer.cli", "--log-level", "INFO", "--log-format", form,
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
    assert started.split()[1:4] == ["info", "eir.worker", "worker"]
    assert f'topic="{env["EIR_KAFKA__ATTACH_TOPIC"]}"' in started
    assert not started.startswith("{")
    assert clear_numbers(lines) == []
