"""Decisions per second on one core, against a per-event loop over Python dicts and sets.

    python bench/decide.py [--devices 10000000] [--events 1000000]

Builds a synthetic country (TACs clustered by Zipf popularity, 1-2 IMEIs a device), decides
the events in the issue's mix (94 % owner, 3 % another cartable's SIM, 1 % unregistered,
1 % malformed, 0.5 % black-listed, 0.5 % roamers) with the engine and with the baseline,
checks both gave every event the same rule, and prints the figures; the last line is JSON.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from measure import best_of, emit, peak_rss_mb, pin_to_one_core, rss_mb, say

from enforcer.engine.decide import decide
from enforcer.engine.lists import keys_of
from enforcer.engine.devices import NO_DEVICE, SLOT_BITS, unpack_msisdns
from enforcer.engine.state import EnforcementState
from enforcer.embedded.synth import Country, CountrySpec, TrafficMix, attach_traffic, build_country
from rules.policy import load_policy

START_MS = 1_790_000_000_000


def baseline_tables(country: Country) -> dict:
    """The same state as plain Python dicts and sets."""
    lists, devices = country.lists, country.devices
    keys = lists.white_index.keys().tolist()
    device_slot = devices.device_slots(np.arange(devices.rows))
    device = np.where(device_slot == NO_DEVICE, -1,
                      device_slot >> np.uint32(SLOT_BITS)).tolist()
    return {
        "white": set(keys),
        "device_of": dict(zip(keys, device)),
        "owner_of": unpack_msisdns(devices.owner_source).tolist(),
        "black": {k: r for r, keys in lists.black_keys().items() for k in keys.tolist()},
        "cut_imeis": set(keys_of(lists.cut_imeis).tolist()),
        "cut_pairs": set(zip(*(a.tolist() for a in lists.cut_pairs.pairs()))),
        "cartable": dict(zip(devices.cartables.msisdn.tolist(),
                             devices.cartables.cartable.tolist())),
        "operator_sims": set(zip(*(a.tolist() for a in devices.operator_sims.pairs()))),
    }


def baseline_decide(events: list[tuple], t: dict, home: set[int]) -> list[str]:
    """The rules of rules/default.toml, one event at a time."""
    white, device_of, owner_of, black = t["white"], t["device_of"], t["owner_of"], t["black"]
    cut_imeis, cut_pairs, cartable, opsims = (t["cut_imeis"], t["cut_pairs"], t["cartable"],
                                              t["operator_sims"])
    out = []
    for key, malformed, imsi, mcc, msisdn, emergency in events:
        if emergency:
            out.append("emergency")
        elif key in black:
            out.append("blacklisted")
        elif key in cut_imeis or (key, imsi) in cut_pairs:
            out.append("cut_off")
        elif malformed:
            out.append("malformed")
        elif key in white:
            device = device_of.get(key, -1)
            owner = owner_of[device] if device >= 0 else 0
            group = cartable.get(owner)
            if (owner and (owner == msisdn or (group is not None
                                               and group == cartable.get(msisdn)))) \
                    or (key, msisdn) in opsims:
                out.append("owner")
            else:
                out.append("other_cartable" if owner else "no_cartable")
        else:
            out.append("unregistered" if mcc in home else "roamer")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    core = pin_to_one_core()
    policy = load_policy()

    started = time.perf_counter()
    country = build_country(CountrySpec(devices=args.devices))
    state = EnforcementState(country.lists, country.devices, policy)
    say(f"country: {args.devices:,} devices, {len(country.lists.white_index):,} IMEIs, "
        f"{len(country.lists.white_index.chunk_high):,} chunks, "
        f"{len(country.lists.black_index):,} black-listed; built in "
        f"{time.perf_counter() - started:.1f} s")
    batch = attach_traffic(country, args.events, TrafficMix(), seed=1, start_ms=START_MS)

    decide_s, decisions = best_of(args.runs, lambda: decide(batch, state))
    per_s = args.events / decide_s
    say(f"engine:   {args.events:,} decisions in {decide_s:.3f} s = {per_s:,.0f}/s "
        f"(one batch, best of {args.runs}, core {core})")
    sizes = {}
    for size in (10_000, 100_000):
        parts = [batch.take(np.arange(i, min(i + size, args.events)))
                 for i in range(0, args.events, size)]
        took, _ = best_of(args.runs, lambda parts=parts: [decide(p, state) for p in parts])
        sizes[size] = args.events / took
        say(f"          in batches of {size:,}: {sizes[size]:,.0f}/s")
    engine_rss = rss_mb()

    tables = baseline_tables(country)
    events = list(zip(*(getattr(batch, f).tolist() for f in
                        ("imei_key", "malformed", "imsi", "mcc", "msisdn", "emergency"))))
    base_s, base_rules = best_of(1, lambda: baseline_decide(events, tables,
                                                            set(policy.home_mcc)))
    base_per_s = args.events / base_s
    say(f"baseline: {args.events:,} decisions in {base_s:.3f} s = {base_per_s:,.0f}/s "
        f"(per-event loop over Python dicts and sets)")
    names = np.array([r.name for r in policy.rules])[decisions.rule]
    agreement = float(np.mean(names == np.array(base_rules)))
    say(f"agreement between engine and baseline: {agreement:.4%}; engine RSS {engine_rss:,.0f} MB,"
        f" with the baseline's dicts {rss_mb():,.0f} MB")
    mix = dict(zip(*np.unique(names, return_counts=True)))
    emit({"devices": args.devices, "imeis": len(country.lists.white_index), "events": args.events,
          "decisions_per_s": round(per_s), "baseline_per_s": round(base_per_s),
          "ratio": round(per_s / base_per_s, 2),
          "decisions_per_s_batch_10k": round(sizes[10_000]),
          "decisions_per_s_batch_100k": round(sizes[100_000]),
          "agreement": agreement, "rss_mb": round(engine_rss),
          "rss_mb_with_baseline": round(rss_mb()), "peak_rss_mb": round(peak_rss_mb()),
          "mix": {k: int(v) for k, v in mix.items()}})


if __name__ == "__main__":
    main()
