"""A synthetic country and synthetic attach traffic, for the demo, tests and benchmarks.

Devices cluster on TACs the way a market does: a few models account for most phones
(Zipf-distributed TAC popularity), reporting bodies 35 and 86 dominate. Dual-SIM phones
take two consecutive serial numbers, as most manufacturers allocate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from pyroaring import BitMap64

from enforcer.engine.events import NO_KEY, AttachBatch
from enforcer.engine.imei import SNR_SPACE
from enforcer.engine.keyindex import CHUNK_BITS, KeyIndex
from enforcer.engine.lists import BLACK_REASONS, BlackReason, Lists
from enforcer.engine.pairset import PairSet
from enforcer.engine.otherslots import OtherSlots
from enforcer.engine.rankbits import RankBits
from enforcer.engine.devices import (NO_OWNER, SLOT_BITS, SOURCES, Cartables, Devices, day_number,
                                     pack_owners)
from enforcer.engine.roaringfmt import bitmap_from_sorted_keys
from enforcer.engine.state import EnforcementState

MSISDN_BASE = 989_000_000_000  # Iranian mobile numbers: 98 9xx xxx xxxx
MSISDN_SPAN = 1_000_000_000
HOME_MSIN_SPACE = 10**10
HOME_IMSI_BASE = 432_11 * HOME_MSIN_SPACE  # MCC 432, MNC 11, 10-digit MSIN
ROAMER_MSIN_SPACE = 10**9
ROAMER_IMSI_BASE = 310_260 * ROAMER_MSIN_SPACE  # MCC 310 (a foreign network), MNC 260
IMSI_DIGITS = 15  # both bases above make 15-digit IMSIs
MCC_DIVISOR = 10**(IMSI_DIGITS - 3)
ROAMER_NUMBER_SPACE = 10**7
DEVICES_PER_TAC = 2000
MIN_TACS = 20
TAC_BODY_SPACE = 10**6  # the six digits after a TAC's two-digit reporting body
SPARE_TAC_CANDIDATES = 1000
OWNER_SAMPLE = 100_000
# 1 device in 50 is in no cartable: 200 rows scanned per row wanted find enough.
UNOWNED_SCAN_PER_ROW = 200
ROAMER_MSISDN_BASE = 1_415_000_0000  # +1 415 numbers
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
    devices: Devices
    black_keys: np.ndarray  # uint64, every black-listed key
    unregistered_tacs: np.ndarray  # uint64, TACs no registered device uses
    subscribers: np.ndarray  # uint64, MSISDNs in use


def home_imsi(msisdn: np.ndarray) -> np.ndarray:
    return np.uint64(HOME_IMSI_BASE) + (msisdn % np.uint64(HOME_MSIN_SPACE))


def build_country(spec: CountrySpec, generation: int = 1) -> Country:
    """Built sorted by construction (no argsort over all keys), so that a country of 300 M
    IMEIs fits a 24 GB machine while it is being built."""
    rng = np.random.default_rng(spec.seed)
    n_dev = spec.devices
    n_imeis = spec.imeis if spec.imeis is not None else n_dev + n_dev // 2
    if not n_dev <= n_imeis <= 2 * n_dev:
        raise ValueError("each device has one or two IMEIs: devices <= imeis <= 2 * devices")
    n_tacs = spec.tacs or max(n_dev // DEVICES_PER_TAC, MIN_TACS)
    all_tacs = _tacs(rng, 2 * n_tacs)
    tacs, spare_tacs = all_tacs[:n_tacs], all_tacs[n_tacs:]
    primary = _primary_keys(rng, tacs, n_dev, spec.tac_zipf)
    # Devices are numbered in the order of their first IMEI; a dual-SIM phone's second IMEI
    # is the next serial number, so it sorts right after the first.
    imeis_per_device = np.ones(n_dev, dtype=np.uint8)
    imeis_per_device[rng.choice(n_dev, n_imeis - n_dev, replace=False)] = 2
    device = np.repeat(np.arange(n_dev, dtype=np.uint32), imeis_per_device)
    slot = np.ones(len(device), dtype=np.uint8)
    slot[np.r_[0, np.cumsum(imeis_per_device[:-1], dtype=np.int64)]] = 0
    del imeis_per_device
    keys = primary[device] + slot
    del primary

    subscribers = np.uint64(MSISDN_BASE) + _sorted_distinct(
        rng, max(int(n_dev * spec.subscribers_per_device), 1), MSISDN_SPAN)
    owner = subscribers[rng.integers(0, len(subscribers), n_dev)]
    owner[rng.random(n_dev, dtype=np.float32) < spec.unowned_share] = NO_OWNER
    first, last = day_number(FIRST_REGISTRATION), day_number(LAST_REGISTRATION)
    lists = Lists.build(generation, KeyIndex.from_sorted_keys(keys), _black(rng, spec, keys,
                                                                             spare_tacs))
    linked = subscribers[rng.random(len(subscribers), dtype=np.float32)
                         < spec.national_cartable_share]
    op_imeis = keys[rng.choice(len(keys), int(len(keys) * spec.operator_sim_share))]
    first_imei = slot == 0  # rows are `keys`, in order; devices numbered by first IMEI
    first_slot, other_slot = RankBits.from_mask(first_imei), RankBits.from_mask(~first_imei)
    devices = Devices(
        first_slot=first_slot, other_slot=other_slot,
        others=OtherSlots.of_rows((device[~first_imei] << np.uint32(SLOT_BITS))
                                  | slot[~first_imei], first_slot, other_slot),
        owner_source=pack_owners(owner, rng.choice(len(SOURCES), n_dev, p=spec.source_share)),
        registered_on=rng.integers(first, last, n_dev).astype(np.uint16),
        cartables=Cartables.from_links(linked, np.arange(len(linked), dtype=np.uint32) // 2),
        operator_sims=PairSet.from_pairs(
            op_imeis, subscribers[rng.integers(0, len(subscribers), len(op_imeis))]))
    return Country(lists, devices, lists.black_index.keys(), spare_tacs,
                   subscribers)


def _black(rng: np.random.Generator, spec: CountrySpec, keys: np.ndarray,
           spare_tacs: np.ndarray) -> dict[BlackReason, BitMap64]:
    n_black = int(len(keys) * spec.black_share)
    black_keys = np.unique(np.concatenate([
        keys[rng.integers(0, len(keys), n_black)], _keys_in(rng, spare_tacs, n_black)]))
    reason = rng.integers(0, len(BLACK_REASONS), len(black_keys))
    return {r: bitmap_from_sorted_keys(black_keys[reason == code])
            for code, r in enumerate(BLACK_REASONS)}


def _sorted_distinct(rng: np.random.Generator, n: int, span: int) -> np.ndarray:
    """n distinct sorted values below span: sorted draws from [0, span - n], plus their rank."""
    draws = np.sort(rng.integers(0, span - n + 1, n, dtype=np.uint64))
    return draws + np.arange(n, dtype=np.uint64)


def _tacs(rng: np.random.Generator, count: int) -> np.ndarray:
    body = rng.choice(REPORTING_BODIES, count, p=REPORTING_BODY_SHARE).astype(np.uint64)
    tacs = np.unique(body * np.uint64(TAC_BODY_SPACE)
                     + rng.integers(0, TAC_BODY_SPACE, count, dtype=np.uint64))
    rng.shuffle(tacs)
    return tacs


def _primary_keys(rng: np.random.Generator, tacs: np.ndarray, n: int, zipf: float) -> np.ndarray:
    """n distinct sorted keys with even serial numbers, TACs chosen by Zipf popularity."""
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
    order = np.argsort(tacs)
    tacs, counts = tacs[order], counts[order]
    # Within each TAC: sorted draws from [0, cap - count] plus their rank are distinct.
    group = np.repeat(np.arange(len(tacs)), counts)
    draws = rng.integers(0, per_tac_cap - counts[group] + 1, dtype=np.uint64)
    draws = np.sort(group.astype(np.uint64) * np.uint64(per_tac_cap) + draws) \
        - group.astype(np.uint64) * np.uint64(per_tac_cap)
    first_of_group = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(n, dtype=np.uint64) - first_of_group[group].astype(np.uint64)
    return tacs[group] * np.uint64(SNR_SPACE) + (draws + rank) * np.uint64(2)


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


def owned_rows(rng: np.random.Generator, devices: Devices, n: int) -> np.ndarray:
    """n random white-list rows of owned devices, drawn without touching every row."""
    picked: list[np.ndarray] = []
    have = 0
    while have < n:
        rows = rng.integers(0, devices.rows, 2 * (n - have) + 16)
        rows = rows[devices.owners(devices.device_slots(rows)) != NO_OWNER]
        picked.append(rows)
        have += len(rows)
    return np.concatenate(picked)[:n]


def unowned_device_rows(devices: Devices, limit: int) -> np.ndarray:
    """Up to `limit` white-list rows of registered devices in no cartable."""
    rows = np.arange(min(devices.rows, limit * UNOWNED_SCAN_PER_ROW))
    return rows[devices.owners(devices.device_slots(rows)) == NO_OWNER][:limit]


def attach_traffic(country: Country, n: int, mix: TrafficMix, seed: int,
                   start_ms: int, step_ms: int = 1) -> AttachBatch:
    """n attach events in the given mix, as a batch."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(6, n, p=mix.shares())
    pick = owned_rows(rng, country.devices, n)
    keys = country.lists.white_index.keys_at(pick)
    msisdn = country.devices.owners(country.devices.device_slots(pick))
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
    imsi[roam] = np.uint64(ROAMER_IMSI_BASE) + rng.integers(0, ROAMER_MSIN_SPACE, roam.sum(),
                                                            dtype=np.uint64)
    msisdn[roam] = np.uint64(ROAMER_MSISDN_BASE) + rng.integers(0, ROAMER_NUMBER_SPACE, roam.sum(),
                                                                dtype=np.uint64)
    mcc = (imsi // np.uint64(MCC_DIVISOR)).astype(np.uint16)
    return AttachBatch(
        imei_key=keys, malformed=malformed, imsi=imsi, mcc=mcc, msisdn=msisdn,
        ts_ms=start_ms + np.arange(n, dtype=np.int64) * step_ms,
        emergency=np.zeros(n, dtype=bool))


def country_from_state(state: EnforcementState, seed: int = 5) -> Country:
    """Enough of a Country to make traffic against a loaded snapshot."""
    rng = np.random.default_rng(seed)
    owners = state.devices.owners(state.devices.device_slots(
        rng.integers(0, state.devices.rows, OWNER_SAMPLE)))
    subscribers = np.unique(owners[owners != NO_OWNER])
    # A chunk of 2^16 keys lies within at most two TACs (a TAC spans 10^6 keys).
    first_key = state.lists.white_index.chunk_high << np.uint64(CHUNK_BITS)
    last_key = first_key + np.uint64((1 << CHUNK_BITS) - 1)
    used_tacs = np.union1d(first_key // np.uint64(SNR_SPACE), last_key // np.uint64(SNR_SPACE))
    candidates = _tacs(rng, SPARE_TAC_CANDIDATES)
    spare = candidates[~np.isin(candidates, used_tacs)]
    return Country(state.lists, state.devices, state.lists.black_index.keys(), spare,
                   subscribers)
