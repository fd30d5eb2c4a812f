"""Registry changes laid over the snapshot: events per second when a restart lays every
stored event at once (one private copy of the overlay's maps), against applying them one at
a time (a new overlay and a snapshot lookup per event, what the worker did before), in the same run.

    python bench/overlay.py [--devices 1000000] [--events 200000] [--baseline-events 20000]

The events are the everyday mix: transfers by IMEI, black-listings, cartable links and
operator SIMs over a synthetic country. Both ways must give the same overlay. The last line
is JSON.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from measure import emit, peak_rss_mb, pin_to_one_core, say

from enforcer.engine.lists import BlackReason
from enforcer.engine.registry_events import (BlacklistChanged, CartableChanged, Device,
                                             OperatorSimChanged, OwnershipSet, RegistryEvent, Via)
from enforcer.engine.devices import NO_DEVICE
from enforcer.engine.state import EnforcementState
from enforcer.embedded.synth import CountrySpec, build_country
from rules.policy import load_policy

T0 = 1_790_000_000_000
MSISDN_BASE = 989_120_000_000


def events(state: EnforcementState, count: int, seed: int) -> list[RegistryEvent]:
    rng = np.random.default_rng(seed)
    keys = state.lists.white_index.keys()
    in_device = keys[state.devices.device_slots(np.arange(len(keys))) != NO_DEVICE]
    out = []
    for i in range(count):
        key = int(rng.choice(in_device))
        msisdn = MSISDN_BASE + int(rng.integers(0, 10_000_000))
        kind = i % 10
        if kind < 6:
            change = OwnershipSet(Device(None, (key,)), msisdn, Via.TRANSFER_DIRECT)
        elif kind < 8:
            change = BlacklistChanged((key,), BlackReason.STOLEN)
        elif kind < 9:
            change = CartableChanged(int(rng.integers(1, 1_000_000)), (msisdn,), linked=True)
        else:
            change = OperatorSimChanged(key, msisdn, True)
        out.append(RegistryEvent(f"e{i}", T0 + i, change))
    return out


def at_once(state: EnforcementState, batch: list[RegistryEvent]) -> tuple[float, object]:
    started = time.perf_counter()
    overlay, refused = state.overlay.apply_all(batch, state.lists, state.devices)
    if refused:
        raise SystemExit(f"{len(refused)} events did not apply: {refused[0][1]}")
    return time.perf_counter() - started, overlay


def one_at_a_time(state: EnforcementState, batch: list[RegistryEvent]) -> tuple[float, object]:
    started = time.perf_counter()
    overlay = state.overlay
    for event in batch:
        overlay = overlay.apply(event.change, event.time_ms, state.lists, state.devices)
    return time.perf_counter() - started, overlay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    args = parser.parse_args()
    core = pin_to_one_core()
    country = build_country(CountrySpec(devices=args.devices))
    state = EnforcementState(country.lists, country.devices, load_policy())
    say(f"country: {country.devices.count:,} devices; core {core}")

    small = events(state, args.baseline_events, seed=1)
    base_s, base_overlay = one_at_a_time(state, small)
    new_s, new_overlay = at_once(state, small)
    if (base_overlay.owners, base_overlay.black) != (new_overlay.owners, new_overlay.black):
        raise SystemExit("the two ways gave different overlays")
    say(f"{len(small):,} events: one at a time {base_s:.2f} s, at once {new_s:.3f} s")

    big = events(state, args.events, seed=2)
    big_s, overlay = at_once(state, big)
    say(f"{len(big):,} events at once: {big_s:.2f} s, {len(overlay):,} overlay entries")
    emit({"devices": country.devices.count,
          "baseline_events": len(small), "one_at_a_time_s": round(base_s, 3),
          "at_once_s": round(new_s, 4), "ratio": round(base_s / new_s, 1),
          "events": len(big), "events_at_once_s": round(big_s, 3),
          "events_per_s": round(len(big) / big_s), "peak_rss_mb": round(peak_rss_mb())})


if __name__ == "__main__":
    main()
