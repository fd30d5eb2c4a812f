"""The IMEI status query: every case of the answer, pure; then each case by the command
against the real database, with the registry's changes, clone detection's flags and the
audit row."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from enforcer.clock import MS_PER_DAY
from enforcer.db.clones import record_flags
from enforcer.db.history import EPOCH, HistoryStore
from enforcer.engine.history import Usage
from enforcer.db.registry_events import EventRow, Position, store_all
from enforcer.engine.device import DeviceNow
from enforcer.engine.lists import BlackReason
from enforcer.files.snapshots import save_snapshot
from enforcer.engine.status import ImeiStatus, imei_status
from tests.test_cli import run
from tests.test_decide import (BUYER, DUAL, OWNER, SINGLE, STOLEN, STRANGER, UNOWNED, UNREGISTERED,
                               home_imsi, make_state)

DAY0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
UNOWNED_DUAL = DeviceNow(7, ((0, DUAL[0]), (1, DUAL[1])), None, None)


def used(key: int, msisdn: int, day: int) -> Usage:
    at = DAY0 + timedelta(days=day)
    return Usage(key, int(home_imsi(msisdn)), msisdn, None, at, at, 1)


def test_until_every_slot_is_used_only_the_slots_left_are_told() -> None:
    answer = imei_status(UNOWNED_DUAL, [used(DUAL[0], BUYER, 5), used(DUAL[1], STRANGER, 3)],
                         BUYER, misused=True)
    assert answer.status is ImeiStatus.USE_EVERY_SLOT and answer.slots_left == ((1, DUAL[1]),)
    assert "previous_msisdn" not in answer.as_json()


def test_a_device_in_a_cartable_is_owned_and_no_number_is_told() -> None:
    owned = DeviceNow(7, UNOWNED_DUAL.slots, OWNER, None)
    answer = imei_status(owned, [used(k, BUYER, 5) for k in DUAL] + [used(DUAL[0], OWNER, 1)],
                         BUYER, misused=False)
    assert answer.status is ImeiStatus.OWNED and str(OWNER) not in json.dumps(answer.as_json())


def test_a_black_listed_device_says_so_with_its_reason_even_in_a_cartable() -> None:
    for owner in (None, OWNER):
        stolen = DeviceNow(7, UNOWNED_DUAL.slots, owner, BlackReason.STOLEN)
        answer = imei_status(stolen, [used(k, BUYER, 5) for k in DUAL], BUYER, misused=True)
        assert answer.as_json() == {"status": "blacklisted", "message": "black-listed",
                                    "reason": "stolen"}


def test_a_misused_device_tells_no_number_in_a_cartable_or_not() -> None:
    usage = [used(k, BUYER, 9) for k in DUAL] + [used(DUAL[1], STRANGER, 4)]
    for device in (UNOWNED_DUAL, DeviceNow(7, UNOWNED_DUAL.slots, OWNER, None)):
        answer = imei_status(device, usage, BUYER, misused=True)
        assert answer.status is ImeiStatus.MISUSED
        assert str(STRANGER) not in json.dumps(answer.as_json())


def test_otherwise_the_last_other_sim_and_when() -> None:
    usage = [used(k, BUYER, 9) for k in DUAL] + [used(DUAL[0], OWNER, 2),
                                                 used(DUAL[1], STRANGER, 4)]
    answer = imei_status(UNOWNED_DUAL, usage, BUYER, misused=False)
    assert (answer.status, answer.previous_msisdn) == (ImeiStatus.PREVIOUS_USER, STRANGER)
    assert answer.previous_seen == DAY0 + timedelta(days=4)


def test_no_other_sim_seen() -> None:
    answer = imei_status(UNOWNED_DUAL, [used(k, BUYER, 9) for k in DUAL], BUYER, misused=False)
    assert answer.status is ImeiStatus.NO_PREVIOUS_USER


def seen_on(dsn: str, key: int, sims: tuple[int, ...]) -> datetime:
    """The history: each SIM used the IMEI, a day apart, the last one a day before the
    moment returned: the 15th of this month, or of the last one before this month's 15th
    (one month, whatever the day, and never the future)."""
    today = datetime.now(timezone.utc)
    now = today.replace(day=15)
    if now > today:
        now = (today.replace(day=1) - timedelta(days=1)).replace(day=15)
    with psycopg.connect(dsn) as conn:
        HistoryStore().ensure_partitions(conn, {(now.date().replace(day=1) - EPOCH).days})
        for ago, msisdn in enumerate(reversed(sims), 1):
            conn.execute(
                "INSERT INTO slot_usage (month, imei_key, imsi, msisdn, slot, first_seen,"
                " last_seen, days) VALUES (date_trunc('month', %s)::date, %s, %s, %s, 0, %s,"
                " %s, 1)", (now, key, int(home_imsi(msisdn)), msisdn,
                            now - timedelta(days=ago), now - timedelta(days=ago)))
    return now


def status_by_command(dsn: str, state_dir: Path, key: int, requester: int) -> dict:
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn}
    return json.loads(run("status", f"{key:014d}", "--msisdn", str(requester),
                          "--state", str(state_dir), env=env).stdout)


def audited(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT imei_key, requester, status, revealed, channel"
                            " FROM status_queries ORDER BY id").fetchall()


# (device, SIMs seen on it in order, BUYER last if at all; flagged misused?; the answer
# without its message; the number the audit row records as revealed)
CASES = {
    "use_every_slot": (UNOWNED, (STRANGER,), False, {
        "status": "use_every_slot", "slots_left": [{"slot": 0, "imei": f"{UNOWNED:014d}"}]},
        None),
    "no_previous_user": (UNOWNED, (BUYER,), False, {"status": "no_previous_user"}, None),
    "previous_user": (UNOWNED, (STRANGER, BUYER), False, {"status": "previous_user",
                      "previous_msisdn": str(STRANGER)}, STRANGER),
    "misused": (UNOWNED, (STRANGER, BUYER), True, {"status": "misused"}, None),
    "owned": (SINGLE, (BUYER,), False, {"status": "owned"}, None),
    "blacklisted_in_a_cartable": (STOLEN, (BUYER,), False, {"status": "blacklisted",
                                  "reason": "stolen"}, None),
}


@pytest.mark.parametrize("case", CASES)
def test_each_answer_of_the_command_against_the_database_audited(
        case: str, dsn: str, policy, tmp_path: Path) -> None:
    key, sims, misused, answer, revealed = CASES[case]
    save_snapshot(make_state(policy), tmp_path / "state")
    now = seen_on(dsn, key, sims)
    if misused:  # clone detection's record: a third SIM flagged it
        with psycopg.connect(dsn) as conn:
            record_flags(conn, [(key, "imsis", int(now.timestamp() * 1000),
                                 int(home_imsi(OWNER)), OWNER)])
    got = status_by_command(dsn, tmp_path / "state", key, BUYER)
    got.pop("previous_seen", None)
    assert got.pop("message") and got == {"imei": f"{key:014d}", **answer}
    assert audited(dsn) == [(key, BUYER, answer["status"], revealed, "cli")]


@pytest.mark.parametrize("flag_age_days, status", [(380, "misused"), (500, "previous_user")])
def test_a_flag_ended_hides_the_last_other_sim_while_the_history_may_hold_the_cloner_s(
        flag_age_days: int, status: str, dsn: str, policy, tmp_path: Path) -> None:
    """Flags last 365 days (clones.flag_days), the history keeps 400 (history.keep_days): a
    flag ended 15 days ago still withholds the number; one older than the history, no."""
    save_snapshot(make_state(policy), tmp_path / "state")
    seen_on(dsn, UNOWNED, (STRANGER, BUYER))
    flagged_ms = int(datetime.now(timezone.utc).timestamp() * 1000) - flag_age_days * MS_PER_DAY
    with psycopg.connect(dsn) as conn:  # its age is the command's, told by the real clock
        record_flags(conn, [(UNOWNED, "imsis", flagged_ms, int(home_imsi(OWNER)), OWNER)])
    assert status_by_command(dsn, tmp_path / "state", UNOWNED, BUYER)["status"] == status


def test_the_command_answers_from_history_and_registry_changes_and_audits(
        dsn: str, policy, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_snapshot(make_state(policy), state_dir)
    now = seen_on(dsn, UNOWNED, (STRANGER, BUYER))

    def status() -> dict:
        return status_by_command(dsn, state_dir, UNOWNED, BUYER)

    first = status()
    assert first["status"] == "previous_user" and first["previous_msisdn"] == str(STRANGER)
    with psycopg.connect(dsn) as conn:  # a registry event a worker stored: STRANGER owns it
        conn.execute(
            "INSERT INTO registry_events (event_id, applied, body, source_topic,"
            " source_partition, source_offset, received_at) VALUES ('o1', true, %s, 't', 0, 0,"
            " now())", (json.dumps({
                "event_id": "o1", "type": "ownership_set", "time": int(now.timestamp() * 1000),
                "imeis": [f"{UNOWNED:014d}"], "owner_msisdn": str(STRANGER),
                "via": "activation"}).encode(),))
    assert status()["status"] == "owned"
    assert audited(dsn) == [(UNOWNED, BUYER, "previous_user", STRANGER, "cli"),
                            (UNOWNED, BUYER, "owned", None, "cli")]


def test_stored_events_that_no_longer_apply_leave_the_command_quiet(
        dsn: str, policy, tmp_path: Path) -> None:
    """Trial finding 3: after a new snapshot, each status query printed a line per stored
    event that no longer applied (103). The answer is the worker's; at the default log
    level nothing goes to stderr, and at INFO one line says how many."""
    state_dir = tmp_path / "state"
    save_snapshot(make_state(policy), state_dir)
    now = seen_on(dsn, UNOWNED, (STRANGER, BUYER))
    with psycopg.connect(dsn) as conn:
        # transfers of devices the snapshot does not have
        store_all(conn, [EventRow(f"gone-{i}", True, None, json.dumps({
            "event_id": f"gone-{i}", "type": "ownership_set",
            "time": int(now.timestamp() * 1000), "imeis": [f"{UNREGISTERED + 10 * i:014d}"],
            "owner_msisdn": str(BUYER), "via": "transfer_direct"}).encode(),
            Position("registry-events", 0, i), now) for i in range(100)])
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn}
    args = ("status", f"{UNOWNED:014d}", "--msisdn", str(BUYER), "--state", str(state_dir))
    quiet = run(*args, env=env)
    assert json.loads(quiet.stdout)["previous_msisdn"] == str(STRANGER)
    assert quiet.stderr == ""
    told = [json.loads(line) for line in run("--log-level", "INFO", *args,
                                             env=env).stderr.splitlines()]
    (summary,) = [line for line in told if line["logger"] == "eir.registry"]
    assert (summary["level"], summary["event"], summary["events"]) == (
        "info", "stored registry events no longer apply", 100)
    assert summary["first"][0] == {"event_id": "gone-0",
                                   "error": f"no device with IMEI {UNREGISTERED:014d}"}
