"""The consistency check: the registry's changes this worker holds in memory against those
stored in PostgreSQL, compared as a count and a checksum per shard of each map of the
overlay. Where they differ, the overlay rebuilt from the database replaces the one in
memory (the database is the record; memory is derived from it).

Only the events before the overlay's read positions are expected in memory: those after are
still on their way through the topic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import psycopg

from enforcer.follow.layover import stored_changes
from enforcer.config import Config
from enforcer.db.registry_events import StoredEvent, applied_events_after
from enforcer.engine.imei import ImeiRules
from enforcer.engine.overlay import Overlay
from enforcer.engine.state import EnforcementState, StateHolder

log = logging.getLogger("eir.consistency")

MAPS = ("imeis", "owners", "cartables", "operator_sims", "black")
_U64 = np.uint64


class StateMoved(RuntimeError):
    """A new generation came in while the state was being checked; the next attempt
    checks again."""


@dataclass(frozen=True)
class Drift:
    map: str
    shard: int
    memory: tuple[int, int]  # (entries, checksum)
    database: tuple[int, int]


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _columns(overlay: Overlay, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(shard key, value) of each entry of one map."""
    if name == "operator_sims":
        pairs = list(overlay.operator_sims.items())
        keys = np.array([imei for (imei, _), _ in pairs], dtype=_U64)
        values = np.array([msisdn * 2 + flag for (_, msisdn), flag in pairs], dtype=_U64)
        return keys, values
    mapping = getattr(overlay, name)
    return (np.fromiter(mapping.keys(), dtype=_U64, count=len(mapping)),
            np.fromiter(mapping.values(), dtype=_U64, count=len(mapping)))


def digests(overlay: Overlay, shards: int) -> dict[tuple[str, int], tuple[int, int]]:
    """(map, shard) -> (entries, checksum); the checksum ignores the order of entries."""
    out = {}
    for name in MAPS:
        keys, values = _columns(overlay, name)
        shard = (keys % _U64(shards)).astype(np.int64)
        mixed = _mix(keys ^ _mix(values + _U64(1)))
        counts = np.bincount(shard, minlength=shards)
        sums = np.zeros(shards, dtype=_U64)
        np.add.at(sums, shard, mixed)  # wraps modulo 2**64, as a checksum should
        for s in range(shards):
            out[(name, s)] = (int(counts[s]), int(sums[s]))
    return out


def held_in_memory(stored: list[StoredEvent], overlay: Overlay,
                   topic: str) -> list[StoredEvent]:
    return [row for row in stored if row.at.topic != topic
            or ((row.at.incarnation, row.at.offset)
                < overlay.read_to.get(row.at.partition, (0, 0)))]


def expected_overlay(state: EnforcementState, stored: list[StoredEvent], rules: ImeiRules,
                     config: Config) -> Overlay:
    fresh = Overlay(base_devices=state.devices.count, read_to=state.overlay.read_to)
    overlay, _ = fresh.apply_all(stored_changes(stored, rules, config), state.lists,
                                 state.devices)
    return overlay


def compare(memory: Overlay, database: Overlay, shards: int) -> list[Drift]:
    mine, theirs = digests(memory, shards), digests(database, shards)
    return [Drift(name, shard, mine[(name, shard)], theirs[(name, shard)])
            for name, shard in mine if mine[(name, shard)] != theirs[(name, shard)]]


def check_consistency(holder: StateHolder, conn: psycopg.Connection, rules: ImeiRules,
                      config: Config) -> dict[str, int]:
    state = holder.current
    shards = config.jobs.consistency_shards
    topic = config.kafka.registry_topic
    stored = held_in_memory(applied_events_after(conn, topic, state.watermark), state.overlay,
                            topic)
    expected = expected_overlay(state, stored, rules, config)
    drift = compare(state.overlay, expected, shards)
    for d in drift:
        log.warning("registry state drifted from the database",
                    extra={"map": d.map, "shard": d.shard, "memory": d.memory,
                           "database": d.database})
    if drift:
        def repair(current: EnforcementState) -> EnforcementState:
            if current.lists is not state.lists:
                raise StateMoved("a new generation came in during the check")
            # What the follower applied meanwhile, over the database's picture.
            arrived = current.overlay.events[len(state.overlay.events):]
            repaired, _ = expected.apply_all(arrived, current.lists, current.devices)
            return replace(current, overlay=repaired.at(current.overlay.read_to))
        holder.update(repair)
    return {"events": len(stored), "shards": shards * len(MAPS), "drifted_shards": len(drift),
            "repaired": int(bool(drift))}
