"""What people read of a device's model: the JSON of `check` (and of `history`, `status`,
`notices show`, tested with the services they read) and the name an SMS gives it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import psycopg

from enforcer.engine.devicemodel import MODEL_CHARS, model_json, model_name
from enforcer.engine.tacblocks import BlockedTacs
from enforcer.engine.tacs import DEVICE_TYPES, UNKNOWN_DEVICE_TYPE, Rat, TacDatabase
from enforcer.files.snapshots import load_tac_parts
from tests.kafkatools import produce, wait_for
from tests.test_cli import lines, run
from tests.test_decide import BUYER, DUAL, OWNER, UNOWNED, UNREGISTERED, home_imsi
from tests.test_importing import import_, state_dir  # noqa: F401  (a fixture)
from tests.test_lists import full_imei
from tests.test_notice_lifecycle import sent
from tests.test_tacblocks import blocked_file
from tests.test_tacs import COUNTRY_TACS
from tests.test_worker import attach, now_ms

NOKIA = 35111111000000  # UNOWNED's TAC in COUNTRY_TACS: Nokia 105, a feature phone, GSM


def database(*entries: tuple[int, str, str]) -> TacDatabase:
    return TacDatabase.build(np.array([t for t, _, _ in entries], np.uint32),
                             np.full(len(entries), int(Rat.GERAN), np.uint8),
                             np.full(len(entries), DEVICE_TYPES.index("smartphone"), np.uint8),
                             [m for _, m, _ in entries], [n for _, _, n in entries])


def test_a_model_is_named_by_make_and_model_once() -> None:
    tacs = database((35111111, "Nokia", "105"), (35222222, "Apple Inc", "Apple iPhone 12"),
                    (35333333, "", "Redmi 9"), (35444444, "Samsung Korea", "Galaxy " + "X" * 40))
    assert model_name(tacs, 35111111000000) == "Nokia 105"
    assert model_name(tacs, 35222222000000) == "Apple iPhone 12"  # not "Apple Inc Apple …"
    assert model_name(tacs, 35333333000000) == "Redmi 9"
    long = model_name(tacs, 35444444000000)
    assert long is not None and len(long) <= MODEL_CHARS and long.endswith("X...")
    assert model_name(tacs, 35999999000000) is None  # not allocated
    assert model_name(None, 35111111000000) is None  # no database


def test_the_model_json_says_what_is_known_of_the_tac() -> None:
    tacs = database((35111111, "Nokia", "105"))
    blocked = BlockedTacs.build(np.array([35111111, 35999999], np.uint32),
                                np.array([1, 0], np.uint8))
    assert model_json(None, None, NOKIA) is None
    assert model_json(tacs, None, NOKIA) == {
        "tac": "35111111", "manufacturer": "Nokia", "model": "105",
        "device_type": "smartphone", "rats": ["GERAN"], "allocated": True, "blocked": None}
    assert model_json(tacs, blocked, NOKIA)["blocked"] == "recalled"  # type: ignore[index]
    assert model_json(tacs, blocked, UNREGISTERED) == {
        "tac": "35999999", "manufacturer": None, "model": None, "device_type": None,
        "rats": None, "allocated": False, "blocked": "not_type_approved"}
    assert model_json(None, blocked, 10**6)["tac"] == "00000001"  # type: ignore


def test_device_types_are_looked_up_per_imei() -> None:
    tacs = database((35111111, "Nokia", "105"))
    assert tacs.device_types(np.array([NOKIA, UNREGISTERED, 2**64 - 1], np.uint64)).tolist() == [
        DEVICE_TYPES.index("smartphone"), UNKNOWN_DEVICE_TYPE, UNKNOWN_DEVICE_TYPE]
    assert TacDatabase.empty().device_types(np.array([NOKIA], np.uint64)).tolist() == [
        UNKNOWN_DEVICE_TYPE]


def test_check_shows_the_model_once_a_tac_database_or_blocked_list_is_imported(
        state_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    def check(imei: int) -> dict:
        return json.loads(run("check", "--imei", f"{imei:014d}", "--imsi", home_imsi(BUYER),
                              "--msisdn", str(BUYER), "--state", str(state_dir)).stdout)

    assert check(UNOWNED)["model"] is None
    tacs, blocked = tmp_path / "tac.csv", tmp_path / "blocked.csv"
    tacs.write_text(COUNTRY_TACS)
    blocked.write_text(blocked_file([(35111111, "recalled")]))
    assert import_(state_dir, "tac", tacs).returncode == 0
    assert import_(state_dir, "tac_blocked", blocked).returncode == 0
    shown = check(UNOWNED)
    assert (shown["model"]["manufacturer"], shown["model"]["model"],
            shown["model"]["device_type"], shown["model"]["blocked"], shown["rule"]) == (
        "Nokia", "105", "feature_phone", "recalled", "model_blocked")
    assert check(DUAL[0])["model"]["model"] == "Galaxy S21"
    parts = load_tac_parts(state_dir)
    assert parts[0] is not None and parts[1] is not None
    assert load_tac_parts(tmp_path / "nowhere") == (None, None)


def test_a_snapshot_without_tac_parts_has_none(state_dir: Path) -> None:  # noqa: F811
    assert load_tac_parts(state_dir) == (None, None)




def test_history_status_notices_sms_and_metrics_name_the_model(env, worker, dsn,
                                                               tmp_path: Path) -> None:
    """On the real broker and database, with the TAC database and a blocked list imported
    as an operator does: a recalled Nokia 105 attaches, and its model is in what people
    read: the SMS, `history`, `status`, `notices show`, the metrics by device type."""
    tacs, blocked = tmp_path / "tac.csv", tmp_path / "blocked.csv"
    tacs.write_text(COUNTRY_TACS)
    blocked.write_text(blocked_file([(35111111, "recalled")]))
    state = Path(env["EIR_STATE__DIR"])
    assert import_(state, "tac", tacs).returncode == 0
    assert import_(state, "tac_blocked", blocked).returncode == 0
    running = worker()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(full_imei(UNOWNED), BUYER, now_ms()),
             attach(full_imei(DUAL[0]), OWNER, now_ms())])
    wait_for(lambda: any(m["kind"] == "model_blocked" for m in sent(env, "notifications")))
    (sms,) = [m for m in sent(env, "notifications") if m["kind"] == "model_blocked"]
    assert "(Nokia 105، شناسه" in sms["text"]  # notices.language fa
    metrics = running.worker.metrics.collectors
    wait_for(lambda: metrics.get_sample_value("eir_events_by_device_type_total", {
        "device_type": "feature_phone", "verdict": "GREYLISTED"}) == 1)
    assert metrics.get_sample_value("eir_events_by_device_type_total", {
        "device_type": "smartphone", "verdict": "WHITELISTED"}) == 1

    cli_env = {**os.environ, **env}
    history = json.loads(run("history", f"{UNOWNED:014d}", env=cli_env).stdout)
    assert [(s["model"]["model"], s["model"]["blocked"]) for s in history["slots"]] == [
        ("105", "recalled")]
    status = json.loads(run("status", f"{UNOWNED:014d}", "--msisdn", str(BUYER),
                            env=cli_env).stdout)
    assert (status["model"]["manufacturer"], status["model"]["device_type"]) == (
        "Nokia", "feature_phone")
    with psycopg.connect(dsn) as conn:
        (notice_id,) = conn.execute("SELECT id FROM notices WHERE kind = 'model_blocked'"
                                    ).fetchone()
    shown = lines(run("notices", "show", str(notice_id), env=cli_env).stdout)[0]
    assert (shown["model"]["model"], shown["model"]["blocked"]) == ("105", "recalled")


def test_a_worker_without_blocked_tacs_warns_once_at_start(env, worker, caplog) -> None:
    worker()
    warned = [r for r in caplog.records if r.getMessage().startswith("no blocked TACs")]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
