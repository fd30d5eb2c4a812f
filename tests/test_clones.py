"""Clone detection: the window's threshold and forgetting, operators and cells, placeholder
IMEIs left out, the owner protected; then end to end, a third SIM on a phone flags it and
warns every SIM but the owner's, a SIM holding an older notice on it included (that notice
superseded, not cancelled), and a worker that has not followed the flag yet leaves the
misuse notices standing."""

from __future__ import annotations

import os
from dataclasses import replace

from functools import partial
from pathlib import Path

import numpy as np
import psycopg
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from enforcer.clock import MS_PER_DAY, ManualClock
from enforcer.engine.clones import (NOT_MISUSED, REASONS, CellSites, CloneRules, CloneWindow,
                                    Misused, WindowSightings, sightings_of, sims_batch)
from enforcer.config import load_config
from enforcer.db.clones import FlagRow, record_flags
from enforcer.db.notices import see
from enforcer.engine.decide import decide
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.imei import ImeiRules, parse_imei
from enforcer.engine.subscriber import parse_imsi
from enforcer.files.tacfile import TacFileReader
from enforcer.engine.keyindex import ABSENT, KeyIndex
from enforcer.engine.opening import notice_sightings
from enforcer.engine.state import StateHolder
from enforcer.follow.cutofflist import CutoffList
from enforcer.notices.due import DueSweep
from enforcer.notices.flags import CloneTracker
from enforcer.notices.resolve import Resolver
from metrics.notices import NoticeMetrics
from metrics.worker import WorkerMetrics
from tests.kafkatools import produce, wait_for
from tests.test_cli import lines, run
from tests.test_decide import (BUYER, HELPER, OWNER, SINGLE, SPOUSE, STRANGER, UNOWNED,
                               attach as decided, full, home_imsi, make_state, state)
from tests.test_tacs import COUNTRY_TACS
from tests.test_notice_lifecycle import T0, at_day, sent, steps
from tests.test_worker import attach, ending_within_a_month_ms, now_ms

__all__ = ["state"]  # the fixture, shared with test_decide

RULES = CloneRules(distinct_imsis=3, window_days=20, operators_within_minutes=10,
                   far_cells_km=300.0, far_cells_within_minutes=10,
                   rat_inconsistent_attaches=2)
DAY0 = 20_400 * MS_PER_DAY
MINUTE = 60_000
CELLS = CellSites.of({"tehran": (35.69, 51.39), "karaj": (35.84, 51.01),
                      "mashhad": (36.30, 59.61)})
TEHRAN, NEAR_TEHRAN, MASHHAD = (CELLS.codes[c] for c in ("tehran", "karaj", "mashhad"))


def window(rules: CloneRules = RULES) -> CloneWindow:
    keys = np.arange(10, dtype=np.uint64) * np.uint64(1000) + np.uint64(35_000_000_000_000)
    return CloneWindow(KeyIndex.from_sorted_keys(keys), rules, CELLS)


def seen(*events: tuple) -> WindowSightings:
    """(row, imsi, ts_ms[, operator, cell]) each."""
    full_events = [e + (0, 0)[len(e) - 3:] for e in events]
    row, imsi, ts, operator, cell = zip(*full_events)
    return WindowSightings(np.array(row, np.int64), np.array(imsi, np.uint64),
                           np.array(ts, np.int64), np.array(operator, np.uint32),
                           np.array(cell, np.uint32))


def flagged(w: CloneWindow, *events: tuple) -> list[tuple[int, str]]:
    flags = w.observe(seen(*events))
    return [(e, REASONS[r].value) for e, r in zip(flags.event.tolist(), flags.reason.tolist())]


def misused_by(*keys: int, ms: int = DAY0) -> Misused:
    return NOT_MISUSED.with_flags(list(keys), [ms] * len(keys), 0)


def test_the_third_sim_within_the_window_flags_the_imei() -> None:
    w = window()
    assert flagged(w, (1, 11, DAY0), (1, 12, DAY0 + MS_PER_DAY)) == []
    assert flagged(w, (1, 11, DAY0 + 2 * MS_PER_DAY)) == []  # a SIM seen again is no new one
    assert flagged(w, (1, 13, DAY0 + 3 * MS_PER_DAY)) == [(0, "imsis")]


def test_three_sims_in_one_batch_flag_at_the_third() -> None:
    w = window()
    assert flagged(w, (2, 21, DAY0), (2, 22, DAY0 + 1), (2, 23, DAY0 + 2),
                   (2, 24, DAY0 + 3)) == [(2, "imsis")]


def test_a_sim_that_left_the_window_is_forgotten() -> None:
    w = window()
    flagged(w, (1, 11, DAY0), (1, 12, DAY0 + MS_PER_DAY))
    assert flagged(w, (1, 13, DAY0 + 20 * MS_PER_DAY)) == []  # SIM 11 was 20 days ago
    late = window()
    flagged(late, (1, 11, DAY0), (1, 12, DAY0 + MS_PER_DAY))
    assert flagged(late, (1, 13, DAY0 + 19 * MS_PER_DAY)) == [(0, "imsis")]


def test_a_replayed_batch_flags_again_and_nothing_more() -> None:
    w = window()
    batch = ((3, 31, DAY0), (3, 32, DAY0 + 1), (3, 33, DAY0 + 2))
    assert flagged(w, *batch) == [(2, "imsis")]
    assert flagged(w, *batch) == [(2, "imsis")]
    assert flagged(w, (3, 31, DAY0 + 5), (3, 32, DAY0 + 6)) == []


def test_the_threshold_is_the_policys() -> None:
    w = window(replace(RULES, distinct_imsis=2))
    assert flagged(w, (1, 11, DAY0), (1, 12, DAY0 + 1)) == [(1, "imsis")]


def test_two_operators_within_minutes_flag_the_imei() -> None:
    w = window()
    assert flagged(w, (4, 41, DAY0, 43211)) == []
    assert flagged(w, (4, 41, DAY0 + 5 * MINUTE, 43235)) == [(0, "operators")]
    later = window()
    flagged(later, (4, 41, DAY0, 43211))
    assert flagged(later, (4, 41, DAY0 + 60 * MINUTE, 43235)) == []


def test_far_apart_cells_within_minutes_flag_the_imei() -> None:
    w = window()
    assert flagged(w, (5, 51, DAY0, 0, TEHRAN), (5, 51, DAY0 + 3 * MINUTE, 0, NEAR_TEHRAN)) == []
    assert flagged(w, (5, 51, DAY0 + 8 * MINUTE, 0, MASHHAD)) == [(0, "cells")]
    assert CELLS.distance_km(np.array([TEHRAN]), np.array([MASHHAD]))[0] > 700


def off_radio(w: CloneWindow, *events: tuple) -> list[tuple[int, str]]:
    """Flags of attaches (row, imsi, ts_ms) each on a radio its model lacks."""
    flags = w.observe(replace(seen(*events), off_radio=np.ones(len(events), dtype=bool)))
    return [(e, REASONS[r].value) for e, r in zip(flags.event.tolist(), flags.reason.tolist())]


def test_attaches_on_a_radio_the_model_lacks_flag_the_imei_at_the_policys_count() -> None:
    w = window()
    assert off_radio(w, (6, 61, DAY0)) == []
    assert flagged(w, (6, 61, DAY0 + MINUTE)) == []  # on a radio it has: not counted
    assert off_radio(w, (6, 61, DAY0 + 2 * MINUTE)) == [(0, "rat")]
    at_once = window(replace(RULES, rat_inconsistent_attaches=1))
    assert off_radio(at_once, (6, 61, DAY0)) == [(0, "rat")]
    off = window(replace(RULES, rat_inconsistent_attaches=0))
    assert off_radio(off, *((6, 61, DAY0 + i * MINUTE) for i in range(5))) == []


def test_attaches_off_radio_count_once_a_minute_and_within_the_window() -> None:
    w = window()
    assert off_radio(w, (7, 71, DAY0), (7, 71, DAY0 + 1_000)) == []  # the same minute
    assert off_radio(w, (7, 71, DAY0 + 21 * MS_PER_DAY)) == []  # the count began again
    assert off_radio(w, (7, 71, DAY0 + 22 * MS_PER_DAY), (8, 81, DAY0 + 22 * MS_PER_DAY)) == [
        (0, "rat")]
    in_one_batch = window()
    assert off_radio(in_one_batch, (7, 71, DAY0), (7, 72, DAY0 + MINUTE),
                     (7, 73, DAY0 + 2 * MINUTE)) == [(1, "rat")]


def test_a_replayed_batch_off_radio_flags_again_and_nothing_more() -> None:
    w = window()
    batch = ((9, 91, DAY0), (9, 91, DAY0 + MINUTE))
    assert off_radio(w, *batch) == [(1, "rat")]
    assert off_radio(w, *batch) == [(0, "rat")]  # the IMEI, as the first time
    once = window()
    assert off_radio(once, (9, 91, DAY0)) == []
    assert off_radio(once, (9, 91, DAY0)) == []  # replayed: still one attach


def test_the_window_compares_each_attachs_radio_with_its_models(tmp_path) -> None:
    tac_file = tmp_path / "tac.csv"
    tac_file.write_text(COUNTRY_TACS)
    tacs, _ = TacFileReader(chunk_lines=10, report_limit=5).read(tac_file)
    nokia, samsung = 35111111000000, 35209900176148  # GSM only; LTE and NR
    index = KeyIndex.from_sorted_keys(np.array([nokia, samsung], dtype=np.uint64))
    events = [AttachEvent(parse_imei(f"{key:014d}", ImeiRules((), frozenset())),
                          parse_imsi(home_imsi(OWNER)), OWNER, DAY0, rat=rat)
              for key, rat in ((nokia, "LTE"), (nokia, "GERAN"), (nokia, None),
                               (samsung, "NR"), (samsung, "GERAN"))]
    batch = AttachBatch.from_events(events)
    assert sightings_of(batch, index, CELLS, tacs).off_radio.tolist() == [
        True, False, False, False, True]
    assert not sightings_of(batch, index, CELLS).off_radio.any()  # no database: none


def test_a_window_on_a_new_generation_keeps_what_it_saw() -> None:
    w = window()
    flagged(w, (1, 11, DAY0), (1, 12, DAY0 + 1))
    old_keys = w.index.keys()
    moved = w.rebase(KeyIndex.from_sorted_keys(np.sort(np.r_[old_keys, np.uint64(1)])))
    assert flagged(moved, (2, 13, DAY0 + 2)) == [(0, "imsis")]  # row 1 is now row 2


def test_placeholder_and_test_imeis_are_not_clones(state, rules) -> None:
    placeholder = 499901064000  # 004999010640000 without its check digit
    index = KeyIndex.from_sorted_keys(np.array([placeholder, SINGLE], dtype=np.uint64))
    batch = AttachBatch(
        imei_key=np.array([placeholder] * 4 + [SINGLE], np.uint64),
        malformed=np.array([True] * 4 + [False]), imsi=np.arange(1, 6, dtype=np.uint64),
        mcc=np.full(5, 432, np.uint16), msisdn=np.arange(1, 6, dtype=np.uint64),
        ts_ms=np.full(5, DAY0, np.int64), emergency=np.zeros(5, bool))
    seen_ = sightings_of(batch, index, CELLS)
    assert seen_.row.tolist() == [ABSENT] * 4 + [1]
    assert len(CloneWindow(index, RULES).observe(seen_)) == 0


def test_on_a_misused_imei_the_owner_keeps_working_and_others_get_a_misuse_notice(
        state, rules) -> None:
    misused = replace(state, misused=misused_by(SINGLE))
    assert decided(misused, rules, full(SINGLE), OWNER).rule == "owner"
    assert decided(misused, rules, full(SINGLE), SPOUSE).rule == "owner"  # the owner's cartable
    other = decided(misused, rules, full(SINGLE), STRANGER)
    assert (other.rule, other.verdict.value) == ("misuse", "GREYLISTED")
    assert (other.notice.kind, other.notice.scope.value) == ("misuse", "pair")
    in_a_week = decided(misused, rules, full(SINGLE), STRANGER, ts=DAY0)
    assert in_a_week.notice.deadline_ms == DAY0 + 7 * MS_PER_DAY


def test_misused_is_looked_up_per_imei() -> None:
    flags = misused_by(5, 9).with_flags([7], [DAY0], 0)
    assert flags.holds(np.array([5, 6, 7, 9, 10], np.uint64), np.full(5, DAY0), 0).tolist() == [
        True, False, True, True, False]


def test_a_flag_holds_for_its_life_from_its_attach_and_a_later_flag_renews_it() -> None:
    life = 10 * MS_PER_DAY
    flags = misused_by(5, 9)
    keys = np.array([5, 9], np.uint64)
    assert flags.holds(keys, np.full(2, DAY0 + life - 1), life).tolist() == [True, True]
    assert flags.holds(keys, np.full(2, DAY0 + life), life).tolist() == [False, False]
    assert flags.holds(keys, np.full(2, DAY0 + life), 0).tolist() == [True, True]  # for ever
    renewed = flags.with_flags([9], [DAY0 + life], life)
    assert renewed.holds(keys, np.full(2, DAY0 + life), life).tolist() == [False, True]
    assert renewed.with_flags([9], [DAY0], life).flagged_ms.tolist() == [DAY0, DAY0 + life]


def test_flags_that_ended_a_life_before_the_latest_are_dropped() -> None:
    life = 10 * MS_PER_DAY
    flags = misused_by(5, 9).with_flags([7], [DAY0 + 2 * life - 1], life)
    assert flags.keys.tolist() == [5, 7, 9]
    assert flags.with_flags([8], [DAY0 + 2 * life], life).keys.tolist() == [7, 8]
    assert flags.with_flags([8], [DAY0 + 2 * life], 0).keys.tolist() == [5, 7, 8, 9]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 40)), max_size=30),
       st.integers(0, 40), st.sampled_from([0, 5, 10]))
def test_misused_holds_what_the_latest_flag_of_each_key_says(flags, at, life_days) -> None:
    """Against a dict of each key's latest flag, whatever order the flags come in."""
    life = life_days * MS_PER_DAY
    misused, latest = NOT_MISUSED, {}
    for key, day in flags:
        misused = misused.with_flags([key], [DAY0 + day * MS_PER_DAY], life)
        latest[key] = max(latest.get(key, 0), DAY0 + day * MS_PER_DAY)
    keys = np.arange(21, dtype=np.uint64)
    ts = DAY0 + at * MS_PER_DAY
    newest = max(latest.values(), default=0)
    expected = [k in latest and (not life or ts < latest[k] + life) for k in range(21)]
    # A flag dropped ended a life before the newest: only an attach that old could miss it.
    judged = [k for k in range(21) if not life or ts >= newest - life]
    held = misused.holds(keys, np.full(21, ts), life).tolist()
    assert [held[k] for k in judged] == [expected[k] for k in judged]


# --- end to end: the worker, the broker, the database ----------------------------------------

def test_a_third_sim_flags_the_phone_and_warns_every_sim_but_the_owners(env, worker,
                                                                        dsn) -> None:
    running = worker()
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    t = now_ms()
    produce(bootstrap, topic, [attach(SINGLE, OWNER, t - 3 * 3_600_000),
                               attach(SINGLE, STRANGER, t - 2 * 3_600_000)])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM slot_usage") == 2)
    produce(bootstrap, topic, [attach(SINGLE, BUYER, t)])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM notices WHERE kind = 'misuse'") == 2)

    with psycopg.connect(dsn) as conn:
        notices = conn.execute("SELECT msisdn, scope FROM notices WHERE kind = 'misuse'"
                               " ORDER BY msisdn").fetchall()
        flags = conn.execute("SELECT imei_key, reason, msisdn FROM clone_flags").fetchall()
    assert notices == [(BUYER, "pair"), (STRANGER, "pair")]  # not the owner
    assert flags == [(SINGLE, "imsis", BUYER)]
    wait_for(lambda: {m["msisdn"] for m in sent(env, "notifications")
                      if m["kind"] == "misuse"} == {str(BUYER), str(STRANGER)})
    collectors = running.worker.metrics.collectors
    assert collectors.get_sample_value("eir_clone_flags_total", {"reason": "imsis"}) == 1
    assert collectors.get_sample_value("eir_clones_flagged") == 1

    listed = lines(run("clones", "list", env={**os.environ, **env}).stdout)
    assert [(c["imei"], c["reason"]) for c in listed] == [(f"{SINGLE:014d}", "imsis")]
    assert "*" in listed[0]["msisdn"]  # masked unless --reveal


def test_a_gsm_only_phone_attaching_on_lte_is_flagged_and_recorded(env, worker, dsn,
                                                                    tmp_path) -> None:
    """On the real broker and database, after `registry import --kind tac`: UNOWNED, a
    GSM-only model, attaches twice on LTE (the policy's two), its IMEI is flagged misused
    for its radio, recorded in clone_flags and listed by `clones list`."""
    tac_file = tmp_path / "tac.csv"
    tac_file.write_text(COUNTRY_TACS)
    done = run("registry", "import", str(tac_file), "--kind", "tac",
               "--state", env["EIR_STATE__DIR"], check=False)
    assert done.returncode == 0, done.stderr
    running = worker()
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    t = ending_within_a_month_ms(10 * MINUTE)  # one slot_usage row: one month
    produce(bootstrap, topic, [attach(UNOWNED, BUYER, t - 10 * MINUTE, rat="GERAN"),
                               attach(UNOWNED, BUYER, t - 5 * MINUTE, rat="LTE")])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM slot_usage") == 1)
    assert _count(dsn, "SELECT count(*) FROM clone_flags") == 0  # one attach off radio
    produce(bootstrap, topic, [attach(UNOWNED, BUYER, t, rat="EUTRA")])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM clone_flags") == 1)
    with psycopg.connect(dsn) as conn:
        flags = conn.execute("SELECT imei_key, reason, msisdn FROM clone_flags").fetchall()
    assert flags == [(UNOWNED, "rat", BUYER)]
    collectors = running.worker.metrics.collectors  # counted once the batch is durable
    wait_for(lambda: collectors.get_sample_value("eir_clone_flags_total",
                                                 {"reason": "rat"}) == 1)
    listed = lines(run("clones", "list", env={**os.environ, **env}).stdout)
    assert [(c["imei"], c["reason"]) for c in listed] == [(f"{UNOWNED:014d}", "rat")]


def test_a_flag_ends_after_flag_days_and_a_clone_still_seen_is_flagged_anew(
        env, worker, dsn, tmp_path) -> None:
    """Flags of 20 days (attaches accepted up to 19 days late): 25 days after the flag, a new
    SIM on the IMEI is judged as on any owned phone (an ownership-transfer notice, not a
    misuse one); three SIMs within the window then flag it again, and the row says so."""
    text = (Path(__file__).parents[1] / "rules" / "default.toml").read_text()
    assert "\nflag_days = 365\n" in text
    (tmp_path / "policy.toml").write_text(text.replace("\nflag_days = 365\n",
                                                       "\nflag_days = 20\n"))
    env["EIR_POLICY__FILE"] = str(tmp_path / "policy.toml")
    env["EIR_WORKER__MAX_EVENT_AGE_DAYS"] = "19"
    t = now_ms()
    clock = ManualClock(t)
    running = worker(clock)
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    produce(bootstrap, topic, [attach(SINGLE, OWNER, t), attach(SINGLE, STRANGER, t + 1),
                               attach(SINGLE, BUYER, t + 2)])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM clone_flags") == 1)

    later = t + 25 * MS_PER_DAY
    clock.advance(later - clock.now_ms())
    produce(bootstrap, topic, [attach(SINGLE, HELPER, later)])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM notices WHERE msisdn = %s", HELPER) == 1)
    with psycopg.connect(dsn) as conn:
        (kind,) = conn.execute("SELECT kind FROM notices WHERE msisdn = %s", (HELPER,)).fetchone()
    assert kind == "ownership_transfer"

    produce(bootstrap, topic, [attach(SINGLE, STRANGER, later + 1),
                               attach(SINGLE, BUYER, later + 2)])
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM clone_flags"
                                 " WHERE flagged_at >= to_timestamp(%s)", later / 1000) == 1)
    clock.advance(MINUTE)  # the warning is due at the attach, a moment after the clock
    wait_for(lambda: _count(dsn, "SELECT count(*) FROM notices WHERE kind = 'misuse'"
                                 " AND msisdn = %s AND state = 'warned'", HELPER) == 1)
    collectors = running.worker.metrics.collectors
    assert collectors.get_sample_value("eir_clone_flags_total", {"reason": "imsis"}) == 2


def test_a_worker_refuses_flags_a_late_attach_could_outlive(env, tmp_path) -> None:
    """clones.flag_days no longer than worker.max_event_age_days: exit 2, one line."""
    text = (Path(__file__).parents[1] / "rules" / "default.toml").read_text()
    (tmp_path / "policy.toml").write_text(text.replace("\nflag_days = 365\n",
                                                       "\nflag_days = 60\n"))
    done = run("run", check=False,
               env={**os.environ, **env, "EIR_POLICY__FILE": str(tmp_path / "policy.toml"),
                    "EIR_WORKER__MAX_EVENT_AGE_DAYS": "60"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "eir-enforcer: clones.flag_days: more than worker.max_event_age_days (60), or a late"
        " attach could be judged by a flag this worker has dropped"]


def test_a_flag_in_its_last_grace_is_raised_again_when_the_window_sees_the_clone(
        policy) -> None:
    """A misuse notice (7 days' grace) opened on a 20-day flag must find it at its deadline:
    three SIMs seen with 15 days of the flag left raise nothing new; with 6 left, a flag."""
    twenty = replace(policy, clones=replace(policy.clones, flag_days=20))
    state = replace(make_state(twenty), misused=misused_by(SINGLE))
    sims = (STRANGER, BUYER, HELPER)

    def seen_on_day(day: int) -> list[FlagRow]:
        batch = AttachBatch(
            imei_key=np.full(3, SINGLE, np.uint64), malformed=np.zeros(3, bool),
            imsi=np.array([int(home_imsi(m)) for m in sims], np.uint64),
            mcc=np.full(3, twenty.home_mcc[0], np.uint16), msisdn=np.array(sims, np.uint64),
            ts_ms=np.full(3, DAY0 + day * MS_PER_DAY, np.int64), emergency=np.zeros(3, bool))
        tracker = CloneTracker(load_config(environ={}), WorkerMetrics())
        return list(tracker.observe(batch, state)[1].rows)

    assert seen_on_day(5) == []
    assert [(key, ms) for key, _, ms, _, _ in seen_on_day(14)] == [
        (SINGLE, DAY0 + 14 * MS_PER_DAY)]


def _count(dsn: str, sql: str, *params: object) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_a_flag_leaves_a_sim_with_an_older_transfer_notice_a_misuse_notice_at_once(
        env, worker, dsn) -> None:
    """BUYER's transfer notice (day 0) outlasts the window (20 days): on day 21 three other
    SIMs flag the phone. BUYER gets its misuse notice then, without attaching again, and its
    transfer notice is superseded by it; nobody is left with no notice."""
    clock = ManualClock(T0)
    worker(clock)
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    produce(bootstrap, topic, [attach(SINGLE, BUYER, T0)])
    wait_for(lambda: steps(env) == ["warning"])
    at_day(clock, 21)
    flag_ms = clock.now_ms()
    produce(bootstrap, topic, [attach(SINGLE, msisdn, flag_ms - i * MINUTE)
                               for i, msisdn in enumerate((HELPER, STRANGER, OWNER))][::-1])

    def live() -> list[tuple]:
        with psycopg.connect(dsn) as conn:
            return conn.execute(
                "SELECT msisdn, kind, id, floor(extract(epoch FROM deadline) * 1000),"
                " floor(extract(epoch FROM last_seen) * 1000) FROM notices WHERE state IN"
                " ('open', 'warned', 'reminded', 'cut') ORDER BY msisdn").fetchall()

    wait_for(lambda: [(m, k) for m, k, *_ in live()] == [
        (BUYER, "misuse"), (HELPER, "misuse"), (STRANGER, "misuse")])
    (_, _, misuse_id, deadline, last_seen), *_ = live()
    assert (deadline, last_seen) == (flag_ms + 7 * MS_PER_DAY, T0)  # unseen since: may lapse
    with psycopg.connect(dsn) as conn:
        closed = conn.execute("SELECT msisdn, kind, state, superseded_by FROM notices"
                              " WHERE state NOT IN ('open', 'warned', 'reminded', 'cut')"
                              " ORDER BY msisdn").fetchall()
    assert closed[0] == (BUYER, "ownership_transfer", "superseded", misuse_id)
    # STRANGER may have had a transfer notice too, had its attach come in a poll of its own.
    misuse_of = {m: i for m, _, i, _, _ in live()}
    assert all((state, by) == ("superseded", misuse_of[m]) for m, _, state, by in closed)

    def warnings() -> list[tuple[str, str]]:
        return sorted((m["msisdn"], m["kind"]) for m in sent(env, "notifications")
                      if m["kind"] == "misuse" or m["msisdn"] == str(BUYER))
    wait_for(lambda: len(warnings()) == 4)
    assert warnings() == [(str(BUYER), "misuse"), (str(BUYER), "ownership_transfer"),
                          (str(HELPER), "misuse"), (str(STRANGER), "misuse")]


def test_a_worker_behind_a_flag_leaves_the_misuse_notices_raised_with_it_standing(
        env, dsn, policy) -> None:
    """Another worker flagged SINGLE and opened STRANGER's misuse notice in one transaction;
    this worker's sweep takes the notice before it has followed the flag. It decides it with
    the flag all the same: warned, not found resolved by `other_cartable`."""
    imsi = int(home_imsi(STRANGER))
    flagged_state = replace(make_state(policy), misused=misused_by(SINGLE, ms=T0))
    earlier = sims_batch([(SINGLE, imsi, STRANGER, T0)], {SINGLE: T0})
    decisions = decide(earlier, flagged_state)
    config = load_config(environ=env)
    metrics = NoticeMetrics(CollectorRegistry())
    cutoffs = CutoffList(StateHolder(make_state(policy)), metrics)
    sweeper = DueSweep(config.notices, partial(psycopg.connect, dsn, autocommit=True),
                       Resolver(config.notices, ManualClock(T0 + MINUTE), metrics, cutoffs))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            record_flags(conn, [(SINGLE, "imsis", T0, imsi, STRANGER)])
            see(conn, notice_sightings(earlier, decisions), policy.rules)
        assert sweeper.sweep(conn) == 1
        notices = conn.execute("SELECT msisdn, kind, state FROM notices").fetchall()
    assert notices == [(STRANGER, "misuse", "warned")]
