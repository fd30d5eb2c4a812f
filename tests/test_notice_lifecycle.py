"""Notices end to end on the real broker and database, with a clock the test moves: first
sighting, warning, two reminders, cutoff, the next attach refused, the registry's transfer,
restore; the same resolved by an operator SIM; quiet hours; two workers sweeping together."""

from __future__ import annotations

import logging
import os
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import psycopg
import pytest

from enforcer.app.worker import NO_TAC_DATABASE
from enforcer.db.notices import enqueue, see_cut
from enforcer.clock import MS_PER_DAY, MS_PER_S, ManualClock
from enforcer.engine.lists import Lists
from enforcer.engine.noticemessages import OutboxMessage
from enforcer.engine.opening import CutSightings
from enforcer.engine.pairset import PairSet
from enforcer.engine.devices import Cartables, DeviceColumns, DeviceRecord, Source, build_devices
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.engine.subscriber import mask
from rules.policy import Policy
from tests.test_cli import lines, run
from tests.kafkatools import produce, read_all, wait_for
from tests.test_decide import BUYER, OWNER, SINGLE
from tests.test_registry_events import registry_event, verdicts_of, with_verdicts
from tests.test_worker import CLIENTS, attach

MINUTE = 60_000
PHONES = 60
T0 = int(datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Tehran")).timestamp() * MS_PER_S)


def sent(env: dict[str, str], stream: str) -> list[dict]:
    topic = env[f"EIR_KAFKA__{stream.upper()}_TOPIC"]
    return [msgspec.json.decode(m.value) | {"header": dict(m.headers)["idempotency-key"].decode()}
            for m in read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], topic)]


def steps(env: dict[str, str]) -> list[str]:
    return [m["idempotency_key"].split("-", 2)[2] for m in sent(env, "notifications")]


def transitions(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT from_state, to_state, step, reason FROM notice_transitions"
                            " ORDER BY id").fetchall()


def last_seen_is(dsn: str, ts: int) -> bool:
    with psycopg.connect(dsn) as conn:
        (last,) = conn.execute("SELECT max(last_seen) FROM notices").fetchone()
    return last is not None and int(last.timestamp() * MS_PER_S) == ts


def seen_again(env: dict[str, str], ts: int) -> None:
    """The pair attaches again, and the notice has recorded it (else it would lapse)."""
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, BUYER, ts)])
    wait_for(lambda: last_seen_is(env["EIR_POSTGRES__DSN"], ts))


def warned(env: dict[str, str], worker) -> tuple[ManualClock, object]:
    """A worker on a clock at T0, and the buyer's SIM on SINGLE warned; (clock, metrics)."""
    with_verdicts(env)
    clock = ManualClock(T0)
    metrics = worker(clock).worker.metrics.collectors
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, BUYER, T0)])
    wait_for(lambda: steps(env) == ["warning"])
    return clock, metrics


def after_a_round(metrics) -> None:
    """Wait until a sweep round has started and ended after now."""
    done = metrics.get_sample_value("eir_notice_rounds_total") or 0
    wait_for(lambda: (metrics.get_sample_value("eir_notice_rounds_total") or 0) >= done + 2)


def at_day(clock: ManualClock, day: float) -> None:
    clock.advance(T0 + int(day * MS_PER_DAY) - clock.now_ms())


@pytest.mark.parametrize("client", CLIENTS)
def test_warning_reminders_cutoff_then_a_transfer_restores(env, worker, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    clock, metrics = warned(env, worker)
    warning = sent(env, "notifications")[0]
    assert (warning["msisdn"], warning["imei"], warning["deadline"]) == (
        str(BUYER), f"{SINGLE:014d}", "2026-12-23T06:30:00+00:00")
    assert "۲ دی ۱۴۰۵" in warning["text"]  # 2026-12-23 in the Persian calendar
    assert warning["header"] == warning["idempotency_key"]

    at_day(clock, 23 + 1 / 1440)
    wait_for(lambda: steps(env) == ["warning", "reminder-1"])
    seen_again(env, clock.now_ms())
    at_day(clock, 29 + 1 / 1440)
    wait_for(lambda: steps(env) == ["warning", "reminder-1", "reminder-2"])
    at_day(clock, 30 + 1 / 1440)
    wait_for(lambda: len(sent(env, "commands")) == 1)
    (cutoff,) = sent(env, "commands")
    assert (cutoff["action"], cutoff["scope"], cutoff["imei"], cutoff["msisdn"]) == (
        "cutoff", "pair", f"{SINGLE:014d}", str(BUYER))
    assert ((f"{SINGLE:014d}", str(BUYER), "cut_off")
            in verdicts_of(env, [attach(SINGLE, BUYER, clock.now_ms())]))
    kind = {"kind": "ownership_transfer"}
    assert metrics.get_sample_value("eir_notice_steps_total", kind | {"step": "cutoff"}) == 1
    assert metrics.get_sample_value("eir_cutoffs", {"scope": "pair"}) == 1
    assert metrics.get_sample_value("eir_notices", kind | {"state": "cut"}) == 1
    assert metrics.get_sample_value("eir_outbox_backlog") == 0

    produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [registry_event(
        "transfer-1", "ownership_set", imeis=[f"{SINGLE:014d}"], owner_msisdn=str(BUYER),
        via="transfer_direct") | {"time": clock.now_ms()}])
    wait_for(lambda: len(sent(env, "commands")) == 2)
    restore = sent(env, "commands")[1]
    assert (restore["action"], restore["notice_id"]) == ("restore", cutoff["notice_id"])
    assert steps(env) == ["warning", "reminder-1", "reminder-2", "cutoff", "resolved"]
    wait_for(lambda: metrics.get_sample_value("eir_cutoffs", {"scope": "pair"}) == 0)
    assert ((f"{SINGLE:014d}", str(BUYER), "owner")
            in verdicts_of(env, [attach(SINGLE, BUYER, clock.now_ms())]))
    assert transitions(env["EIR_POSTGRES__DSN"]) == [
        (None, "open", None, None), ("open", "warned", "warning", None),
        ("warned", "reminded", "reminder", None), ("reminded", "reminded", "reminder", None),
        ("reminded", "cut", "cutoff", None), ("cut", "cancelled", "resolved", "owner")]


def test_a_cut_pair_not_seen_for_a_year_is_released_and_starts_again(env, worker) -> None:
    """notices.cut_idle_days (365) after the pair's last attempt, refused, its cut notice
    lapses and a restore command goes, without SMS; the pair's next attach is warned
    again, as a device new to the network."""
    clock, metrics = warned(env, worker)
    at_day(clock, 29 + 1 / 1440)
    wait_for(lambda: steps(env) == ["warning", "reminder-2"])
    seen_again(env, clock.now_ms())
    at_day(clock, 30 + 1 / 1440)
    wait_for(lambda: [m["action"] for m in sent(env, "commands")] == ["cutoff"])
    at_day(clock, 100)
    refused = clock.now_ms()
    assert ((f"{SINGLE:014d}", str(BUYER), "cut_off")
            in verdicts_of(env, [attach(SINGLE, BUYER, refused)]))
    wait_for(lambda: last_seen_is(env["EIR_POSTGRES__DSN"], refused))
    at_day(clock, 30 + 365 + 1 / 1440)  # a year after the cut, but not after the attempt
    after_a_round(metrics)
    assert [m["action"] for m in sent(env, "commands")] == ["cutoff"]
    at_day(clock, 100 + 365 + 1 / 1440)
    wait_for(lambda: [m["action"] for m in sent(env, "commands")] == ["cutoff", "restore"])
    release = sent(env, "commands")[1]
    assert release["idempotency_key"].endswith("-released")
    assert steps(env) == ["warning", "reminder-2", "cutoff"]  # no SMS to a SIM gone a year
    assert transitions(env["EIR_POSTGRES__DSN"])[-1] == ("cut", "lapsed", "released", "not_seen")
    wait_for(lambda: metrics.get_sample_value("eir_cutoffs", {"scope": "pair"}) == 0)
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, BUYER, clock.now_ms())])
    wait_for(lambda: steps(env) == ["warning", "reminder-2", "cutoff", "warning"])


def test_an_operator_sim_set_for_a_cut_pair_restores_it(env, worker) -> None:
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    clock, metrics = warned(env, worker)
    at_day(clock, 29.5)  # nobody swept since the warning: of the two reminders, the latest
    wait_for(lambda: steps(env) == ["warning", "reminder-2"])
    seen_again(env, clock.now_ms())
    at_day(clock, 30 + 1 / 1440)  # the deadline; its SMS waits a day after the reminder's
    after_a_round(metrics)
    assert sent(env, "commands") == []
    at_day(clock, 30.5 + 1 / 1440)
    wait_for(lambda: [m["action"] for m in sent(env, "commands")] == ["cutoff"])
    produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [registry_event(
        "opsim-1", "operator_sim_set", imei=f"{SINGLE:014d}", msisdn=str(BUYER))
        | {"time": clock.now_ms()}])
    wait_for(lambda: [m["action"] for m in sent(env, "commands")] == ["cutoff", "restore"])
    assert steps(env) == ["warning", "reminder-2", "cutoff", "resolved"]
    assert ((f"{SINGLE:014d}", str(BUYER), "owner")
            in verdicts_of(env, [attach(SINGLE, BUYER, clock.now_ms())]))


def test_sms_wait_for_the_end_of_the_quiet_hours(env, worker) -> None:
    env.update({"EIR_NOTICES__QUIET_START": "22:00", "EIR_NOTICES__QUIET_END": "08:00"})
    night = T0 + 13 * 60 * MINUTE  # 23:00 in Tehran
    clock = ManualClock(night)
    metrics = worker(clock).worker.metrics.collectors
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, BUYER, night)])
    wait_for(lambda: len(transitions(env["EIR_POSTGRES__DSN"])) == 1)  # opened
    clock.advance(8 * 60 * MINUTE + 59 * MINUTE)  # 07:59
    after_a_round(metrics)
    assert steps(env) == [] and len(transitions(env["EIR_POSTGRES__DSN"])) == 1  # held
    clock.advance(MINUTE)  # 08:00
    wait_for(lambda: steps(env) == ["warning"])


def test_sweeps_longer_than_their_interval_follow_each_other_without_a_warning(
        env, worker, caplog) -> None:
    """Trial finding 4: whenever a round outlasted notices.sweep_every_s, the scheduler logged
    "skipped: maximum number of running instances reached" (six times across the demo's
    panel). Here every round outlasts it: they follow each other, each step still taken once,
    and nothing is logged but what the Kafka client says of its own I/O under load."""
    env["EIR_NOTICES__SWEEP_EVERY_S"] = "0.001"
    clock, metrics = warned(env, worker)
    caplog.clear()  # what the worker says at start (no TAC database, no blocked TACs) is no round's
    rounds = metrics.get_sample_value("eir_notice_rounds_total")
    wait_for(lambda: metrics.get_sample_value("eir_notice_rounds_total") >= rounds + 50)
    at_day(clock, 29 + 1 / 1440)
    wait_for(lambda: steps(env) == ["warning", "reminder-2"])
    assert [(r.name, r.getMessage()) for r in caplog.records
            if r.levelno >= logging.WARNING and not r.name.startswith("kafka")
            and r.getMessage() != NO_TAC_DATABASE] == []


def phones_of_owner(env: dict[str, str], policy: Policy) -> list[int]:
    """The worker's snapshot: PHONES single-SIM phones in OWNER's cartable."""
    keys = [SINGLE + i for i in range(PHONES)]
    lists = Lists.build(2, bitmap_from_sorted_keys(np.array(keys, np.uint64)))
    columns = DeviceColumns.from_records([DeviceRecord((key,), OWNER, Source.IMPORT,
                                                       date(2024, 3, 1)) for key in keys])
    owners = Cartables.from_links(np.array([OWNER], np.uint64), np.array([1], np.uint32))
    devices, _ = build_devices(lists.white_index, columns, owners, PairSet.empty())
    save_snapshot(EnforcementState(lists, devices, policy), Path(env["EIR_STATE__DIR"]))
    return keys


def test_two_workers_sweeping_together_send_each_step_once(env, worker, policy) -> None:
    # A buyer to each phone: one SIM on a phone is no clone (sixty on one would flag it, and
    # misuse notices would take the transfer ones over).
    phones = phones_of_owner(env, policy)
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    clock = ManualClock(T0)
    worker(clock)
    worker(clock)
    buyers = [BUYER + i for i in range(PHONES)]
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(phone, buyer, T0) for phone, buyer in zip(phones, buyers)])
    wait_for(lambda: len(sent(env, "notifications")) >= PHONES)
    at_day(clock, 23 + 1 / 1440)
    wait_for(lambda: len({m["idempotency_key"] for m in sent(env, "notifications")})
             >= 2 * PHONES)
    keys = {m["idempotency_key"] for m in sent(env, "notifications")}
    assert len(keys) == 2 * PHONES  # a key may come twice after a failed flush, never a step twice
    with psycopg.connect(env["EIR_POSTGRES__DSN"]) as conn:
        (steps_recorded,) = conn.execute("SELECT count(*) FROM notice_transitions"
                                         " WHERE step IS NOT NULL").fetchone()
    assert steps_recorded == 2 * PHONES
    assert {(m["kind"], m["msisdn"]) for m in sent(env, "notifications")} == {
        ("ownership_transfer", str(buyer)) for buyer in buyers}
    assert sorted(key.split("-", 2)[2] for key in keys) == (["reminder-1"] * PHONES
                                                            + ["warning"] * PHONES)


def test_the_noc_lists_shows_and_cancels_notices(env, worker) -> None:
    clock = ManualClock(T0)
    worker(clock)
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, BUYER, T0), attach(SINGLE, BUYER + 1, T0)])
    wait_for(lambda: len(steps(env)) == 2)
    cli_env = {**os.environ, "EIR_POSTGRES__DSN": env["EIR_POSTGRES__DSN"]}
    listed = lines(run("notices", "list", "--state", "warned", "--msisdn", str(BUYER),
                       env=cli_env).stdout)
    assert [(n["state"], n["imei"], n["msisdn"]) for n in listed] == [
        ("warned", f"{SINGLE:014d}", mask(BUYER))]
    notice_id = listed[0]["id"]
    shown = lines(run("notices", "show", str(notice_id), "--reveal", env=cli_env).stdout)[0]
    assert shown["msisdn"] == str(BUYER)
    assert [(t["from"], t["to"], t["step"]) for t in shown["transitions"]] == [
        (None, "open", None), ("open", "warned", "warning")]
    assert [m["idempotency_key"] for m in shown["messages"]] == [f"notice-{notice_id}-warning"]
    # What the SMS says, as sent (trial finding 10: by key only).
    warning = next(m for m in sent(env, "notifications") if m["notice_id"] == notice_id)
    assert (shown["messages"][0]["text"], shown["messages"][0]["language"]) == (
        warning["text"], warning["language"])

    at_day(clock, 29.5)
    wait_for(lambda: len(steps(env)) == 4)  # each notice's latest reminder
    seen_again(env, clock.now_ms())
    at_day(clock, 30.5 + 1 / 1440)  # a day after the reminders: the cutoff and its SMS
    wait_for(lambda: len(sent(env, "commands")) == 1)  # the other pair lapsed, unseen
    cancelled = lines(run("notices", "cancel", str(notice_id), "--reason", "court ruling",
                          env=cli_env).stdout)[0]
    assert cancelled["state"] == "cancelled"
    wait_for(lambda: [m["action"] for m in sent(env, "commands")] == ["cutoff", "restore"])
    again = run("notices", "cancel", str(notice_id), "--reason", "twice", check=False,
                env=cli_env)
    assert again.returncode == 2 and "not live" in again.stderr


def test_a_started_worker_counts_what_waits_in_the_outbox_before_its_first_round(
        env, worker) -> None:
    """Messages a worker stopped before relaying (an operator's cancel, a crash): the
    backlog gauges say so from the start, not 0 until the first round (a trial finding)."""
    env["EIR_NOTICES__SWEEP_EVERY_S"] = "3600"  # no round in this test
    with psycopg.connect(env["EIR_POSTGRES__DSN"], autocommit=True) as conn:
        enqueue(conn, [OutboxMessage("commands", b"k", f"notice-{i}-restore", b"{}")
                       for i in range(2)], T0)
    metrics = worker(ManualClock(T0 + 90 * MS_PER_S)).worker.metrics.collectors
    assert metrics.get_sample_value("eir_outbox_backlog") == 2
    assert metrics.get_sample_value("eir_outbox_oldest_age_seconds") == 90
    assert (metrics.get_sample_value("eir_notice_rounds_total") or 0) == 0


def test_a_refused_attach_moves_its_cut_notices_last_sighting_and_never_waits(dsn) -> None:
    """db.notices.see_cut: a pair-scoped cut notice is seen by its SIM only, an IMEI-scoped
    one by any SIM on the IMEI (at the latest time), an earlier time moves nothing back, and
    a notice another transaction holds is skipped at once."""
    at = datetime(2026, 11, 1, tzinfo=ZoneInfo("UTC"))
    pair, imei, held = 35000000000001, 35000000000002, 35000000000003
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key, subject in ((pair, 432110000000001), (imei, 0), (held, 432110000000003)):
            conn.execute(
                "INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule,"
                " state, opened_at, deadline, last_seen, reminder_days, sms)"
                " VALUES ('k', %s, %s, %s, 1, 1, 'r', 'cut', %s, %s, %s, '{}', true)",
                ("imei" if subject == 0 else "pair", key, subject, at, at, at))
        t0 = int(at.timestamp() * MS_PER_S)
        sightings = CutSightings(
            np.array([pair, pair, imei, imei, held], np.uint64),
            np.array([432110000000001, 432110000000009, 432110000000007, 432110000000008,
                      432110000000003], np.uint64),
            np.array([t0 + 5_000, t0 + 9_000, t0 + 3_000, t0 + 4_000, t0 + 6_000], np.int64))
        with psycopg.connect(dsn) as other:
            other.execute("SELECT 1 FROM notices WHERE imei_key = %s FOR UPDATE", (held,))
            conn.execute("SET statement_timeout = '5s'")  # it would wait for ever otherwise
            with conn.transaction():
                see_cut(conn, sightings)
            other.rollback()
        with conn.transaction():
            see_cut(conn, CutSightings(np.array([pair], np.uint64),
                                       np.array([432110000000001], np.uint64),
                                       np.array([t0 - 100_000], np.int64)))
        seen = {key: int(last.timestamp() * MS_PER_S) - t0 for key, last in conn.execute(
            "SELECT imei_key, last_seen FROM notices")}
    assert seen == {pair: 5_000, imei: 4_000, held: 0}
