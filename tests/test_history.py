"""Slot-usage history in a real PostgreSQL: rows per pair and month, idempotent replays,
repeats within the resolution cost no write, migrations applied once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import psycopg

from enforcer.db.history import HistoryStore, usage_of
from enforcer.db.migrate import migrate, migrations
from enforcer.engine.decide import decide
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.history import aggregate
from enforcer.engine.usagecache import UsageCache
from enforcer.engine.imei import ImeiRules, parse_imei
from enforcer.engine.state import EnforcementState
from enforcer.engine.subscriber import parse_imsi
from tests.test_decide import BUYER, DUAL, OWNER, UNREGISTERED, home_imsi, make_state

HOUR_MS = 3_600_000
NOV_23 = int(datetime(2026, 11, 23, 10, tzinfo=timezone.utc).timestamp() * 1000)


def batch_of(rules: ImeiRules, *events: tuple[int | str, int, int]) -> AttachBatch:
    return AttachBatch.from_events([
        AttachEvent(parse_imei(str(imei), rules), parse_imsi(home_imsi(msisdn)), msisdn, ts)
        for imei, msisdn, ts in events])


def write(dsn: str, state: EnforcementState, batch: AttachBatch,
          cache: UsageCache | None = None) -> int:
    rows = aggregate(batch, decide(batch, state))
    if cache is not None:
        rows = rows.take(np.flatnonzero(cache.needed(rows)))
    store = HistoryStore()
    with psycopg.connect(dsn) as conn:
        store.ensure_partitions(conn, set(rows.month.tolist()))
        written = store.write(conn, rows)
    if cache is not None:
        cache.remember(rows)
    return written


def test_events_in_history_rows_out(dsn, rules, policy) -> None:
    state = make_state(policy)
    batch = batch_of(rules, (DUAL[0], OWNER, NOV_23), (DUAL[1], BUYER, NOV_23 + 5),
                     (DUAL[0], OWNER, NOV_23 + 2 * 86_400_000), (UNREGISTERED, BUYER, NOV_23),
                     (f"imeisv-{DUAL[0]}07", OWNER, NOV_23 + 9), ("12", OWNER, NOV_23))
    assert write(dsn, state, batch) == 3
    with psycopg.connect(dsn) as conn:
        usage = {(u.imei_key, u.msisdn): u for u in usage_of(conn, [DUAL[0], DUAL[1],
                                                                    UNREGISTERED])}
    owner = usage[(DUAL[0], OWNER)]
    assert (owner.slot, owner.days_seen) == (0, 2)
    assert owner.first_seen == datetime.fromtimestamp(NOV_23 / 1000, tz=timezone.utc)
    assert owner.last_seen == datetime.fromtimestamp((NOV_23 + 2 * 86_400_000) / 1000,
                                                     tz=timezone.utc)
    assert usage[(DUAL[1], BUYER)].slot == 1
    assert usage[(UNREGISTERED, BUYER)].slot is None


def test_a_replayed_batch_changes_nothing(dsn, rules, policy) -> None:
    state = make_state(policy)
    batch = batch_of(rules, (DUAL[0], OWNER, NOV_23), (DUAL[0], OWNER, NOV_23 + HOUR_MS * 30))
    write(dsn, state, batch)
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT * FROM slot_usage ORDER BY imei_key").fetchall()
    write(dsn, state, batch)
    write(dsn, state, batch_of(rules, (DUAL[0], OWNER, NOV_23 + HOUR_MS)))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT * FROM slot_usage ORDER BY imei_key").fetchall() == before


def test_months_get_their_own_partition(dsn, rules, policy) -> None:
    december = int(datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp() * 1000)
    write(dsn, make_state(policy), batch_of(rules, (DUAL[0], OWNER, NOV_23),
                                            (DUAL[0], OWNER, december)))
    with psycopg.connect(dsn) as conn:
        parts = conn.execute("SELECT tableoid::regclass::text, count(*) FROM slot_usage"
                             " GROUP BY 1 ORDER BY 1").fetchall()
    assert parts == [("slot_usage_2026_11", 1), ("slot_usage_2026_12", 1)]


def test_repeats_within_the_resolution_cost_no_write(dsn, rules, policy) -> None:
    state, cache = make_state(policy), UsageCache(1000, HOUR_MS)
    hour = NOV_23 - NOV_23 % HOUR_MS
    assert write(dsn, state, batch_of(rules, (DUAL[0], OWNER, hour)), cache) == 1
    assert write(dsn, state, batch_of(rules, (DUAL[0], OWNER, hour + 60_000)), cache) == 0
    assert write(dsn, state, batch_of(rules, (DUAL[0], OWNER, hour + HOUR_MS)), cache) == 1
    assert write(dsn, state, batch_of(rules, (DUAL[0], BUYER, hour + HOUR_MS)), cache) == 1
    with psycopg.connect(dsn) as conn:
        (last,) = conn.execute("SELECT max(last_seen) FROM slot_usage WHERE imsi = %s",
                               (int(home_imsi(OWNER)),)).fetchone()
    assert last == datetime.fromtimestamp((hour + HOUR_MS) / 1000, tz=timezone.utc)


def test_migrations_apply_once_even_from_several_workers_at_once(dsn) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")  # a new database
    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(lambda _: migrate(dsn), range(4)))
    everything = [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert sorted(applied, key=len) == [[], [], [], everything]
    assert migrate(dsn) == []
    with psycopg.connect(dsn) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [m.version for m in migrations()]
