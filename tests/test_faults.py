"""Faults with real processes: a worker SIGKILLed at random moments through a notices'
month, the broker stopped and started under a running worker, the database stopped and
started under it. Nothing is lost and no step is sent twice. (bench/faults.py runs the first
at a million events and ten kills.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from enforcer.db.migrate import migrate
from enforcer.faults import (KillPlan, WorkerProcess, month_under_kills, through_broker_outage,
                             through_database_outage, traffic)
from enforcer.services import EmbeddedBroker, EmbeddedPostgres, free_port
from enforcer.state import EnforcementState, save_snapshot
from enforcer.synth import Country, CountrySpec, build_country

DEVICES = 20_000
START_MS = 1_790_000_000_000
OUTAGE_S = 4.0
TIMEOUT_S = 90
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
    moments = random.Random(5)  # noqa: S311 - kill moments, not secrets
    with WorkerProcess(country_env, tmp_path / "clock") as worker:
        result = month_under_kills(worker, country_env, sent, START_MS,
                                   KillPlan(2, 1, 1.0, 240), moments)
    assert worker.kills == 3
    assert result.notices > 100 and result.notices_cut == result.notices
    assert result.steps_recorded > 2 * result.notices  # warnings, cutoff SMS, commands
    assert result.clean(), result


def test_the_worker_waits_out_a_broker_outage_and_resumes_by_itself(
        country_env, country, tmp_path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start()
    env = {**country_env, **FAST_RETRIES, "EIR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
    sent = traffic(country, 4000, seed=4, start_ms=START_MS)
    with WorkerProcess(env, tmp_path / "clock") as worker:
        worker.set_time(START_MS + len(sent.messages) + 60_000)
        try:
            outage = through_broker_outage(worker, broker, env, sent, OUTAGE_S, TIMEOUT_S)
        finally:
            broker.stop()
    assert outage.worker_alive
    assert (outage.pairs_missing, outage.first_seen_wrong) == (0, 0)


def test_the_worker_waits_out_a_database_outage_commits_nothing_meanwhile_and_resumes(
        country_env, country, tmp_path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port(), "eir")
    postgres.start()
    migrate(postgres.dsn)
    env = {**country_env, **FAST_RETRIES, "EIR_POSTGRES__DSN": postgres.dsn,
           "EIR_HTTP__PORT": str(free_port())}
    sent = traffic(country, 4000, seed=5, start_ms=START_MS)
    with WorkerProcess(env, tmp_path / "clock") as worker:
        worker.set_time(START_MS + len(sent.messages) + 60_000)
        try:
            outage = through_database_outage(worker, postgres, env, sent, OUTAGE_S, TIMEOUT_S)
        finally:
            postgres.stop()
    assert outage.worker_alive
    assert outage.committed_while_down == 0
    assert outage.not_ready_seen
    assert outage.retries_while_down >= 2  # retried, backing off
    assert (outage.pairs_missing, outage.first_seen_wrong) == (0, 0)
