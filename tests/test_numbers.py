"""The IMSI -> MSISDN map (enforcer/engine/numbers.py) answers what a dict answers, whatever
pairs are laid over it and whenever its small layer is merged; the pairs an attach batch
teaches it; an operator's provisioning file of them (enforcer/files/subscriberfile.py,
`subscribers import`); and their table in PostgreSQL (enforcer/db/subscribers.py)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_cli import run
from tests.test_lists import GZIP_FAULTS, reader

from enforcer.engine.events import AttachBatch
from enforcer.files.subscriberfile import SubscriberFileReader
from enforcer.files.listfile import LoadReport
from enforcer.clock import MS_PER_DAY, MS_PER_S
from enforcer.db import subscribers
from enforcer.db.subscribers import SEEN_AT_STEP_DAYS, numbers_since, record_numbers
from enforcer.engine.history import SlotUsageRows, learned_pairs
from enforcer.engine.numbers import OFFSET_SPAN, LearnedPairs, MsisdnsByImsi

IMSIS = st.integers(432_110_000_000_000, 432_110_000_000_040) | st.integers(10**4, 10**15 - 1)
# A country's numbers, and some far from them (a foreign SIM's, an edge of the span).
NATIONAL = st.integers(989_120_000_000, 989_129_999_999)
MSISDNS = NATIONAL | st.integers(10**6, 10**15 - 1) | st.sampled_from(
    [989_120_000_000 + OFFSET_SPAN, 989_120_000_000 - OFFSET_SPAN, 1, 2**63])
BATCHES = st.lists(st.lists(st.tuples(IMSIS, MSISDNS), max_size=12), max_size=8)


def columns(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([i for i, _ in pairs], np.uint64), np.array([m for _, m in pairs], np.uint64))


def agrees(numbers: MsisdnsByImsi, reference: dict[int, int], others: list[int]) -> None:
    asked = list(reference) + others
    has, msisdn = numbers.find(np.array(asked, np.uint64))
    got = {imsi: int(m) for imsi, h, m in zip(asked, has.tolist(), msisdn) if h}
    assert got == reference
    assert len(numbers) == len(reference)
    for imsi in asked[:5]:
        assert numbers.get(imsi) == reference.get(imsi)


@given(st.lists(st.tuples(IMSIS, MSISDNS), max_size=30), BATCHES, st.integers(1, 6),
       st.lists(IMSIS, max_size=10))
@settings(max_examples=300, deadline=None)
def test_the_map_answers_as_a_dict(first, batches, recent_max, others) -> None:
    numbers = MsisdnsByImsi.of(*columns(first), recent_max=recent_max)
    reference = dict(first)
    agrees(numbers, reference, others)
    # Sorted and unique, as serve reads them: taken as they come.
    agrees(MsisdnsByImsi.of(*columns(sorted(reference.items()))), reference, others)
    for batch in batches:
        numbers = numbers.with_pairs(*columns(batch))
        reference.update(batch)
        agrees(numbers, reference, others)
        assert numbers.recent_size < recent_max  # merged when it reaches it
        # What it holds already, a follower's overlap read again, takes no room.
        assert numbers.with_pairs(*columns(list(reference.items()))) is numbers
    agrees(numbers.merged(), reference, others)


@given(BATCHES)
@settings(max_examples=100, deadline=None)
def test_a_map_learned_from_nothing_answers_as_a_dict(batches) -> None:
    numbers, reference = MsisdnsByImsi.empty(recent_max=4), {}
    for batch in batches:
        numbers = numbers.with_pairs(*columns(batch))
        reference.update(batch)
    agrees(numbers, reference, [])


def test_a_countrys_numbers_take_twelve_bytes_a_subscriber() -> None:
    n = 10_000
    imsis = np.arange(432_110_000_000_000, 432_110_000_000_000 + n, dtype=np.uint64)
    msisdns = np.random.default_rng(7).integers(989_000_000_000, 989_999_999_999, n,
                                               dtype=np.uint64)
    numbers = MsisdnsByImsi.of(imsis, msisdns)
    assert numbers.nbytes == 12 * n
    assert numbers.get(int(imsis[17])) == int(msisdns[17])


HOME, ROAMER = 432, 262


def test_an_attach_batch_teaches_the_latest_number_of_each_home_imsi() -> None:
    imsi = np.array([43211_0000000001, 43211_0000000001, 26201_0000000009, 43211_0000000002],
                    np.uint64)
    batch = AttachBatch(imei_key=np.arange(4, dtype=np.uint64), malformed=np.zeros(4, bool),
                        imsi=imsi, mcc=np.array([HOME, HOME, ROAMER, HOME], np.uint16),
                        msisdn=np.array([989121, 989122, 49151, 989123], np.uint64),
                        ts_ms=np.array([2_000, 1_000, 1_000, 1_000], np.int64),
                        emergency=np.zeros(4, bool))
    # The rows to be written: the second IMSI's is not (the database holds it already).
    rows = SlotUsageRows(month=np.zeros(3, np.int32), imei_key=np.arange(3, dtype=np.uint64),
                         imsi=imsi[:3], msisdn=batch.msisdn[:3], slot=np.zeros(3, np.int16),
                         first_seen_ms=batch.ts_ms[:3], last_seen_ms=batch.ts_ms[:3],
                         days=np.ones(3, np.int32))
    learned = learned_pairs(batch, rows, (HOME,))
    assert (learned.imsi.tolist(), learned.msisdn.tolist(), learned.seen_ms.tolist()) == (
        [43211_0000000001], [989121], [2_000])


def pairs(imsis: list[int], msisdns: list[int], seen_ms: list[int]) -> LearnedPairs:
    return LearnedPairs(np.array(imsis, np.uint64), np.array(msisdns, np.uint64),
                        np.array(seen_ms, np.int64))


def held(conn: psycopg.Connection, since=None) -> dict[int, int]:
    imsis, msisdns, _ = numbers_since(conn, since)
    return dict(zip(imsis.tolist(), msisdns.tolist()))


def test_the_table_keeps_each_imsis_latest_number(dsn) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        record_numbers(conn, pairs([1, 2], [10, 20], [1_000, 1_000]))
        _, _, asked = numbers_since(conn, None)
        assert held(conn) == {1: 10, 2: 20}
        # An older attach (a replay, a partition read late) changes nothing; a newer one does.
        record_numbers(conn, pairs([1, 2], [11, 21], [500, 2_000]))
        _, _, after = numbers_since(conn, None)
        # The same number seen again is no change, to write or to follow.
        record_numbers(conn, pairs([2], [21], [3_000]))
        assert held(conn) == {1: 10, 2: 21}
        assert held(conn, asked) == {2: 21}
        assert held(conn, after) == {}


def seen_at(conn: psycopg.Connection) -> dict[int, int]:
    return {imsi: int(at.timestamp() * MS_PER_S) for imsi, at in conn.execute(
        "SELECT imsi, seen_at FROM subscribers")}


def test_a_subscriber_still_attaching_is_seen_again_monthly_unfollowed(dsn) -> None:
    """Retention counts from seen_at: the same number seen SEEN_AT_STEP_DAYS later moves it
    on (sooner writes nothing), and serve, which follows new numbers, reads nothing."""
    step = SEEN_AT_STEP_DAYS * MS_PER_DAY
    with psycopg.connect(dsn, autocommit=True) as conn:
        record_numbers(conn, pairs([1, 2], [10, 20], [1_000, 1_000]))
        _, _, asked = numbers_since(conn, None)
        record_numbers(conn, pairs([1, 2], [10, 20], [1_000 + step - 1, 1_000 + step]))
        assert seen_at(conn) == {1: 1_000, 2: 1_000 + step}
        assert held(conn, asked) == {}


def test_the_whole_table_is_read_back_across_pages(dsn, monkeypatch) -> None:
    monkeypatch.setattr(subscribers, "NUMBERS_PAGE", 1_000)
    n = 2_345  # two whole pages and a part
    imsis = np.arange(432_110_000_000_000, 432_110_000_000_000 + n, dtype=np.uint64)
    msisdns = np.random.default_rng(3).integers(989_000_000_000, 989_999_999_999, n,
                                               dtype=np.uint64)
    with psycopg.connect(dsn, autocommit=True) as conn:
        record_numbers(conn, pairs(imsis.tolist(), msisdns.tolist(), [1_000] * n))
        read_imsis, read_msisdns, _ = numbers_since(conn, None)
    assert read_imsis.tolist() == imsis.tolist()  # in IMSI order, as the map takes them
    assert read_msisdns.tolist() == msisdns.tolist()


PROVISIONING = """imsi,msisdn
432110000000001,989120000001
432110000000002, +989120000002
262011234567890,491510000003
432110000000004
43211000000000x,989120000005
432110000000006,0912 000 0006

432110000000001,989120000007
"""


def test_a_provisioning_file_gives_each_home_imsis_last_number_and_bad_rows_by_line(
        tmp_path: Path, rules) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text(PROVISIONING)
    report = LoadReport(str(path))
    chunks = list(SubscriberFileReader(reader(rules, chunk_lines=100), 100, (432,)).chunks(
        path, report, 5_000))
    (pairs,) = chunks
    assert dict(zip(pairs.imsi.tolist(), pairs.msisdn.tolist())) == {
        432110000000001: 989120000007, 432110000000002: 989120000002}
    assert pairs.seen_ms.tolist() == [5_000, 5_000]
    assert [(b.line, b.reason) for b in report.bad_rows] == [
        (4, "not_home_imsi"), (5, "not_imsi_and_msisdn"), (6, "bad_imsi"), (7, "bad_msisdn")]
    assert (report.rows, report.loaded, report.bad) == (7, 3, 4)


def test_subscribers_import_stores_a_file_and_one_refused_nothing(tmp_path, dsn) -> None:
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn}
    path = tmp_path / "subscribers.csv.gz"
    path.write_bytes(gzip.compress(PROVISIONING.encode()))
    # Four bad rows of seven: refused unless the bad share allowed is raised.
    refused = run("subscribers", "import", str(path), check=False, env=env)
    assert refused.returncode == 3 and "4 of 7 rows are bad" in refused.stderr
    done = run("subscribers", "import", str(path), env={**env, "EIR_LISTS__MAX_BAD_SHARE": "0.6"})
    assert (json.loads(done.stdout)["loaded"], json.loads(done.stdout)["refused"]) == (3, None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert held(conn) == {432110000000001: 989120000007, 432110000000002: 989120000002}
        conn.execute("DELETE FROM subscribers")
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(GZIP_FAULTS["truncated.csv.gz"])
    refused = run("subscribers", "import", str(cut), check=False, env=env)
    assert refused.returncode == 3
    assert refused.stderr.startswith(f"eir-enforcer subscribers import: refused: {cut}: not "
                                     "readable: truncated gzip")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert held(conn) == {}
