"""Faults with real processes: a worker SIGKILLed at random moments through a notices'
month, the broker stopped and started under a running worker, the database stopped and
started under it. Nothing is lost and no step is sent twice. (bench/faults.py runs the first
at a million events and ten kills.)"""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from enforcer.db.migrate import migrate
from enforcer.faults import (KillPlan, WorkerProcess, committed, history_gaps,
                             month_under_kills, produce, traffic)
from enforcer.services import EmbeddedBroker, EmbeddedPostgres, free_port
from enforcer.state import EnforcementState, save_snapshot
from enforcer.synth import Country, CountrySpec, build_country
from tests.kafkatools import wait_for

DEVICES = 20_000
START_MS = 1_790_000_000_000
OUTAGE_S = 4.0
FAST_RETRIES = {"EIR_WORKER__RETRY_FIRST_S": "0.2", "EIR_WORKER__RETRY_MAX_S": "1"}


@pytest.fixture(scope="module")
def country() -> Country:
    return build_country(CountrySpec(devices=DEVICES), generation=2)


@pytest.fixture()
def country_env(env, country, policy) -> dict[str, str]:
    save_snapshot(EnforcementState(country.lists, country.registry, policy),
                  Path(env["EIR_STATE__DIR"]))
    return {**env, "EIR_NOTICES__SWEEP_EVERY_S": "1"}


def test_a_worker_killed_at_random_moments_through_a_month_loses_nothing(
        country_env, country, tmp_path) -> None:
    sent = traffic(country, 6000, seed=3, start_ms=START_MS)
    worker = WorkerProcess(country_env, tmp_path / "clock")
    try:
        moments = random.Random(5)  # noqa: S311 - kill moments, not secrets
        result, _ = month_under_kills(worker, country_env, sent, START_MS,
                                      KillPlan(2, 1, 1.0, 240), moments)
    finally:
        if worker.alive():
            worker.kill()
    assert worker.kills == 3
    assert result.notices > 100 and result.notices_cut == result.notices
    assert result.steps_recorded > 2 * result.notices  # warnings, cutoff SMS, commands
    assert result.clean(), result


def expect_all_recorded(env: dict[str, str], sent) -> None:
    """Every pair in the history, first seen exactly when it was."""
    assert history_gaps(env["EIR_POSTGRES__DSN"], sent) == (0, 0)


def test_the_worker_waits_out_a_broker_outage_and_resumes_by_itself(
        country_env, country, tmp_path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start()
    env = {**country_env, **FAST_RETRIES,
           "EIR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
    bootstrap, group, topic = broker.bootstrap, env["EIR_KAFKA__GROUP_ID"], \
        env["EIR_KAFKA__ATTACH_TOPIC"]
    sent = traffic(country, 4000, seed=4, start_ms=START_MS)
    worker = WorkerProcess(env, tmp_path / "clock")
    worker.set_time(START_MS + len(sent.messages) + 60_000)
    try:
        produce(bootstrap, topic, sent.messages[:2000])
        worker.start()
        wait_for(lambda: committed(bootstrap, group, topic) >= 1000)
        broker.stop()
        time.sleep(OUTAGE_S)
        assert worker.alive()
        broker.start()
        # tansu keeps nothing over a restart: what it lost is produced again, then the rest.
        produce(bootstrap, topic, sent.messages)
        wait_for(lambda: committed(bootstrap, group, topic) == len(sent.messages),
                 timeout_s=90)
        assert worker.alive()
    finally:
        if worker.alive():
            worker.kill()
        broker.stop()
    expect_all_recorded(env, sent)


def ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def batch_failures(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        lines = r.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines
               if line.startswith('eir_batch_failures_total{stage="database"}'))


def test_the_worker_waits_out_a_database_outage_commits_nothing_meanwhile_and_resumes(
        country_env, country, tmp_path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port(), "eir")
    postgres.start()
    migrate(postgres.dsn)
    port = free_port()
    env = {**country_env, **FAST_RETRIES, "EIR_POSTGRES__DSN": postgres.dsn,
           "EIR_HTTP__PORT": str(port)}
    bootstrap, group, topic = (env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"])
    sent = traffic(country, 4000, seed=5, start_ms=START_MS)
    worker = WorkerProcess(env, tmp_path / "clock")
    worker.set_time(START_MS + len(sent.messages) + 60_000)
    try:
        produce(bootstrap, topic, sent.messages[:2000])
        worker.start()
        wait_for(lambda: committed(bootstrap, group, topic) == 2000)
        postgres.stop()
        produce(bootstrap, topic, sent.messages[2000:])
        wait_for(lambda: ready(port) == 503)
        wait_for(lambda: batch_failures(port) >= 2)  # retried, backing off
        held = committed(bootstrap, group, topic)
        time.sleep(OUTAGE_S)
        assert committed(bootstrap, group, topic) == held == 2000
        assert worker.alive()
        postgres.start()
        wait_for(lambda: committed(bootstrap, group, topic) == len(sent.messages))
        wait_for(lambda: ready(port) == 200)
        assert worker.alive()
        expect_all_recorded(env, sent)
    finally:
        if worker.alive():
            worker.kill()
        postgres.stop()
