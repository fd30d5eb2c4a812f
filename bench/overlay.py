"""Registry changes laid over the snapshot: what one poll of registry changes costs, and what
the overlay adds to a batch decision, as the overlay grows to 0, 1 M and 5 M entries; what a
restart's laying of stored events costs (events per second).

    python bench/overlay.py [--devices 1000000] [--sizes 0,1000000,5000000] [--polls 150]
                            [--poll-changes 100] [--batch 10000] [--restart-events 200000]

A poll is what the registry consumer does with one: a draft of the current overlay, the
changes applied (after one batch lookup of the IMEIs they name), the draft finished and
swapped in, the background merge stepped (a finished merge adopted, a new one started on its
thread), and the lookups the next decision needs built. `--polls` polls in a row at each
size, enough for the small layers to pass `merge_at` and a merge to run beside them; the
figures are their median and worst. The old structure's poll (every map copied, the tuple
of every event copied, the sorted patches built again) is measured on the same content as a
baseline. The overlay is grown through drafts of 500,000 events (registrations, black-
listings, cartable links, operator SIMs, transfers), each merged as it finishes. The last
line is JSON.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import replace

import numpy as np

from measure import best_of, emit, peak_rss_mb, pin_to_one_core, say

from enforcer.follow.overlaymerge import BackgroundMerge
from enforcer.app.worker import tune_gc
from enforcer.config import load_config
from enforcer.embedded.synth import CountrySpec, build_country
from enforcer.engine.devices import NO_DEVICE, Source
from enforcer.engine.lists import BlackReason
from enforcer.engine.overlay import Overlay, OverlayDraft
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Device,
                                             DeviceRegistered, OperatorSimChanged, OwnershipSet,
                                             RegistryEvent, Via)
from enforcer.engine.state import EnforcementState, StateHolder
from rules.policy import load_policy

T0 = 1_790_000_000_000
MSISDN_BASE = 989_120_000_000
MSISDNS = 50_000_000  # SIMs the events name, drawn from this many
NEW_KEY_BASE = 99_000_000_000_000  # IMEIs no snapshot holds: registered or listed by events
GROW_POLL = 500_000  # events a draft of the growing overlay takes
MS_PER_S = 1000
# Between two polls: 100 changes every 50 ms is 2,000 a second, a thousand times a national
# registry's average (100,000-200,000 a day); the merge thread adopts in the gaps.
POLL_GAP_S = 0.05


class Changes:
    """The everyday mix of registry changes, drawn in bulk: transfers by IMEI, black-listings,
    cartable links, operator SIMs and registrations of new devices; each event is new."""

    def __init__(self, state: EnforcementState, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        keys = state.lists.white_index.keys()
        self._in_device = keys[state.devices.device_slots(np.arange(len(keys))) != NO_DEVICE]
        self._next = 0

    def take(self, count: int) -> list[RegistryEvent]:
        rng, first = self._rng, self._next
        self._next += count
        in_device = rng.choice(self._in_device, count).tolist()
        msisdns = (MSISDN_BASE + rng.integers(0, MSISDNS, count)).tolist()
        cartables = rng.integers(1, 10_000_000, count).tolist()
        out = []
        for i in range(count):
            n = first + i
            new_key = NEW_KEY_BASE + 10 * n
            match n % 10:
                case 0 | 1 | 2:
                    change = DeviceRegistered(Device(f"D{n}", (new_key, new_key + 1)),
                                              Source.PASSENGER, None)
                case 3 | 4:
                    change = BlacklistChanged((new_key,), BlackReason.STOLEN)
                case 5 | 6:
                    change = CartableChanged(cartables[i], (msisdns[i],), linked=True)
                case 7:
                    change = OperatorSimChanged(in_device[i], msisdns[i], True)
                case _:
                    change = OwnershipSet(Device(None, (in_device[i],)), msisdns[i],
                                          Via.TRANSFER_DIRECT)
            out.append(RegistryEvent(f"e{n}", T0 + n, change))
        return out


def grow(state: EnforcementState, changes: Changes, entries: int) -> EnforcementState:
    """The overlay grown past `entries`, a draft of GROW_POLL events at a time."""
    while len(state.overlay) < entries:
        batch = changes.take(min(GROW_POLL, max(1, (entries - len(state.overlay)) // 2)))
        draft = OverlayDraft(state.overlay, state.lists, state.devices)
        draft.prefetch([e.change for e in batch])
        for event in batch:
            draft.apply(event)
        state = replace(state, overlay=draft.finish().merged())
    return state


def touch_lookups(overlay: Overlay) -> None:
    """What the first decision after a poll builds: the small layers' sorted columns."""
    for mapping in (overlay.imeis, overlay.owners, overlay.cartables, overlay.black,
                    overlay.operator_sims):
        if mapping.recent:
            _ = mapping.recent_layer


def polls(state: EnforcementState, changes: Changes, count: int, size: int
          ) -> tuple[list[float], list[float], int, Overlay]:
    """Milliseconds of each of `count` polls of `size` changes (wall clock, and this
    thread's CPU time: the difference is time the core or the GIL was elsewhere), how many
    merges were adopted, as the registry consumer polls, and the overlay they leave."""
    holder = StateHolder(state)
    merge = BackgroundMerge(holder)
    took, cpu, merges = [], [], 0
    try:
        for _ in range(count):
            batch = changes.take(size)
            started, cpu_started = time.perf_counter(), time.thread_time()
            current = holder.current
            draft = OverlayDraft(current.overlay, current.lists, current.devices)
            draft.prefetch([e.change for e in batch])
            for event in batch:
                draft.apply(event)
            holder.update(lambda s, d=draft: replace(s, overlay=d.finish()))
            before = holder.current.overlay
            merge.step()
            merges += holder.current.overlay is not before
            touch_lookups(holder.current.overlay)
            took.append((time.perf_counter() - started) * MS_PER_S)
            cpu.append((time.thread_time() - cpu_started) * MS_PER_S)
            time.sleep(POLL_GAP_S)
    finally:
        merge.close()
    return took, cpu, merges, holder.current.overlay


def old_poll_ms(overlay: Overlay, size: int) -> float:
    """The old structure's work for one poll over the same content: each of the seven maps
    copied, the tuple of every event made again, the four sorted patches built again."""
    maps = {name: dict(getattr(overlay, name).items()) for name in (
        "imeis", "owners", "device_ids", "devices", "cartables", "operator_sims", "black")}
    events = tuple(overlay.events)
    more = tuple(events[:size])

    def poll() -> None:
        copies = {name: dict(m) for name, m in maps.items()}
        _ = events + more
        for name in ("imeis", "owners", "cartables", "black"):
            keys = np.array(sorted(copies[name]), dtype=np.uint64)
            _ = np.array([copies[name][k] for k in keys.tolist()])
        _ = np.unique(np.array([k for k, _ in copies["operator_sims"]], dtype=np.uint64))

    took, _ = best_of(2, poll)
    return took * MS_PER_S


def decide_ms(state: EnforcementState, batch: int, seed: int) -> float:
    """The overlay's part of deciding a batch: every patch_* over `batch` attaches, half of
    them on IMEIs and SIMs the overlay holds."""
    rng = np.random.default_rng(seed)
    overlay = state.overlay
    keys = state.lists.white_index.keys()[rng.integers(0, len(state.lists.white_index), batch)]
    msisdns = (MSISDN_BASE + rng.integers(0, MSISDNS, batch)).astype(np.uint64)
    if len(overlay.imeis):
        held, _ = overlay.columns("imeis")
        keys[: batch // 2] = held[rng.integers(0, len(held), batch // 2)]
    keys = np.sort(keys)
    registered = np.ones(batch, bool)
    slots = state.devices.device_slots(state.lists.white_index.rows_sorted(keys))
    black = np.full(batch, 255, np.uint8)

    def patch() -> None:
        _, device_slot, _ = overlay.patch_imeis(keys, registered, slots, black)
        overlay.patch_owners(device_slot, np.zeros(batch, np.uint64))
        overlay.patch_cartables(msisdns, np.zeros(batch, np.uint32))
        overlay.patch_operator_sims(keys, msisdns, np.zeros(batch, bool))

    took, _ = best_of(5, patch)
    return took * MS_PER_S


def restart_events_per_s(state: EnforcementState, count: int) -> tuple[float, int]:
    """A restart: `count` stored events laid over the snapshot at once."""
    events = Changes(state, seed=3).take(count)
    started = time.perf_counter()
    overlay, refused = state.overlay.apply_all(events, state.lists, state.devices)
    if refused:
        raise SystemExit(f"{len(refused)} events did not apply: {refused[0][1]}")
    return count / (time.perf_counter() - started), len(overlay)


def label(size: int) -> str:
    return "0" if size == 0 else f"{size // 1_000_000}m" if size >= 1_000_000 else str(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="0,1000000,5000000")
    parser.add_argument("--polls", type=int, default=150)
    parser.add_argument("--poll-changes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--restart-events", type=int, default=200_000)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    core = pin_to_one_core()
    began = time.perf_counter()
    country = build_country(CountrySpec(devices=args.devices))
    state = EnforcementState(country.lists, country.devices, load_policy())
    say(f"country: {country.devices.count:,} devices; core {core}; "
        f"{threading.active_count()} thread")
    per_s, entries = restart_events_per_s(state, args.restart_events)
    say(f"restart: {args.restart_events:,} events at once, {per_s:,.0f}/s, {entries:,} entries")
    figures: dict[str, object] = {"devices": country.devices.count,
                                  "restart_events": args.restart_events,
                                  "restart_events_per_s": round(per_s)}
    changes = Changes(state, seed=1)
    gc_threshold = load_config(environ={}).worker.gc_threshold
    for size in sizes:
        grow_started = time.perf_counter()
        state = grow(state, changes, size)
        grown_s = time.perf_counter() - grow_started
        tune_gc(gc_threshold)  # as the worker does once its state is loaded
        at = label(size)
        old_ms = old_poll_ms(state.overlay, args.poll_changes)
        took, cpu, merges, after = polls(state, changes, args.polls, args.poll_changes)
        merge_s, _ = best_of(1, after.merged)  # what the background thread does
        decide = decide_ms(state, args.batch, seed=size)
        median, worst = statistics.median(took), max(took)
        say(f"{len(state.overlay):,} entries (grown in {grown_s:.1f} s): a poll of "
            f"{args.poll_changes} changes {median:.2f} ms median, {worst:.2f} ms worst of "
            f"{args.polls} (CPU {statistics.median(cpu):.2f} ms median, {max(cpu):.2f} ms "
            f"worst; {merges} merges adopted); old structure {old_ms:.1f} ms; "
            f"a {args.batch:,} batch's overlay lookups {decide:.2f} ms; a merge {merge_s:.2f} s")
        figures.update({f"entries_at_{at}": len(state.overlay),
                        f"poll_ms_at_{at}": round(median, 3),
                        f"poll_ms_max_at_{at}": round(worst, 3),
                        f"poll_cpu_ms_max_at_{at}": round(max(cpu), 3),
                        f"old_poll_ms_at_{at}": round(old_ms, 2),
                        f"decide_ms_at_{at}": round(decide, 3),
                        f"merge_s_at_{at}": round(merge_s, 3)})
    figures.update({"poll_changes": args.poll_changes, "polls": args.polls,
                    "batch": args.batch, "bench_s": round(time.perf_counter() - began),
                    "peak_rss_mb": round(peak_rss_mb())})
    emit(figures)


if __name__ == "__main__":
    main()
