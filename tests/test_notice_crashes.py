"""A real worker process killed (SIGKILL) at each step of a notice's life and started again:
afterwards every step is on its topic, each under one idempotency key, none missing."""

from __future__ import annotations

import psycopg

from enforcer.clock import MS_PER_DAY
from tests.harness.faults import WorkerProcess
from tests.kafkatools import produce, wait_for
from tests.test_decide import BUYER, SINGLE
from tests.test_notice_lifecycle import T0, last_seen_is, sent
from tests.test_registry_events import registry_event
from tests.test_worker import attach


def recorded_steps(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [s for (s,) in conn.execute(
            "SELECT step FROM notice_transitions WHERE step IS NOT NULL ORDER BY id")]


def keys(env: dict[str, str], stream: str) -> list[str]:
    return [m["idempotency_key"] for m in sent(env, stream)]


def test_killed_at_every_step_boundary_each_step_is_sent_under_one_key(env, tmp_path) -> None:
    dsn, bootstrap = env["EIR_POSTGRES__DSN"], env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    worker = WorkerProcess(env, tmp_path / "clock")
    worker.set_time(T0)
    worker.start()
    try:
        produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [attach(SINGLE, BUYER, T0)])
        wait_for(lambda: recorded_steps(dsn) == ["warning"])
        worker.restart()  # the warning recorded; published or not
        wait_for(lambda: len(set(keys(env, "notifications"))) == 1)

        worker.set_time(T0 + 23 * MS_PER_DAY + 60_000)
        wait_for(lambda: recorded_steps(dsn) == ["warning", "reminder"])
        worker.restart()
        wait_for(lambda: len(set(keys(env, "notifications"))) == 2)
        seen = T0 + 23 * MS_PER_DAY + 120_000
        produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [attach(SINGLE, BUYER, seen)])
        wait_for(lambda: last_seen_is(dsn, seen))

        worker.kill()  # down across the second reminder and the deadline
        worker.set_time(T0 + 30 * MS_PER_DAY + 60_000)
        worker.start()
        wait_for(lambda: recorded_steps(dsn)[-1:] == ["cutoff"])
        worker.restart()
        wait_for(lambda: len(set(keys(env, "commands"))) == 1)

        produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [registry_event(
            "transfer-9", "ownership_set", imeis=[f"{SINGLE:014d}"], owner_msisdn=str(BUYER),
            via="transfer_direct") | {"time": T0 + 30 * MS_PER_DAY}])
        wait_for(lambda: recorded_steps(dsn)[-1:] == ["resolved"])
        worker.restart()
        wait_for(lambda: len(set(keys(env, "commands"))) == 2)
    finally:
        worker.kill()
    notifications = sorted(set(keys(env, "notifications")))
    assert [k.split("-", 2)[2] for k in notifications] == [
        "cutoff", "reminder-1", "resolved", "warning"]  # the second reminder was overtaken
    assert [k.split("-", 2)[2] for k in sorted(set(keys(env, "commands")))] == [
        "cutoff", "resolved"]
    assert recorded_steps(dsn) == ["warning", "reminder", "cutoff", "resolved"]
