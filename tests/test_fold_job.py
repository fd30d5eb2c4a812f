"""The fold job on the real broker and database: the registry's changes laid into the next
snapshot generation keep deciding every attach, another worker adopts it, a restart reads
only what was stored after it, retention prunes what no generation needs, and a fold and a
national import running together lose neither's changes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg

from enforcer.db.jobs import Outcome
from enforcer.files.snapshots import load_snapshot, snapshot_generation
from rules.policy import load_policy
from tests.kafkatools import produce, wait_for
from tests.test_decide import BUYER, CLONED, OWNER, SINGLE, STOLEN, STRANGER
from tests.test_jobs import decided_one, runs

from tests.test_registry_events import (NEW_IMEIS, applied, registry_event, verdicts_of,
                                        with_verdicts)
from tests.test_worker import attach, now_ms


def stored_events(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [event_id for (event_id,) in conn.execute(
            "SELECT event_id FROM registry_events ORDER BY seq")]


def gauge(running, name: str) -> float:
    return running.worker.metrics.collectors.get_sample_value(name)


def send(env: dict[str, str], *events: dict[str, object]) -> None:
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"],
            list(events), key=b"registry")


def transferred(env: dict[str, str], worker):
    """One worker that has applied one transfer of SINGLE to BUYER."""
    with_verdicts(env)
    running = worker()
    decided_one(env)
    send(env, registry_event("t1", "ownership_set", imeis=[str(SINGLE)],
                             owner_msisdn=str(BUYER), via="transfer_direct"))
    wait_for(lambda: applied(running) == 1)
    return running


def test_folded_changes_survive_pruning_and_restarts(env, worker) -> None:
    with_verdicts(env)
    first = worker()
    decided_one(env)
    send(env, registry_event("r1", "device_registered", device_id="D9", imeis=list(NEW_IMEIS),
                             source="passenger"),
         registry_event("r2", "ownership_set", imeis=[str(SINGLE)], owner_msisdn=str(BUYER),
                        via="transfer_direct"))
    wait_for(lambda: applied(first) == 2)
    assert first.worker.run_job("fold") is Outcome.OK
    state_dir = Path(env["EIR_STATE__DIR"])
    assert snapshot_generation(state_dir) == 2
    folded = load_snapshot(state_dir, load_policy())
    assert (0, 2) in folded.watermark.values() and folded.devices.ids.get("D9") is not None

    # After the fold: an event naming the folded device by its id alone.
    send(env, registry_event("r3", "ownership_set", device_id="D9", owner_msisdn=str(OWNER),
                             via="activation"))
    wait_for(lambda: applied(first) == 3)
    assert first.worker.run_job("fold") is Outcome.OK
    assert snapshot_generation(state_dir) == 3
    assert [r.counts["events"] for r in runs(env["EIR_POSTGRES__DSN"], "fold")] == [2, 1]

    # Generation 1 is gone from disk once the worker's next attaches have moved its clone
    # window to generation 3 (nothing maps it any more): what generation 2 holds is read by
    # nobody again, but the partition's last event, against which a restart checks the topic.
    decided_one(env)
    assert first.worker.run_job("retention") is Outcome.OK
    assert sorted(p.name for p in state_dir.glob("gen-*")) == ["gen-00000002", "gen-00000003"]
    assert stored_events(env["EIR_POSTGRES__DSN"]) == ["r3"]

    first.close()
    worker()  # restarted: generation 3, nothing stored after its watermark
    t = now_ms()
    got = verdicts_of(env, [attach(SINGLE, BUYER, t), attach(SINGLE, OWNER, t),
                            attach(NEW_IMEIS[0], OWNER, t), attach(NEW_IMEIS[1], BUYER, t)])
    assert got >= {(f"{SINGLE:014d}", str(BUYER), "owner"),
                   (f"{SINGLE:014d}", str(OWNER), "other_cartable"),
                   (NEW_IMEIS[0], str(OWNER), "owner"),
                   (NEW_IMEIS[1], str(BUYER), "other_cartable")}


def test_another_worker_adopts_a_fold_and_skips_what_it_holds(env, worker) -> None:
    with_verdicts(env)
    first, second = worker(), worker()
    decided_one(env)
    send(env, registry_event("t1", "ownership_set", imeis=[str(SINGLE)],
                             owner_msisdn=str(BUYER), via="transfer_direct"))
    wait_for(lambda: applied(first) + applied(second) >= 1)
    wait_for(lambda: gauge(first, "eir_registry_overlay_entries") == 1
             and gauge(second, "eir_registry_overlay_entries") == 1)
    assert first.worker.run_job("fold") is Outcome.OK
    assert second.worker.run_job("reconcile") is Outcome.OK
    assert [r.counts["adopted"] for r in runs(env["EIR_POSTGRES__DSN"], "reconcile")] == [1]
    for running in (first, second):
        assert gauge(running, "eir_lists_generation") == 2
        assert gauge(running, "eir_registry_overlay_entries") == 0
    first.close()  # the second decides alone, from the folded snapshot
    assert ((f"{SINGLE:014d}", str(BUYER), "owner")
            in verdicts_of(env, [attach(SINGLE, BUYER, now_ms())]))


def test_a_fold_and_an_import_together_lose_neither(env, worker) -> None:
    running = transferred(env, worker)
    drop = Path(env["EIR_JOBS__DROP_DIR"])
    drop.mkdir()
    (drop / "black-2026-11-29.csv").write_text(
        f"imei,reason\n{STOLEN:014d},stolen\n{CLONED:014d},cloned\n"
        f"{NEW_IMEIS[0]},stolen\n")
    outcomes: dict[str, Outcome] = {}
    jobs = [threading.Thread(target=lambda name=name: outcomes.__setitem__(
        name, running.worker.run_job(name))) for name in ("fold", "reconcile")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert outcomes == {"fold": Outcome.OK, "reconcile": Outcome.OK}
    state_dir = Path(env["EIR_STATE__DIR"])
    assert snapshot_generation(state_dir) == 3  # one after the other, whichever first
    assert gauge(running, "eir_lists_generation") == 3
    running.close()
    worker()
    t = now_ms()
    got = verdicts_of(env, [attach(SINGLE, BUYER, t), attach(NEW_IMEIS[0], STRANGER, t)])
    assert got >= {(f"{SINGLE:014d}", str(BUYER), "owner"),
                   (NEW_IMEIS[0], str(STRANGER), "blacklisted")}


def test_a_fold_whose_process_fails_is_recorded_and_changes_nothing(env, worker,
                                                                      capfd) -> None:
    """The fold's own process cannot read the snapshot: the job fails with one line saying
    why, the worker keeps its generation and the change, and the next fold saves it."""
    running = transferred(env, worker)
    white = next(Path(env["EIR_STATE__DIR"]).glob("gen-*/lists/white-low.npy"))
    white.rename(white.with_suffix(".aside"))
    assert running.worker.run_job("fold") is Outcome.FAILED
    assert runs(env["EIR_POSTGRES__DSN"], "fold")[-1].error == "FoldFailed"
    said = [json.loads(line) for line in capfd.readouterr().err.splitlines()
            if '"fold failed"' in line]
    assert said and said[0]["file"] == str(white)
    assert gauge(running, "eir_lists_generation") == 1
    assert gauge(running, "eir_registry_overlay_entries") == 1
    white.with_suffix(".aside").rename(white)
    assert running.worker.run_job("fold") is Outcome.OK
    assert snapshot_generation(Path(env["EIR_STATE__DIR"])) == 2
    assert ((f"{SINGLE:014d}", str(BUYER), "owner")
            in verdicts_of(env, [attach(SINGLE, BUYER, now_ms())]))
