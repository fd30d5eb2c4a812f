"""The notices' rounds on the real database and broker: one PostgreSQL session kept from
round to round (a round runs after every poll that changed something, several a second under
load), and a fresh one after the database went away; serve's following likewise."""

from __future__ import annotations

import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from consumers.kafka import outbox_reader, producer
from consumers.outbox import OutboxRelay
from enforcer.clock import ManualClock, SystemClock
from enforcer.config import load_config
from enforcer.db.connection import LazyConnection, NotAutocommit
from enforcer.db.notices import see
from enforcer.db.migrate import migrate
from enforcer.embedded.services import EmbeddedPostgres, free_port
from enforcer.engine.clones import sims_batch
from enforcer.engine.decide import decide
from enforcer.engine.opening import notice_sightings
from enforcer.engine.state import StateHolder
from enforcer.follow.cutofflist import CutoffList
from enforcer.notices.due import DueSweep
from enforcer.notices.resolve import Resolver
from enforcer.notices.rounds import NoticeRounds, SweepLoop
from metrics.notices import NoticeMetrics
from rules.policy import load_policy
from tests.test_decide import SINGLE, STRANGER, home_imsi, make_state
from tests.kafkatools import wait_for
from tests.test_eic import running_serve
from tests.test_notice_lifecycle import MINUTE, T0

ROUNDS = 5
BACKLOG = 10  # notices due: more than three batches of 3
FOLLOW_GAP_S = 0.3  # more than the 0.2 s serve follows every in these tests


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
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid")]


def test_rounds_keep_one_database_session(env, dsn) -> None:
    with rounds_on(env, dsn) as rounds:
        rounds.start()
        seen = []
        for _ in range(ROUNDS):
            rounds.run_once()
            seen.append(sessions_of(dsn))
    assert len(seen[0]) == 1
    assert seen == [seen[0]] * ROUNDS
    wait_for(lambda: sessions_of(dsn) == [])  # closed with the rounds (a backend ends soon after)


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


def test_a_kept_connection_not_in_autocommit_is_refused_and_closed(dsn) -> None:
    """Its implicit transaction would stay open from round to round (vacuum held back)."""
    kept = LazyConnection(partial(psycopg.connect, dsn))
    with pytest.raises(NotAutocommit):
        kept.connection()
    wait_for(lambda: sessions_of(dsn) == [])


def test_serve_takes_in_the_workers_changes_on_one_database_session(env, dsn, tmp_path) -> None:
    with running_serve(env, tmp_path / "serve.log"):  # follows every 0.2 s
        seen = []
        for _ in range(ROUNDS):
            time.sleep(FOLLOW_GAP_S)
            seen.append(sessions_of(dsn))
    assert len(seen[0]) == 1
    assert seen == [seen[0]] * ROUNDS


def test_a_backlog_of_several_batches_is_swept_on_side_by_side_connections(
        env, dsn, policy) -> None:
    """More than a batch due: the round's connection and notices.sweepers - 1 of their own
    take it all in one sweep, each notice once."""
    sims = [STRANGER + i for i in range(BACKLOG)]
    batch = sims_batch([(SINGLE, int(home_imsi(m)), m, T0) for m in sims], {SINGLE: T0})
    config = load_config(environ={**env, "EIR_NOTICES__BATCH": "3", "EIR_NOTICES__SWEEPERS": "2"})
    metrics = NoticeMetrics(CollectorRegistry())
    holder = StateHolder(make_state(policy))
    sweeper = DueSweep(config.notices, partial(psycopg.connect, dsn, autocommit=True),
                       Resolver(config.notices, ManualClock(T0 + MINUTE), metrics,
                                CutoffList(holder, metrics)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            see(conn, notice_sightings(batch, decide(batch, holder.current)), policy.rules)
        swept = sweeper.sweep_together(conn)
        states = conn.execute("SELECT msisdn, state FROM notices ORDER BY msisdn").fetchall()
    assert swept == BACKLOG
    assert states == [(m, "warned") for m in sims]


class CountedRounds:
    """Stands in for the rounds: the loop's timing alone."""

    def __init__(self) -> None:
        self.runs = 0

    def run_once(self) -> dict[str, int]:
        self.runs += 1
        return {}


def rounds_woken_for(seconds: float, woken_gap_s: float) -> int:
    """Rounds run while the loop is woken every 10 ms for `seconds`."""
    rounds = CountedRounds()
    loop = SweepLoop(rounds, 60.0, woken_gap_s)  # type: ignore[arg-type]
    loop.start()
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        loop.wake()
        time.sleep(0.01)
    loop.stop()
    return rounds.runs


def test_wake_ups_within_the_woken_gap_make_one_round() -> None:
    assert 1 <= rounds_woken_for(1.2, 0.5) <= 3  # one each 0.5 s at most
    assert rounds_woken_for(1.2, 0.0) >= 10  # a round at each wake-up
