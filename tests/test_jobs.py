"""Scheduled jobs on the real broker and database: a national snapshot dropped in the drop
directory reaches every worker's decisions; drift between memory and PostgreSQL is found and
repaired; old history months are dropped; one worker at a time runs a job; a failed run is
retried; every run is in job_runs."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import msgspec
import psycopg
import pytest

from enforcer.clock import SystemClock
from enforcer.config import MAX_NICE, ConfigError, load_config
from enforcer.db.history import monthly_partitions
from enforcer.db.jobs import Outcome, recent_runs
from enforcer.db.registry_events import EventRow, Position, store_all
from enforcer.jobs.catalog import first_month_kept
from enforcer.jobs.child import run_child
from enforcer.jobs.reconcile import reconcile
from enforcer.jobs.schedule import Job, JobRunner, cron_trigger
from enforcer.engine.state import StateHolder
from enforcer.files.snapshots import SnapshotConflict
from metrics.worker import WorkerMetrics
from tests.kafkatools import committed, produce, wait_for
from tests.test_decide import BUYER, CLONED, OWNER, SINGLE, STOLEN, make_state
from tests.test_importing import CURRENT_WHITE
from tests.test_lists import GZIP_FAULTS, ZERO_TAC_KEY, full_imei, zero_tac_list
from tests.test_registry_events import registry_event, verdicts_of, with_verdicts
from tests.test_worker import attach, now_ms


def runs(dsn: str, job: str) -> list:
    with psycopg.connect(dsn) as conn:
        return sorted(recent_runs(conn, job), key=lambda r: r.id)


def decided_one(env: dict[str, str]) -> None:
    """One attach decided: the group has settled (see the worker tests)."""
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    before = committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic)
    produce(bootstrap, topic, [attach(SINGLE, OWNER, now_ms())])
    wait_for(lambda: committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic) == before + 1)


def test_a_dropped_black_list_reaches_every_worker(env, worker, tmp_path: Path) -> None:
    with_verdicts(env)
    first = worker()
    second = worker()
    decided_one(env)
    drop = Path(env["EIR_JOBS__DROP_DIR"])
    drop.mkdir()
    (drop / "black-2026-11-23.csv").write_text(
        f"imei,reason\n{STOLEN:014d},stolen\n{CLONED:014d},cloned\n{SINGLE:014d},stolen\n")

    assert first.worker.run_job("reconcile") is Outcome.OK
    assert second.worker.run_job("reconcile") is Outcome.OK
    done = runs(env["EIR_POSTGRES__DSN"], "reconcile")
    assert [(r.outcome, r.counts["imported"], r.counts["adopted"]) for r in done] == [
        ("ok", 1, 0), ("ok", 0, 1)]
    assert (drop / "done" / "black-2026-11-23.csv").exists()
    report = msgspec.json.decode((drop / "done" / "black-2026-11-23.csv.report.json")
                                 .read_bytes())
    assert (report["added"], report["generation"]) == (1, 2)

    first.close()  # the second worker takes every partition and decides alone
    assert ((f"{SINGLE:014d}", str(OWNER), "blacklisted")
            in verdicts_of(env, [attach(SINGLE, OWNER, now_ms())]))


def current_white(env: dict[str, str]) -> Path:
    """The white list's file of the generation CURRENT points at."""
    state = Path(env["EIR_STATE__DIR"])
    generation = json.loads((state / "CURRENT").read_text())["dir"]
    return state / generation / "lists" / "white-low.npy"


def test_a_delivery_whose_import_process_fails_stays_then_is_refused(env, worker,
                                                                       capfd) -> None:
    """A white list's import process cannot read the snapshot: the job fails with a line
    saying why at each attempt, the worker decides as before, and the delivery stays for the
    next run. Once its process failed jobs.import_failures times it is refused with why, and
    the deliveries after it are taken."""
    env["EIR_JOBS__IMPORT_FAILURES"] = "4"  # a run's three attempts, and one of the next
    with_verdicts(env)
    running = worker()
    drop = Path(env["EIR_JOBS__DROP_DIR"])
    drop.mkdir()
    delivery = "".join(f"{full_imei(k)}\n" for k in [*CURRENT_WHITE, ZERO_TAC_KEY])
    (drop / "white-2026-11-23.csv").write_text(delivery)
    white = current_white(env)
    white.rename(white.with_suffix(".aside"))
    assert running.worker.run_job("reconcile") is Outcome.FAILED
    assert runs(env["EIR_POSTGRES__DSN"], "reconcile")[-1].error == "ImportFailed"
    said = [json.loads(line) for line in capfd.readouterr().err.splitlines()
            if '"import failed"' in line]
    assert [line["file"] for line in said] == [str(white)] * 3
    assert (drop / "white-2026-11-23.csv").exists()
    assert ((f"{ZERO_TAC_KEY:014d}", str(BUYER), "no_cartable")
            not in verdicts_of(env, [attach(full_imei(ZERO_TAC_KEY), BUYER, now_ms())]))

    assert running.worker.run_job("reconcile") is Outcome.OK
    report = msgspec.json.decode(
        (drop / "refused" / "white-2026-11-23.csv.report.json").read_bytes())
    assert report["refused"].startswith("its import's process failed 4 times")
    white.with_suffix(".aside").rename(white)
    (drop / "white-2026-11-24.csv").write_text(delivery)
    assert running.worker.run_job("reconcile") is Outcome.OK
    assert (drop / "done" / "white-2026-11-24.csv").exists()
    assert not list(drop.glob(".*"))  # no count of failures left behind
    assert ((f"{ZERO_TAC_KEY:014d}", str(BUYER), "no_cartable")
            in verdicts_of(env, [attach(full_imei(ZERO_TAC_KEY), BUYER, now_ms())]))


def test_a_delivery_whose_import_met_a_conflict_stays_uncounted(tmp_path: Path, policy,
                                                                monkeypatch) -> None:
    """Another process saved the generation the import's process was saving: the job fails
    with SnapshotConflict (its retry imports over the winner), and the delivery stays, with
    no failure counted against it."""
    monkeypatch.setattr("enforcer.jobs.reconcile.CHILD", "tests.harness.jobchild")
    drop = tmp_path / "drop"
    drop.mkdir()
    config = load_config(environ={"EIR_STATE__DIR": str(tmp_path / "state"),
                                  "EIR_JOBS__DROP_DIR": str(drop),
                                  "EIR_JOBS__DROP_SETTLE_S": "0"})
    (drop / "white-2026-11-23.csv").write_text(
        "".join(f"{full_imei(k)}\n" for k in CURRENT_WHITE))
    with pytest.raises(SnapshotConflict, match="saved the generation"):
        reconcile(StateHolder(make_state(policy)), config, SystemClock())
    assert sorted(path.name for path in drop.iterdir()) == ["white-2026-11-23.csv"]


def test_a_jobs_process_runs_nicer_than_its_worker() -> None:
    """On a worker host's few cores the fold's or an import's seconds of work take what the
    worker leaves: the registry thread keeps applying changes within a second."""
    if os.nice(0) + 7 > MAX_NICE:
        pytest.skip("the tests run too nice to tell a nicer process")
    config = load_config(environ={"EIR_JOBS__CHILD_NICE": "7"})
    report = run_child("tests.harness.jobchild", config, ("nice",), RuntimeError)
    assert report == {"nice": os.nice(0) + 7}


def test_a_truncated_snapshot_is_set_aside_and_changes_nothing(env, worker) -> None:
    with_verdicts(env)
    running = worker()
    drop = Path(env["EIR_JOBS__DROP_DIR"])
    drop.mkdir()
    (drop / "white-2026-11-23.csv.gz").write_bytes(b"not gzip")
    (drop / "white-2026-11-24.csv").write_text(f"imei\n{SINGLE:014d}\n")  # 1 of 6 left
    (drop / "owners-late.csv.partial").write_text("still being written")

    assert running.worker.run_job("reconcile") is Outcome.OK
    (run,) = runs(env["EIR_POSTGRES__DSN"], "reconcile")
    assert run.counts == {"adopted": 0, "imported": 0, "refused": 2, "stale_events": 0}
    refused = msgspec.json.decode(
        (drop / "refused" / "white-2026-11-24.csv.report.json").read_bytes())
    assert "shrink" in refused["refused"]
    assert (drop / "owners-late.csv.partial").exists()
    assert ((f"{SINGLE:014d}", str(OWNER), "owner")
            in verdicts_of(env, [attach(SINGLE, OWNER, now_ms())]))


def test_a_delivery_whose_imeis_lost_their_leading_zero_is_refused(env, worker) -> None:
    with_verdicts(env)
    running = worker()
    drop = Path(env["EIR_JOBS__DROP_DIR"])
    drop.mkdir()
    white = "".join(f"{full_imei(k)}\n" for k in CURRENT_WHITE)
    (drop / "white-2026-11-23.csv").write_text(
        white + "".join(f"{full_imei(ZERO_TAC_KEY + i)}\n" for i in range(300)))
    assert running.worker.run_job("reconcile") is Outcome.OK
    # The next day's delivery went through a spreadsheet: 100 of the 300 lost their zero.
    (drop / "white-2026-11-24.csv").write_text(
        white + "".join(f"{line}\n" for line in zero_tac_list()))
    assert running.worker.run_job("reconcile") is Outcome.OK

    imported, refused = runs(env["EIR_POSTGRES__DSN"], "reconcile")
    assert (imported.counts["imported"], refused.counts["refused"]) == (1, 1)
    report = msgspec.json.decode(
        (drop / "refused" / "white-2026-11-24.csv.report.json").read_bytes())
    assert (report["file"]["bad"], report["file"]["leading_zero_stripped"]) == (100, 100)
    assert report["refused"].startswith("100 of 307 rows are bad (32.57%, 100 of them")
    # The owner of a stripped IMEI is not told the device is unregistered.
    assert ((f"{ZERO_TAC_KEY:014d}", str(BUYER), "no_cartable")
            in verdicts_of(env, [attach(full_imei(ZERO_TAC_KEY), BUYER, now_ms())]))


def test_an_unreadable_delivery_is_refused_and_the_next_imported_in_the_same_run(
        env, worker) -> None:
    """The drop directory's poison message: a truncated gzip raised on every run, and every
    delivery after it in name order waited for ever."""
    with_verdicts(env)
    running = worker()
    drop = Path(env["EIR_JOBS__DROP_DIR"])
    drop.mkdir()
    black = f"imei,reason\n{STOLEN:014d},stolen\n{CLONED:014d},cloned\n{SINGLE:014d},stolen\n"
    (drop / "black-2026-11-23.csv.gz").write_bytes(GZIP_FAULTS["truncated.csv.gz"])
    (drop / "black-2026-11-24.csv.gz").write_bytes(GZIP_FAULTS["bad-crc.csv.gz"])
    (drop / "black-2026-11-25.csv").symlink_to("/proc/sys/vm/drop_caches")  # none may read it
    (drop / "black-2026-11-26.csv").write_text(black)

    assert running.worker.run_job("reconcile") is Outcome.OK
    (run,) = runs(env["EIR_POSTGRES__DSN"], "reconcile")
    assert run.counts == {"adopted": 0, "imported": 1, "refused": 3, "stale_events": 0}
    for name, why in (("black-2026-11-23.csv.gz", "truncated gzip"),
                      ("black-2026-11-24.csv.gz", "corrupt gzip (CRC check failed"),
                      ("black-2026-11-25.csv", "Permission denied")):
        assert (drop / "refused" / name).is_file()
        report = msgspec.json.decode((drop / "refused" / f"{name}.report.json").read_bytes())
        assert report["refused"].startswith(f"not readable: {why}")
        assert report["file"]["unreadable"] in report["refused"]
    assert (drop / "done" / "black-2026-11-26.csv").exists()
    assert ((f"{SINGLE:014d}", str(OWNER), "blacklisted")
            in verdicts_of(env, [attach(SINGLE, OWNER, now_ms())]))


def test_a_delivery_gone_between_listing_and_reading_is_refused(tmp_path: Path,
                                                                policy) -> None:
    """The next file is taken away while the one before is imported: its report says so,
    and the one after it is imported in the same run."""
    drop = tmp_path / "drop"
    drop.mkdir()
    config = load_config(environ={"EIR_STATE__DIR": str(tmp_path / "state"),
                                  "EIR_JOBS__DROP_DIR": str(drop),
                                  "EIR_JOBS__DROP_SETTLE_S": "0"})
    for day in (23, 24, 25):
        (drop / f"black-2026-11-{day}.csv").write_text(
            f"{STOLEN:014d},stolen\n{CLONED:014d},cloned\n")
    holder = StateHolder(make_state(policy))

    def take_the_next_away(seconds: float) -> None:
        (drop / "black-2026-11-24.csv").unlink(missing_ok=True)

    counts = reconcile(holder, config, SystemClock(), reloaded=take_the_next_away)
    assert counts == {"adopted": 0, "imported": 2, "refused": 1, "stale_events": 0}
    report = msgspec.json.decode(
        (drop / "refused" / "black-2026-11-24.csv.report.json").read_bytes())
    assert report["refused"] == "not readable: No such file or directory"
    assert sorted(path.name for path in (drop / "done").glob("*.csv")) == [
        "black-2026-11-23.csv", "black-2026-11-25.csv"]
    assert holder.current.generation == 3


def test_drift_from_the_database_is_found_and_repaired(env, worker) -> None:
    with_verdicts(env)
    running = worker()
    decided_one(env)
    # A transfer stored (by a worker of an earlier deployment, under another topic) that
    # this worker never read: memory and database disagree.
    body = msgspec.json.encode(registry_event(
        "lost-1", "ownership_set", imeis=[f"{SINGLE:014d}"], owner_msisdn=str(BUYER),
        via="transfer_direct"))
    with psycopg.connect(env["EIR_POSTGRES__DSN"], autocommit=True) as conn:
        store_all(conn, [EventRow("lost-1", True, None, body,
                                  Position("registry-events-old", 0, 7),
                                  datetime.now(timezone.utc))])
    assert running.worker.run_job("consistency") is Outcome.OK
    assert running.worker.run_job("consistency") is Outcome.OK
    first, second = runs(env["EIR_POSTGRES__DSN"], "consistency")
    assert first.counts["drifted_shards"] >= 1 and first.counts["repaired"] == 1
    assert second.counts["drifted_shards"] == 0 and second.counts["events"] == 1
    metrics = running.worker.metrics.collectors
    assert metrics.get_sample_value("eir_job_items_total", {
        "job_name": "consistency", "item": "repaired"}) == 1
    assert ((f"{SINGLE:014d}", str(BUYER), "owner")
            in verdicts_of(env, [attach(SINGLE, BUYER, now_ms())]))


def test_history_months_past_retention_are_dropped(env, worker) -> None:
    running = worker()
    with psycopg.connect(env["EIR_POSTGRES__DSN"], autocommit=True) as conn:
        for name, start, end in [("slot_usage_2020_01", "2020-01-01", "2020-02-01"),
                                 ("slot_usage_2020_02", "2020-02-01", "2020-03-01"),
                                 ("slot_usage_2020_03", "2020-03-01", "2020-04-01")]:
            conn.execute(f"CREATE TABLE {name} PARTITION OF slot_usage"  # noqa: S608
                         f" FOR VALUES FROM ('{start}') TO ('{end}')")
        # Left detached by a retention run that died before its DROP.
        conn.execute("ALTER TABLE slot_usage DETACH PARTITION slot_usage_2020_03")
    decided_one(env)  # writes this month's partition and row
    assert running.worker.run_job("retention") is Outcome.OK
    with psycopg.connect(env["EIR_POSTGRES__DSN"]) as conn:
        left = [name for _, name, _ in monthly_partitions(conn)]
        rows = conn.execute("SELECT count(*) FROM slot_usage").fetchone()[0]
    today = datetime.now(timezone.utc).date()  # the job's clock
    assert left == [f"slot_usage_{today.year:04d}_{today.month:02d}"] and rows == 1
    (run,) = runs(env["EIR_POSTGRES__DSN"], "retention")
    assert run.counts["slot_usage_partitions_dropped"] == 3
    assert running.worker.metrics.collectors.get_sample_value(
        "eir_job_last_success_timestamp_seconds", {"job_name": "retention"}) > 0


def test_retention_keeps_what_an_accepted_event_could_reach() -> None:
    assert first_month_kept(date(2026, 11, 23), 400, 60) == date(2025, 10, 1)
    assert first_month_kept(date(2026, 11, 23), 10, 60) == date(2026, 9, 1)


def runner(env: dict[str, str], name: str, metrics: WorkerMetrics, **jobs: str) -> JobRunner:
    config = load_config(environ={**env, **{f"EIR_JOBS__{k.upper()}": v for k, v in jobs.items()}})
    return JobRunner(config.jobs, lambda: psycopg.connect(config.postgres.dsn, autocommit=True),
                     name, SystemClock(), metrics.jobs, threading.Event())


def slow_job(seconds: float) -> Job:
    return Job("slow", "", lambda: time.sleep(seconds) or {"slept": 1})


def test_one_worker_at_a_time_runs_a_job(env) -> None:
    metrics = WorkerMetrics()
    outcomes: list[Outcome] = []
    threads = [threading.Thread(target=lambda n=n: outcomes.append(
        runner(env, n, metrics).run(slow_job(1.0)))) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = runs(env["EIR_POSTGRES__DSN"], "slow")
    assert outcomes == [Outcome.OK, Outcome.OK]
    assert {first.worker, second.worker} == {"a", "b"}
    assert second.started_at >= first.ended_at  # the second waited for the first


def test_a_worker_that_cannot_wait_skips_the_run(env) -> None:
    metrics = WorkerMetrics()
    holder = threading.Thread(target=lambda: runner(env, "a", metrics).run(slow_job(2.0)))
    holder.start()
    wait_for(lambda: len(runs(env["EIR_POSTGRES__DSN"], "slow")) == 1, every_s=0.05)
    assert runner(env, "b", metrics, lock_wait_s="0").run(slow_job(0)) is Outcome.SKIPPED
    holder.join()
    outcomes = {r.worker: r.outcome for r in runs(env["EIR_POSTGRES__DSN"], "slow")}
    assert outcomes == {"a": "ok", "b": "skipped"}


def test_a_failed_run_is_retried_and_both_are_recorded(env) -> None:
    metrics = WorkerMetrics()
    tries = []

    def flaky() -> dict[str, int]:
        tries.append(1)
        if len(tries) == 1:
            raise OSError("the drop directory's mount went away")
        return {"done": 1}

    assert runner(env, "a", metrics).run(Job("flaky", "", flaky)) is Outcome.OK
    failed, ok = runs(env["EIR_POSTGRES__DSN"], "flaky")
    assert (failed.outcome, failed.attempt, ok.outcome, ok.attempt) == ("failed", 1, "ok", 2)
    assert "mount went away" in failed.error
    assert metrics.collectors.get_sample_value(
        "eir_job_runs_total", {"job_name": "flaky", "outcome": "failed"}) == 1


def test_a_job_that_keeps_failing_stops_after_its_attempts(env) -> None:
    metrics = WorkerMetrics()
    job = Job("broken", "", lambda: 1 / 0)
    assert runner(env, "a", metrics, attempts="2").run(job) is Outcome.FAILED
    assert [r.outcome for r in runs(env["EIR_POSTGRES__DSN"], "broken")] == ["failed"] * 2


def test_jobs_run_on_their_schedules(env, worker) -> None:
    env["EIR_JOBS__RETENTION_CRON"] = "*/1 * * * * *"  # every second, seconds first
    worker()

    def ended() -> list:  # a run's row is written when it starts: the latest may be running
        return [r for r in runs(env["EIR_POSTGRES__DSN"], "retention") if r.outcome is not None]

    wait_for(lambda: len(ended()) >= 2, timeout_s=20)
    assert {r.outcome for r in ended()} == {"ok"}


def test_a_bad_cron_expression_is_named() -> None:
    with pytest.raises(ConfigError, match="'61 \\* \\* \\* \\*'"):
        cron_trigger("61 * * * *", "Asia/Tehran")
    with pytest.raises(ConfigError, match="5 fields"):
        cron_trigger("daily", "UTC")
    assert cron_trigger("0 3 * * mon-fri", "Asia/Tehran")
