"""The IMEI status query: every case of the answer, pure; then the command against the real
database, with the registry's changes and the audit row."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from enforcer.db.history import EPOCH, HistoryStore, Usage
from enforcer.device import DeviceNow
from enforcer.lists import BlackReason
from enforcer.state import save_snapshot
from enforcer.status import Status, imei_status
from tests.test_cli import run
from tests.test_decide import BUYER, DUAL, OWNER, STRANGER, UNOWNED, home_imsi, make_state

DAY0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
UNOWNED_DUAL = DeviceNow(7, ((0, DUAL[0]), (1, DUAL[1])), None, None)


def used(key: int, msisdn: int, day: int) -> Usage:
    at = DAY0 + timedelta(days=day)
    return Usage(key, int(home_imsi(msisdn)), msisdn, None, at, at, 1)


def test_until_every_slot_is_used_only_the_slots_left_are_told() -> None:
    answer = imei_status(UNOWNED_DUAL, [used(DUAL[0], BUYER, 5), used(DUAL[1], STRANGER, 3)],
                         BUYER)
    assert answer.status is Status.USE_EVERY_SLOT and answer.slots_left == ((1, DUAL[1]),)
    assert "previous_msisdn" not in answer.as_json()


def test_a_device_in_a_cartable_is_owned_and_no_number_is_told() -> None:
    owned = DeviceNow(7, UNOWNED_DUAL.slots, OWNER, None)
    answer = imei_status(owned, [used(k, BUYER, 5) for k in DUAL] + [used(DUAL[0], OWNER, 1)],
                         BUYER)
    assert answer.status is Status.OWNED and str(OWNER) not in json.dumps(answer.as_json())


def test_a_black_listed_device_says_so() -> None:
    stolen = DeviceNow(7, UNOWNED_DUAL.slots, None, BlackReason.STOLEN)
    answer = imei_status(stolen, [used(k, BUYER, 5) for k in DUAL], BUYER)
    assert answer.as_json()["status"] == "blacklisted" and answer.as_json()["reason"] == "stolen"


def test_otherwise_the_last_other_sim_and_when() -> None:
    usage = [used(k, BUYER, 9) for k in DUAL] + [used(DUAL[0], OWNER, 2),
                                                  used(DUAL[1], STRANGER, 4)]
    answer = imei_status(UNOWNED_DUAL, usage, BUYER)
    assert (answer.status, answer.previous_msisdn) == (Status.PREVIOUS_USER, STRANGER)
    assert answer.previous_seen == DAY0 + timedelta(days=4)


def test_no_other_sim_seen() -> None:
    answer = imei_status(UNOWNED_DUAL, [used(k, BUYER, 9) for k in DUAL], BUYER)
    assert answer.status is Status.NO_PREVIOUS_USER


def test_the_command_answers_from_history_and_registry_changes_and_audits(
        dsn: str, policy, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_snapshot(make_state(policy), state_dir)
    now = datetime.now(timezone.utc).replace(day=15)  # one month, whatever the day
    with psycopg.connect(dsn) as conn:
        HistoryStore().ensure_partitions(conn, {(now.date().replace(day=1) - EPOCH).days})
        for msisdn, ago in ((STRANGER, 3), (BUYER, 1)):
            conn.execute(
                "INSERT INTO slot_usage (month, imei_key, imsi, msisdn, slot, first_seen,"
                " last_seen, days) VALUES (date_trunc('month', %s)::date, %s, %s, %s, 0, %s,"
                " %s, 1)", (now, UNOWNED, int(home_imsi(msisdn)), msisdn,
                            now - timedelta(days=ago), now - timedelta(days=ago)))
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn}

    def status() -> dict:
        return json.loads(run("status", f"{UNOWNED:014d}", "--msisdn", str(BUYER),
                              "--state", str(state_dir), env=env).stdout)

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
    with psycopg.connect(dsn) as conn:
        audit = conn.execute("SELECT imei_key, requester, status, revealed, channel"
                             " FROM status_queries ORDER BY id").fetchall()
    assert audit == [(UNOWNED, BUYER, "previous_user", STRANGER, "cli"),
                     (UNOWNED, BUYER, "owned", None, "cli")]
