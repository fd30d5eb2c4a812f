"""A synthetic country and synthetic attach traffic, for the demo, tests and benchmarks.

Devices cluster on TACs the way a market does: a few models account for most phones
(Zipf-distributed TAC popularity), reporting bodies 35 and 86 dominate. Dual-SIM phones
take two consecutive serial numbers, as most manufacturers allocate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from enforcer.events import NO_KEY, AttachBatch
from enforcer.lists import BLACK_REASONS, Lists
from enforcer.registry import (NO_OWNER, SOURCES, Cartables, DeviceColumns, Registry,
                               build_registry, day_number)
from enforcer.pairset import PairSet
from enforcer.roaringfmt import bitmap_from_sorted_keys

SNR_SPACE = 1_000_000
MSISDN_BASE = 989_000_000_000  # Iranian mobile numbers: 98 9xx xxx xxxx
MSISDN_SPAN = 1_000_000_000
HOME_IMSI_BASE = 432_11 * 10**10  # MCC 432, MNC 11, 10-digit MSIN
ROAMER_IMSI_BASE = 310_260 * 10**9  # MCC 310 (a foreign network), MNC 260
REPORTING_BODIES = (35, 86, 1, 99)
REPORTING_BODY_SHARE = (0.6, 0.3, 0.05, 0.05)
FIRST_REGISTRATION = date(2019, 12, 1)
LAST_REGISTRATION = date(2026, 11, 1)


@dataclass(frozen=True)
class CountrySpec:
    devices: int
    imeis: int | None = None  # default: half the devices dual-SIM
    tacs: int | None = None  # default: about one TAC per 2,000 devices
    tac_zipf: float = 1.1
    unowned_share: float = 0.02  # registered, never activated: in no cartable
    subscribers_per_device: float = 0.9
    national_cartable_share: float = 0.05  # owners whose SIM is linked to a national-ID cartable
    operator_sim_share: float = 0.01
    black_share: float = 0.005  # of registered IMEIs, plus as many unregistered ones
    source_share: tuple[float, ...] = (0.70, 0.05, 0.24, 0.01)  # import, passenger, …
    seed: int = 7


@dataclass(frozen=True, eq=False)
class Country:
    lists: Lists
    registry: Registry
    device_imeis: np.ndarray  # uint64, registered IMEIs that belong to a device
    imei_device: np.ndarray  # int64, aligned with device_imeis
    black_keys: np.ndarray  # uint64, every black-listed key
    unregistered_tacs: np.ndarray  # uint64, TACs no registered device uses
    subscribers: np.ndarray  # uint64, MSISDNs in use


def home_imsi(msisdn: np.ndarray) -> np.ndarray:
    return np.uint64(HOME_IMSI_BASE) + (msisdn % np.uint64(10**10))


def build_country(spec: CountrySpec, generation: int = 1) -> Country:
    rng = np.random.default_rng(spec.seed)
    n_dev = spec.devices
    n_imeis = spec.imeis if spec.imeis is not None else n_dev + n_dev // 2
    if not n_dev <= n_imeis <= 2 * n_dev:
        raise ValueError("each device has one or two IMEIs: devices <= imeis <= 2 * devices")
    n_tacs = spec.tacs or max(n_dev // 2000, 20)
    all_tacs = _tacs(rng, 2 * n_tacs)
    tacs, spare_tacs = all_tacs[:n_tacs], all_tacs[n_tacs:]
    primary = _primary_keys(rng, tacs, n_dev, spec.tac_zipf)
    dual = np.zeros(n_dev, dtype=bool)
    dual[rng.choice(n_dev, n_imeis - n_dev, replace=False)] = True
    second = primary[dual] + np.uint64(1)
    keys = np.concatenate([primary, second])
    device = np.concatenate([np.arange(n_dev), np.flatnonzero(dual)]).astype(np.int64)
    slot = np.concatenate([np.zeros(n_dev, np.uint8), np.ones(len(second), np.uint8)])
    order = np.argsort(keys)
    keys, device, slot = keys[order], device[order], slot[order]

    subscribers = np.unique(np.uint64(MSISDN_BASE) + rng.choice(
        MSISDN_SPAN, max(int(n_dev * spec.subscribers_per_device), 1), replace=False
    ).astype(np.uint64))
    owner = subscribers[rng.integers(0, len(subscribers), n_dev)]
    owner[rng.random(n_dev) < spec.unowned_share] = NO_OWNER
    first, last = day_number(FIRST_REGISTRATION), day_number(LAST_REGISTRATION)
    columns = DeviceColumns(
        imei_key=keys, imei_device=device, imei_slot=slot, owner=owner,
        source=rng.choice(len(SOURCES), n_dev, p=spec.source_share).astype(np.uint8),
        registered_on=rng.integers(first, last, n_dev).astype(np.uint16))

    linked = subscribers[rng.random(len(subscribers)) < spec.national_cartable_share]
    cartables = Cartables.from_links(linked, np.arange(len(linked), dtype=np.uint32) // 2)
    op_imeis = keys[rng.random(len(keys)) < spec.operator_sim_share]
    operator_sims = PairSet.from_pairs(
        op_imeis, subscribers[rng.integers(0, len(subscribers), len(op_imeis))])

    n_black = int(len(keys) * spec.black_share)
    black_keys = np.unique(np.concatenate([
        keys[rng.integers(0, len(keys), n_black)],
        _keys_in(rng, spare_tacs, n_black)]))
    reason = rng.integers(0, len(BLACK_REASONS), len(black_keys))
    black = {r: bitmap_from_sorted_keys(black_keys[reason == code])
             for code, r in enumerate(BLACK_REASONS)}
    lists = Lists.build(generation, bitmap_from_sorted_keys(keys), black)
    del order
    registry, _ = build_registry(lists.white_index, columns, cartables, operator_sims)
    return Country(lists, registry, keys, device, black_keys, spare_tacs, subscribers)


def _tacs(rng: np.random.Generator, count: int) -> np.ndarray:
    body = rng.choice(REPORTING_BODIES, count, p=REPORTING_BODY_SHARE).astype(np.uint64)
    tacs = np.unique(body * np.uint64(10**6) + rng.integers(0, 10**6, count * 2, dtype=np.uint64)
                     [:count])
    rng.shuffle(tacs)
    return tacs


def _primary_keys(rng: np.random.Generator, tacs: np.ndarray, n: int, zipf: float) -> np.ndarray:
    """n distinct keys with even serial numbers, TACs chosen by Zipf popularity."""
    weights = 1.0 / np.arange(1, len(tacs) + 1) ** zipf
    weights /= weights.sum()
    per_tac_cap = SNR_SPACE // 2
    counts = np.minimum(rng.multinomial(n, weights), per_tac_cap)
    short = n - int(counts.sum())
    while short > 0:  # popular TACs are full: spread the rest over those with room
        room = per_tac_cap - counts
        extra = np.minimum(room, rng.multinomial(short, room / room.sum()))
        counts += extra
        short -= int(extra.sum())
    out = np.empty(n, dtype=np.uint64)
    at = 0
    for tac, count in zip(tacs, counts):
        if count:
            snr = rng.choice(per_tac_cap, int(count), replace=False).astype(np.uint64) * 2
            out[at:at + count] = tac * np.uint64(SNR_SPACE) + snr
            at += count
    return out


def _keys_in(rng: np.random.Generator, tacs: np.ndarray, n: int) -> np.ndarray:
    return tacs[rng.integers(0, len(tacs), n)] * np.uint64(SNR_SPACE) + \
        rng.integers(0, SNR_SPACE, n, dtype=np.uint64)


@dataclass(frozen=True)
class TrafficMix:
    """The share of each kind of attach; the benchmark's mix by default."""

    owner: float = 0.94
    other_cartable: float = 0.03
    unregistered: float = 0.01
    malformed: float = 0.01
    blacklisted: float = 0.005
    roamer: float = 0.005

    def shares(self) -> np.ndarray:
        shares = np.array([self.owner, self.other_cartable, self.unregistered,
                           self.malformed, self.blacklisted, self.roamer])
        return shares / shares.sum()


def attach_traffic(country: Country, n: int, mix: TrafficMix, seed: int,
                   start_ms: int, step_ms: int = 1) -> AttachBatch:
    """n attach events in the given mix, as a batch."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(6, n, p=mix.shares())
    owned_rows = np.flatnonzero(country.registry.owners(country.registry.device_of_row)
                                != NO_OWNER)
    pick = owned_rows[rng.integers(0, len(owned_rows), n)]
    keys = country.lists.white_index.keys_at(pick)
    msisdn = country.registry.owners(country.registry.device_of_row[pick])
    # another cartable's SIM: a random subscriber (a collision with the owner is negligible)
    other = kind == 1
    msisdn[other] = country.subscribers[rng.integers(0, len(country.subscribers), other.sum())]
    foreign = (kind == 2) | (kind == 5)
    keys[foreign] = _keys_in(rng, country.unregistered_tacs, int(foreign.sum()))
    black = kind == 4
    keys[black] = country.black_keys[rng.integers(0, len(country.black_keys), black.sum())]
    malformed = kind == 3
    keys[malformed] = NO_KEY
    imsi = home_imsi(msisdn)
    roam = kind == 5
    imsi[roam] = np.uint64(ROAMER_IMSI_BASE) + rng.integers(0, 10**9, roam.sum(), dtype=np.uint64)
    mcc = (imsi // np.uint64(10**12)).astype(np.uint16)
    return AttachBatch(
        imei_key=keys, malformed=malformed, imsi=imsi, mcc=mcc, msisdn=msisdn,
        ts_ms=start_ms + np.arange(n, dtype=np.int64) * step_ms,
        emergency=np.zeros(n, dtype=bool))
