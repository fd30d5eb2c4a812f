"""The first half of `eir-enforcer demo`: what the engine decides, on a synthetic country."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from enforcer.config import Config
from enforcer.clock import SystemClock, iso
from enforcer.engine.decide import Decisions, decide, decision_at
from enforcer.embedded.demoview import columns, command_lines, wrap
from enforcer.engine.events import AttachBatch
from enforcer.engine.events import NO_KEY
from enforcer.engine.lists import NO_REASON
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import load_snapshot, next_generation, save_snapshot
from enforcer.engine.subscriber import mask
from enforcer.embedded.synth import (Country, CountrySpec, TrafficMix, attach_traffic,
                                     build_country, unowned_device_rows)
from rules.policy import VERDICTS, load_policy

MB = 1 << 20


def say(text: str = "") -> None:
    """A line for the person watching, wrapped to the terminal (at most MAX_COLUMNS)."""
    print("\n".join(wrap(text, columns())), flush=True)


def say_command(words: list[str], indent: str = "   ") -> None:
    """A command to copy, continued with backslashes rather than wrapped."""
    print("\n".join(command_lines(words, columns(), indent)), flush=True)


def run_tour(config: Config, size: int, events: int) -> Country:
    """Build and snapshot a synthetic country, decide a batch of traffic, show each kind."""
    policy = load_policy(config.policy.file or None)
    say(f"eir-enforcer demo: a synthetic country of {size:,} devices")
    started = time.perf_counter()
    directory = Path(config.state.dir)
    country = build_country(CountrySpec(devices=size), next_generation(directory))
    lists, devices = country.lists, country.devices
    say(f"1. Built in {time.perf_counter() - started:.1f} s: {len(lists.white_index):,} "
         f"registered IMEIs ({len(lists.white_index.chunk_high):,} chunks of 65,536 keys), "
         f"{len(lists.black_index):,} black-listed, {devices.count:,} devices, "
         f"{len(devices.cartables.msisdn):,} SIMs in national-ID cartables, "
         f"{len(devices.operator_sims):,} operator SIMs")
    stats = lists.stats()
    say(f"   memory: white list {stats['white']['index_bytes'] / MB:.1f} MB (its lookup "
         f"index); registry {devices.nbytes / MB:.1f} MB")

    save_snapshot(EnforcementState(lists, devices, policy), directory)
    started = time.perf_counter()
    state = load_snapshot(directory, policy)
    say(f"2. Snapshot written to {directory}/ and loaded back in "
         f"{time.perf_counter() - started:.2f} s (generation {state.generation})")

    mix = TrafficMix()
    batch = attach_traffic(country, events, mix, seed=1, start_ms=SystemClock().now_ms())
    started = time.perf_counter()
    decisions = decide(batch, state)
    took = time.perf_counter() - started
    say(f"3. Decided {events:,} attach events in {took:.2f} s: "
         f"{events / took:,.0f} decisions/s on one core")
    verdicts = np.bincount(decisions.verdict, minlength=len(VERDICTS))
    say("   verdicts: " + ", ".join(f"{v.value} {n / events:.1%}"
                                      for v, n in zip(VERDICTS, verdicts)))
    counts = np.bincount(decisions.rule, minlength=len(policy.rules))
    say("   by rule:  " + ", ".join(f"{r.name} {n:,}" for r, n in zip(policy.rules, counts) if n))

    say("4. One attach of each kind (SIM numbers masked):")
    for index, rule in enumerate(policy.rules):
        hits = np.flatnonzero(decisions.rule == index)
        if len(hits):
            _show(rule.name, batch, decisions, int(hits[0]))
    _show_unowned(country, batch, state)
    _show_emergency(batch, decisions, state)
    owner_rule = [r.name for r in policy.rules].index("owner")
    row = int(np.flatnonzero(decisions.rule == owner_rule)[0])
    say("   try one yourself:")
    say_command([command(), "check", "--imei", f"{int(batch.imei_key[row]):014d}",
                 "--imsi", str(int(batch.imsi[row])), "--msisdn", str(int(batch.msisdn[row])),
                 "--state", str(directory)], indent="     ")
    return country


def command() -> str:
    """How to call eir-enforcer from here: the console script of this environment."""
    script = Path(sys.executable).with_name("eir-enforcer")
    return os.path.relpath(script) if script.exists() else "eir-enforcer"


def _one(batch: AttachBatch, i: int, **changes: np.ndarray) -> AttachBatch:
    one = batch.take(np.array([i]))
    return dataclasses.replace(one, **changes)


def _show_unowned(country: Country, batch: AttachBatch, state: EnforcementState) -> None:
    rows = unowned_device_rows(country.devices, 1)
    if len(rows):
        one = _one(batch, 0, imei_key=country.lists.white_index.keys_at(rows))
        _show("no_cartable", one, decide(one, state), 0)


def _show(label: str, batch: AttachBatch, decisions: Decisions, i: int) -> None:
    d = decision_at(decisions, batch, i)
    key = int(batch.imei_key[i])
    imei = f"{key:014d}" if key != NO_KEY else "(malformed)"
    line = (f"   {label:<15} IMEI {imei:<15} SIM {mask(int(batch.msisdn[i]))} "
            f"-> {d.verdict.value} ({d.reason})")
    if d.notice:
        line += (f"; notice {d.notice.kind} on the {d.notice.scope.value}, cutoff "
                 f"{iso(d.notice.deadline_ms)[:10]}")
        if d.notice.reminder_days:
            line += ", reminders " + " and ".join(f"{r} d" for r in d.notice.reminder_days) \
                + " before"
        if not d.notice.sms:
            line += ", no SMS"
    if d.cutoff_now:
        line += f"; cut off the {d.cutoff_now.value} now"
    say(line)


def _show_emergency(batch: AttachBatch, decisions: Decisions, state: EnforcementState) -> None:
    black = np.flatnonzero(decisions.black_reason != NO_REASON)
    if not len(black):
        return
    one = _one(batch, int(black[0]), emergency=np.ones(1, dtype=bool))
    _show("emergency", one, decide(one, state), 0)
    say("   (the same black-listed IMEI, attaching for an emergency call: never refused)")
