"""The notices' rounds on the real database and broker: one PostgreSQL session kept from
round to round (a round runs after every poll that changed something, several a second under
load), and a fresh one after the database went away."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from consumers.kafka import outbox_reader, producer
from consumers.outbox import OutboxRelay
from enforcer.clock import SystemClock
from enforcer.config import load_config
from enforcer.db.migrate import migrate
from enforcer.embedded.services import EmbeddedPostgres, free_port
from enforcer.engine.state import StateHolder
from enforcer.notices.rounds import NoticeRounds
from metrics.notices import NoticeMetrics
from rules.policy import load_policy
from tests.test_decide import make_state

ROUNDS = 5


@contextmanager
def rounds_on(env: dict[str, str], dsn: str) -> Iterator[NoticeRounds]:
    config = load_config(environ={**env, "EIR_POSTGRES__DSN": dsn})
    metrics = NoticeMetrics(CollectorRegistry())
    messages = producer(config.kafka)
    relay = OutboxRelay(config, SystemClock(), metrics, messages, outbox_reader(config.kafka))
    rounds = NoticeRounds(config, StateHolder(make_state(load_policy())), SystemClock(),
                          metrics, partial(psycopg.connect, dsn, autocommit=True), relay)
    try:
        yield rounds
    finally:
        rounds.close()
        messages.close()


def sessions_of(dsn: str) -> list[int]:
    """The backends connected to the database, other than the one asking."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() ORDER BY pid")]


def test_rounds_keep_one_database_session(env, dsn) -> None:
    with rounds_on(env, dsn) as rounds:
        rounds.start()
        seen = []
        for _ in range(ROUNDS):
            rounds.run_once()
            seen.append(sessions_of(dsn))
    assert len(seen[0]) == 1
    assert seen == [seen[0]] * ROUNDS
    assert sessions_of(dsn) == []  # closed with the rounds


def test_a_round_after_the_database_came_back_runs_on_a_fresh_session(
        env, tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", free_port(), "eir")
    postgres.start()
    try:
        migrate(postgres.dsn)
        with rounds_on(env, postgres.dsn) as rounds:
            rounds.run_once()
            before = sessions_of(postgres.dsn)
            postgres.stop()
            postgres.start()
            with pytest.raises(psycopg.OperationalError):
                rounds.run_once()  # on the session the restart ended: the round fails
            rounds.run_once()
            after = sessions_of(postgres.dsn)
    finally:
        postgres.stop()
    assert len(before) == len(after) == 1
    assert before != after
