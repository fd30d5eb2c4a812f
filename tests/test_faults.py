"""Faults with real processes: a worker SIGKILLed at random moments through a notices'
month, the broker stopped and started under a running worker, the database stopped and
started under it. Nothing is lost and no step is sent twice. (bench/faults.py runs the first
at a million events and ten kills.) And the audit's rule: every subject past its deadline is
cut under one notice or another."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from enforcer.db.migrate import migrate
from tests.harness.faults import (KillPlan, NoticeSeen, WorkerProcess, cut_under, month_under_kills,
                                  through_broker_outage, through_database_outage, traffic)
from enforcer.embedded.services import EmbeddedBroker, EmbeddedPostgres, free_port
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.embedded.synth import Country, CountrySpec, build_country

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
    save_snapshot(EnforcementState(country.lists, country.devices, policy),
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
    assert result.notices > 100
    assert result.notices_cut + result.notices_superseded == result.notices
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


IMEI, OTHER_IMEI, SIM, OTHER_SIM = 35209900176148, 35209900176149, 432111234567890, 432111234567891
DAY = 86_400_000


def test_a_pair_whose_transfer_notice_was_superseded_is_held_to_its_misuse_cut() -> None:
    notices = [NoticeSeen(1, "ownership_transfer", "superseded", IMEI, SIM, 30 * DAY, 2),
               NoticeSeen(2, "misuse", "cut", IMEI, SIM, 7 * DAY, None),
               NoticeSeen(3, "ownership_transfer", "cut", IMEI, OTHER_SIM, 30 * DAY, None)]
    assert cut_under(notices, 31 * DAY) == ({"misuse": 1, "ownership_transfer": 1}, 0)


def test_a_pair_cut_under_no_notice_is_missing_whatever_closed_its_own() -> None:
    for state in ("cancelled", "lapsed", "warned"):
        notices = [NoticeSeen(1, "ownership_transfer", state, IMEI, SIM, 30 * DAY, None)]
        assert cut_under(notices, 31 * DAY) == ({}, 1)
    superseded_uncut = [NoticeSeen(1, "ownership_transfer", "superseded", IMEI, SIM, 3, 2),
                        NoticeSeen(2, "misuse", "cancelled", IMEI, SIM, 7 * DAY, None)]
    assert cut_under(superseded_uncut, 31 * DAY) == ({}, 1)


def test_a_pair_is_held_by_its_imei_cut_and_a_chain_not_due_yet_owes_nothing() -> None:
    notices = [NoticeSeen(1, "unregistered", "cut", OTHER_IMEI, 0, 30 * DAY, None),
               NoticeSeen(2, "misuse", "lapsed", OTHER_IMEI, SIM, 7 * DAY, None),
               NoticeSeen(3, "ownership_transfer", "superseded", IMEI, SIM, 3, 4),
               NoticeSeen(4, "misuse", "warned", IMEI, SIM, 40 * DAY, None)]
    assert cut_under(notices, 31 * DAY) == ({"unregistered": 2}, 0)
