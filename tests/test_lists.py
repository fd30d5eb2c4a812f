"""List files in, roaring lists out; snapshots; a new generation swapped in atomically."""

from __future__ import annotations

import gc
import gzip
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from pyroaring import BitMap64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.engine.events import AttachBatch
from enforcer.engine.imei import ImeiRules, luhn_digit
from enforcer.engine.keysort import ChunkTally
from enforcer.files.listfile import CHANGED_WHILE_READ, ListFileReader, LoadReport
from enforcer.engine.keyindex import KeyIndex
from enforcer.engine.lists import BLACK_REASONS, NO_REASON, BlackReason, Lists
from enforcer.engine.devices import Devices
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.files.snapshots import (SnapshotConflict, load_snapshot, prune_generations,
                                      save_snapshot)
from enforcer.engine.decide import decide
from enforcer.files.delivery import file_refusal
from enforcer.files.devicefiles import RegistryFileReader
from enforcer.files.tacfile import TacFileReader
from rules.policy import Policy


def reader(rules: ImeiRules, chunk_lines: int = 3) -> ListFileReader:
    return ListFileReader(rules, chunk_lines=chunk_lines, report_limit=5)


def test_white_list_with_header_and_bad_rows(tmp_path: Path, rules: ImeiRules) -> None:
    path = tmp_path / "white.csv"
    clean = "35345678901234" + luhn_digit("35345678901234")
    path.write_text("imei\n490154203237518\n35209900176148\n\nnot-an-imei\n"
                    f"3520990017614823\n12345\nimei-{clean}\n490154203237519\n")
    white, report = reader(rules).read_white(path)
    assert white.keys().tolist() == [35209900176148, 35345678901234, 49015420323751]
    assert report.rows == 7 and report.loaded == 3 and report.bad == 2
    assert [(b.line, b.reason) for b in report.bad_rows] == [(5, "non_digit"), (7, "too_short")]
    assert report.check_digit_mismatch == 1


def test_header_after_a_byte_order_mark_and_blank_lines(tmp_path: Path,
                                                        rules: ImeiRules) -> None:
    path = tmp_path / "white.csv"
    path.write_bytes(b"\xef\xbb\xbf\n\n\"IMEI\"\n35209900176148\n")
    white, report = reader(rules).read_white(path)
    assert white.keys().tolist() == [35209900176148] and report.bad == 0


def test_gzip_without_header_is_detected_by_content(tmp_path: Path, rules: ImeiRules) -> None:
    path = tmp_path / "white.dat"
    with gzip.open(path, "wt") as f:
        f.writelines(f"{35209900000000 + i}\n" for i in range(1000))
    white, report = reader(rules, chunk_lines=64).read_white(path)
    assert len(white) == 1000 and report.bad == 0


def test_black_list_reasons(tmp_path: Path, rules: ImeiRules) -> None:
    path = tmp_path / "black.csv"
    path.write_text("imei,reason\n35209900176148,stolen\n490154203237518,COURT_ORDER\n"
                    "35345678901234\n35345678901235,borrowed\n")
    black, report = reader(rules).read_black(path)
    assert list(black[BlackReason.STOLEN]) == [35209900176148]
    assert list(black[BlackReason.COURT_ORDER]) == [49015420323751]
    assert [(b.line, b.reason) for b in report.bad_rows] == [
        (4, "missing_reason"), (5, "unknown_reason")]


# The field's example (DIRBS-Core's importer tests): IMEIs of TAC 01332700, a third of them
# saved by a spreadsheet as numbers, `13327001001504` for `013327001001504`.
ZERO_TAC_KEY = 1332700100150  # 01332700100150


def full_imei(key: int) -> str:
    return f"{key:014d}" + luhn_digit(f"{key:014d}")


def zero_tac_list(count: int = 300, stripped_every: int = 3) -> list[str]:
    """15-digit IMEIs of TAC 01332700; every `stripped_every`-th lost its leading zero."""
    return [full_imei(ZERO_TAC_KEY + i).lstrip("0") if i % stripped_every == 0
            else full_imei(ZERO_TAC_KEY + i) for i in range(count)]


@pytest.mark.parametrize("chunk_lines", [1, 1000])  # blocks of one line each; line by line
def test_imeis_that_lost_their_leading_zero_are_bad_rows_of_their_own(
        tmp_path: Path, rules: ImeiRules, chunk_lines: int) -> None:
    assert zero_tac_list()[:2] == ["13327001001504", "013327001001512"]
    path = tmp_path / "white.csv"
    path.write_text("".join(f"{line}\n" for line in zero_tac_list()))
    white, report = reader(rules, chunk_lines).read_white(path)
    assert (report.rows, report.loaded, report.bad, report.leading_zero_stripped) == (
        300, 200, 100, 100)
    assert [(b.line, b.reason, b.text) for b in report.bad_rows] == [
        (line, "leading_zero_stripped", zero_tac_list()[line - 1]) for line in (1, 4, 7, 10, 13)]
    assert white.keys().tolist() == [ZERO_TAC_KEY + i for i in range(300) if i % 3]


def imeisv_list(count: int = 1000, zero_tac: int = 300, stripped: int = 100) -> list[str]:
    """16-digit IMEISVs, `zero_tac` of them of TAC 01332700, whose first `stripped` lost
    their leading zero (15 digits left), the others of TAC 35209900."""
    svns = [f"{i % 97:02d}" for i in range(count)]
    zero = [f"{ZERO_TAC_KEY + i:014d}{svns[i]}" for i in range(zero_tac)]
    return ([z.lstrip("0") for z in zero[:stripped]] + zero[stripped:]
            + [f"{35209900000000 + i:014d}{svns[i]}" for i in range(count - zero_tac)])


@pytest.mark.parametrize("chunk_lines", [1, 1000])
def test_imeisvs_that_lost_their_leading_zero_are_bad_rows_of_their_own(
        tmp_path: Path, rules: ImeiRules, chunk_lines: int) -> None:
    """Stripped, an IMEISV of TAC 01332700 reads as a 15-digit IMEI of TAC 13327001 whose
    last digit is its SVN's: about eight in ten are no check digit, and in a file of IMEISVs
    those are bad rows. (The others look like IMEIs; the file is refused all the same.)"""
    lines = imeisv_list()
    path = tmp_path / "white.csv"
    path.write_text("".join(f"{line}\n" for line in lines))
    white, report = reader(rules, chunk_lines).read_white(path)
    stripped = [line for line in lines[:100]
                if line[-1] not in (luhn_digit(line[:14]), "0")]
    assert 60 <= len(stripped) < 100
    assert (report.rows, report.bad, report.leading_zero_stripped) == (
        1000, len(stripped), len(stripped))
    assert [b.text for b in report.bad_rows] == stripped[:5]
    assert {b.reason for b in report.bad_rows} == {"leading_zero_stripped"}
    assert len(white) == 1000 - len(stripped)


def test_fifteen_digit_imeis_with_a_wrong_check_digit_are_imeis_in_a_file_of_imeis(
        tmp_path: Path, rules: ImeiRules) -> None:
    lines = [full_imei(35209900000000 + i) for i in range(50)]
    lines[::10] = [line[:-1] + str((int(line[-1]) + 1) % 10 or 1) for line in lines[::10]]
    path = tmp_path / "white.csv"
    path.write_text("".join(f"{line}\n" for line in lines) + "3520990000004999\n")  # an SV
    white, report = reader(rules).read_white(path)
    assert (report.bad, report.check_digit_mismatch, len(white)) == (0, 5, 50)


def test_fourteen_digit_keys_are_keys_in_a_file_of_keys(tmp_path: Path,
                                                        rules: ImeiRules) -> None:
    keys = [ZERO_TAC_KEY * 10 + i for i in range(40)]  # 14 digits, TAC 13327001
    # Some of them pass the check digit once zero-padded, as one key in ten does.
    assert any(luhn_digit(f"0{k}"[:14]) == str(k)[-1] for k in keys)
    path = tmp_path / "white.csv"
    path.write_text("".join(f"{k}\n" for k in keys) + full_imei(35209900176148) + "\n")
    white, report = reader(rules).read_white(path)
    assert white.keys().tolist() == sorted([*keys, 35209900176148]) and report.bad == 0


def test_a_black_list_row_that_lost_its_leading_zero_is_bad(tmp_path: Path,
                                                            rules: ImeiRules) -> None:
    path = tmp_path / "black.csv"
    rows = zero_tac_list(6)
    path.write_text("imei,reason\n" + "".join(f"{row},stolen\n" for row in rows))
    black, report = reader(rules).read_black(path)
    assert sorted(black[BlackReason.STOLEN]) == [ZERO_TAC_KEY + i for i in (1, 2, 4, 5)]
    assert [(b.line, b.reason) for b in report.bad_rows] == [
        (2, "leading_zero_stripped"), (5, "leading_zero_stripped")]
    assert (report.bad, report.leading_zero_stripped, report.loaded) == (2, 2, 4)


@pytest.mark.parametrize("then", ["more", "fewer", "other", "gone"])
def test_a_white_list_that_reads_otherwise_the_second_time_is_refused(
        tmp_path: Path, rules: ImeiRules, monkeypatch, then: str) -> None:
    """A white list is read twice (counted, then placed): a file replaced, cut or removed
    between the two readings is not indexed from half of each, but refused, as one that
    cannot be read to its end."""
    path = tmp_path / "white.csv"
    imeis = [f"{key}{luhn_digit(str(key))}" for key in range(35209900176100, 35209900176160)]
    path.write_text("".join(f"{imei}\n" for imei in imeis))
    count = ChunkTally.placement

    def changed_first(self, *args):
        if then == "gone":
            path.unlink()
        else:
            path.write_text("".join(f"{imei}\n" for imei in {
                "more": imeis + ["490154203237518"], "fewer": imeis[:-1],
                "other": ["490154203237518", *imeis[1:]]}[then]))
        return count(self, *args)

    monkeypatch.setattr(ChunkTally, "placement", changed_first)
    white, report = reader(rules).read_white(path)
    assert (len(white), report.rows) == (0, 60)
    assert report.unreadable == (CHANGED_WHILE_READ if then != "gone" else
                                 "No such file or directory")
    assert file_refusal(report, 0.5) == f"not readable: {report.unreadable}"


def test_bad_row_report_is_bounded_but_counts_all(tmp_path: Path, rules: ImeiRules) -> None:
    path = tmp_path / "white.csv"
    path.write_text("x\n" * 50)
    _, report = reader(rules).read_white(path)
    assert report.bad == 50 and len(report.bad_rows) == 5


# Registry files that cannot be read to their end, as deliveries arrive broken: a cut gzip
# stream, a damaged one, and what the operating system refuses. (name, bytes or None when
# the path is made otherwise, what the report says.)
DELIVERED = gzip.compress("".join(f"{full_imei(35209900000000 + i)}\n"
                                  for i in range(2000)).encode(), mtime=0)
GZIP_HEADER_BYTES = 10  # RFC 1952 §2.3: a member's fixed header, before its deflate data
INVALID_DEFLATE_BLOCK = 0b111  # RFC 1951 §3.2.3: last block, block type 11 (reserved)
UNREADABLE_FILES = [
    ("truncated.csv.gz", DELIVERED[:len(DELIVERED) // 2],
     "truncated gzip (it ends before its end-of-stream marker)"),
    ("magic-only.csv.gz", DELIVERED[:2],
     "truncated gzip (it ends before its end-of-stream marker)"),
    ("bad-crc.csv.gz", DELIVERED[:-8] + bytes(4) + DELIVERED[-4:], "corrupt gzip (CRC check"),
    ("bad-deflate.csv.gz", DELIVERED[:GZIP_HEADER_BYTES] + bytes([INVALID_DEFLATE_BLOCK])
     + DELIVERED[GZIP_HEADER_BYTES + 1:], "corrupt gzip (Error -3 while decompressing data"),
    ("a-directory.csv", None, "Is a directory"),
    ("gone.csv", None, "No such file or directory"),
    # Write-only for root too (procfs checks the mode bits itself), where a file chmod 000
    # would not stop a test run as root.
    ("/proc/sys/vm/drop_caches", None, "Permission denied"),
]
GZIP_FAULTS = {name: content for name, content, _ in UNREADABLE_FILES if content}
READS = {
    "white": lambda rules, path: reader(rules).read_white(path),
    "black": lambda rules, path: reader(rules).read_black(path),
    "devices": lambda rules, path: registry_reader(rules).read_devices(path),
    "cartables": lambda rules, path: registry_reader(rules).read_cartables(path),
    "operator_sims": lambda rules, path: registry_reader(rules).read_operator_sims(path),
    "tac": lambda rules, path: TacFileReader(chunk_lines=3, report_limit=5).read(path),
}


def registry_reader(rules: ImeiRules) -> RegistryFileReader:
    return RegistryFileReader(rules, reader(rules), chunk_lines=3)


def unreadable_file(directory: Path, name: str, content: bytes | None) -> Path:
    path = directory / name
    if content is not None:
        path.write_bytes(content)
    elif name == "a-directory.csv":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", READS)
@pytest.mark.parametrize(("name", "content", "why"), UNREADABLE_FILES,
                         ids=[name for name, _, _ in UNREADABLE_FILES])
def test_a_file_that_cannot_be_read_to_its_end_is_refused_saying_why(
        tmp_path: Path, rules: ImeiRules, kind: str, name: str, content: bytes | None,
        why: str) -> None:
    path = unreadable_file(tmp_path, name, content)
    _, report = READS[kind](rules, path)
    assert report.unreadable is not None and report.unreadable.startswith(why)
    assert file_refusal(report, max_bad_share=1) == f"not readable: {report.unreadable}"


@settings(max_examples=150, deadline=None)
@given(st.integers(2, len(DELIVERED) - 1), st.sampled_from(sorted(READS)))
def test_a_gzip_delivery_cut_anywhere_is_refused(tmp_path_factory, rules: ImeiRules, cut: int,
                                                 kind: str) -> None:
    path = tmp_path_factory.mktemp("cut") / "white.csv.gz"
    path.write_bytes(DELIVERED[:cut])
    _, report = READS[kind](rules, path)
    assert report.unreadable is not None and "gzip" in report.unreadable


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(DELIVERED) - 1), st.integers(1, 255))
def test_a_gzip_delivery_with_any_byte_changed_is_read_whole_or_refused(
        tmp_path_factory, rules: ImeiRules, at: int, change: int) -> None:
    """Whatever byte a transfer damaged, nothing is lost silently: the reader gives the whole
    list (a header byte no reader needs: its time, its OS), or the delivery is refused."""
    damaged = bytearray(DELIVERED)
    damaged[at] ^= change
    path = tmp_path_factory.mktemp("damaged") / "white.csv.gz"
    path.write_bytes(damaged)
    white, report = reader(rules, chunk_lines=1000).read_white(path)
    whole = white.keys().tolist() == [35209900000000 + i for i in range(2000)] and report.bad == 0
    assert whole or file_refusal(report, max_bad_share=0.01) is not None


def test_snapshot_round_trip(tmp_path: Path, policy: Policy) -> None:
    """A loaded generation gives back every list, and every reason of an IMEI black-listed
    for several, as they were saved."""
    black = {BlackReason.LOST: [7], BlackReason.STOLEN: [9, 10**13 + 5],
             BlackReason.FRAUD: [9], BlackReason.COURT_ORDER: [2, 9, 10**13 + 5]}
    lists = Lists.from_keys(3, np.array([1, 2, 3, 10**13], np.uint64),
                            {r: np.array(k, np.uint64) for r, k in black.items()})
    state = EnforcementState(lists, Devices.empty(len(lists.white_index)), policy)
    save_snapshot(state, tmp_path)
    again = load_snapshot(tmp_path, policy)
    assert again.generation == 3
    assert again.lists.white_index.keys().tolist() == [1, 2, 3, 10**13]
    assert {r: k.tolist() for r, k in again.lists.black_keys().items()} == {
        r: black.get(r, []) for r in BLACK_REASONS}
    assert again.lists.stats() == lists.stats()
    keys = np.array([7, 9, 2, 10**13 + 5, 1], np.uint64)
    assert [BLACK_REASONS[c].value if c != NO_REASON else None
            for c in again.lists.black_reasons(keys).tolist()] == [
        "lost", "stolen", "court_order", "stolen", None]  # the first in BLACK_REASONS' order


def test_snapshot_keeps_the_current_generation_and_the_one_before(
        tmp_path: Path, policy: Policy) -> None:
    """The one before stays for a worker that read CURRENT just before it moved."""
    for generation in (1, 2, 3):
        lists = Lists.from_keys(generation, np.arange(generation, dtype=np.uint64))
        save_snapshot(EnforcementState(lists, Devices.empty(generation), policy), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == ["gen-00000002", "gen-00000003"]
    assert load_snapshot(tmp_path, policy).generation == 3


def test_a_generation_a_process_maps_stays_on_disk_until_it_lets_go(
        tmp_path: Path, policy: Policy) -> None:
    """A worker or `serve` maps its generation's files: saves and the retention's prune
    leave them on disk until every process mapping them has let go (this one's hold, and
    another process's)."""
    def save(generation: int) -> None:
        lists = Lists.from_keys(generation, np.arange(generation, dtype=np.uint64) + 7)
        save_snapshot(EnforcementState(lists, Devices.empty(generation), policy), tmp_path)

    def on_disk() -> list[int]:
        return sorted(int(p.name[4:]) for p in tmp_path.glob("gen-*"))

    save(1)
    held = load_snapshot(tmp_path, policy)
    save(2)
    other = subprocess.Popen(  # noqa: S603 - this interpreter
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from enforcer.files.snapshots import load_snapshot; from rules.policy import "
         f"load_policy; s = load_snapshot(Path({str(tmp_path)!r}), load_policy()); "
         "print(s.generation, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "2"
        save(3)
        save(4)
        assert on_disk() == [1, 2, 3, 4]
        assert held.lists.white_index.keys().tolist() == [7]  # still read from its files
        del held
        gc.collect()
        assert prune_generations(tmp_path) == 1
        assert on_disk() == [2, 3, 4]
    finally:
        other.stdin.close()
        other.wait()
    assert prune_generations(tmp_path) == 1
    assert on_disk() == [3, 4]


def test_pruning_around_a_held_generation_and_failed_loads_keep_no_file_open(
        tmp_path: Path, policy: Policy) -> None:
    """A worker prunes at every save and retention run, and its reconcile retries a load
    that failed: neither leaves a file open (the process's files would grow with time),
    and a failed load holds nothing, so its generation is pruned like any other."""
    def save(generation: int) -> None:
        lists = Lists.from_keys(generation, np.arange(generation, dtype=np.uint64) + 7)
        save_snapshot(EnforcementState(lists, Devices.empty(generation), policy), tmp_path)

    def open_files() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    save(1)
    held = load_snapshot(tmp_path, policy)
    save(2)
    save(3)
    before = open_files()
    for _ in range(5):
        assert prune_generations(tmp_path) == 0  # generation 1 is held here
    assert open_files() == before
    (tmp_path / "gen-00000003" / "lists" / "lists.json").unlink()
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            load_snapshot(tmp_path, policy)
    assert open_files() == before
    del held
    gc.collect()
    save(4)
    save(5)
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == ["gen-00000004", "gen-00000005"]


def test_decisions_in_flight_see_one_generation_or_the_other(policy: Policy) -> None:
    """Even generations register the even keys, odd ones the odd keys: every batch decided
    while generations are being swapped sees exactly one of the two."""
    keys = np.arange(35_000_000_000_000, 35_000_000_004_000, dtype=np.uint64)
    n = len(keys)
    whites = {0: keys[0::2], 1: keys[1::2]}

    def generation(g: int) -> EnforcementState:
        white = whites[g % 2]
        return EnforcementState(Lists.from_keys(g, white), Devices.empty(len(white)), policy)

    prebuilt = {0: generation(2), 1: generation(3)}
    holder = StateHolder(prebuilt[0])
    batch = AttachBatch(keys, np.zeros(n, bool), np.full(n, 432111234567890, np.uint64),
                        np.full(n, 432, np.uint16), np.full(n, 989121234567, np.uint64),
                        np.zeros(n, np.int64), np.zeros(n, bool))
    no_cartable = [r.name for r in policy.rules].index("no_cartable")
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        g = 4
        while not stop.is_set():
            template = prebuilt[g % 2]
            holder.swap(EnforcementState(Lists.build(g, template.lists.white_index),
                                         template.devices, policy))
            g += 1
            swaps += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    seen = set()
    try:
        for _ in range(100):
            registered = decide(batch, holder.current).rule == no_cartable
            even, odd = registered[0::2], registered[1::2]
            assert (even.all() and not odd.any()) or (odd.all() and not even.any())
            seen.add(bool(even[0]))
    finally:
        stop.set()
        thread.join()
    assert swaps > 1 and seen == {True, False}


def test_swap_refuses_an_older_generation(policy: Policy) -> None:
    state = EnforcementState(Lists.from_keys(5, np.array([1], np.uint64)), Devices.empty(1),
                             policy)
    holder = StateHolder(state)
    with pytest.raises(ValueError):
        holder.swap(EnforcementState(Lists.from_keys(5, np.array([1], np.uint64)),
                                     Devices.empty(1), policy))


line_texts = st.one_of(
    st.integers(0, 10**14 - 1).map(lambda k: f"{k:014d}"),
    st.integers(0, 10**13 - 1).map(lambda k: full_imei(k).lstrip("0")),
    st.integers(0, 10**15 - 1).map(lambda k: f"{k:015d}"),
    st.integers(0, 10**16 - 1).map(lambda k: f"{k:016d}"),
    st.sampled_from(["", "imei", " 35209900176148", "35209900176148\r", "x1", "3520990017614",
                     "۳۵۲۰۹۹۰۰۱۷۶۱۴۸۱", "\ufeffimei", "35209900176148,extra", "\r"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.lists(line_texts, min_size=1, max_size=30),
                          st.integers(0, 10**14 - 1).flatmap(
                              lambda k: st.integers(1, 40).map(
                                  lambda n: [f"{k + i:015d}" for i in range(n)])),
                          st.integers(10**12, 10**13 - 41).flatmap(  # zeros stripped
                              lambda k: st.integers(1, 40).map(
                                  lambda n: [full_imei(k + i)[1:] for i in range(n)])),
                          st.integers(10**12, 10**13 - 41).flatmap(  # IMEISVs, stripped
                              lambda k: st.integers(1, 40).map(
                                  lambda n: [f"{k + i:014d}{i % 100:02d}"[1:]
                                             for i in range(n)]))),
                max_size=6), st.booleans())
def test_the_block_reader_agrees_with_reading_line_by_line(tmp_path_factory, rules: ImeiRules,
                                                           runs, crlf: bool) -> None:
    end = "\r\n" if crlf else "\n"
    path = tmp_path_factory.mktemp("white") / "white.csv"
    path.write_bytes("".join(line + end for run in runs for line in run).encode())
    reader = ListFileReader(rules, chunk_lines=2, report_limit=1000)  # blocks of ~32 bytes
    white, report = reader.read_white(path)
    reference = LoadReport(str(path))
    stripped = reader.zero_stripped()
    chunks = list(reader._chunks(path, reference, False, stripped))  # line by line
    keys = np.concatenate([k for k, _, _ in chunks] or [np.zeros(0, np.uint64)])
    held = np.concatenate([h for _, _, h in chunks] or [np.zeros(0, np.uint8)])
    expected = np.unique(keys[~np.isin(held, list(stripped.settle(reference)))])
    assert white.keys().tolist() == expected.tolist()
    reference.loaded = len(expected)
    assert report.as_json() == reference.as_json()


def test_a_generation_saved_meanwhile_by_another_importer_is_not_overwritten(
        tmp_path: Path, policy: Policy) -> None:
    first = EnforcementState(Lists.from_keys(2, np.array([1], np.uint64)), Devices.empty(1),
                             policy)
    save_snapshot(first, tmp_path)
    racing = EnforcementState(Lists.from_keys(2, np.array([1, 2], np.uint64)),
                              Devices.empty(2), policy)
    with pytest.raises(SnapshotConflict, match="not newer than 2"):
        save_snapshot(racing, tmp_path)
    assert len(load_snapshot(tmp_path, policy).lists.white_index) == 1


@given(st.sets(st.integers(0, 300), max_size=60), st.sets(st.integers(0, 300), max_size=30),
       st.lists(st.integers(0, 310), max_size=40))
def test_black_reasons_where_white_rows_are_known_are_those_of_the_black_list(
        white: set[int], black: set[int], asked: list[int]) -> None:
    lists = Lists.from_keys(1, np.array(sorted(white), np.uint64),
                            {BlackReason.STOLEN: np.array(sorted(black)[::2], np.uint64),
                             BlackReason.FRAUD: np.array(sorted(black)[1::2], np.uint64)})
    keys = np.array(asked, np.uint64)
    assert (lists.black_reasons_at(keys, lists.white_index.rows(keys)).tolist()
            == lists.black_reasons(keys).tolist())


@given(st.lists(st.integers(0, 1 << 20), max_size=300), st.lists(st.integers(0, 1 << 20),
                                                                 max_size=300),
       st.lists(st.tuples(st.integers(0, 1 << 20), st.sampled_from(BLACK_REASONS)),
                max_size=60))
def test_a_new_white_list_beside_the_old_black_list_is_the_lists_built_afresh(
        old_white: list[int], new_white: list[int],
        black: list[tuple[int, BlackReason]]) -> None:
    """`with_white` (a white import) shares the black and cut-off indexes, and finds the
    black-listed rows of the new white list, as `Lists.build` would."""
    def bitmap(keys) -> BitMap64:
        return BitMap64(sorted(set(keys)))

    by_reason = {r: bitmap(k for k, reason in black if reason is r) for r in BLACK_REASONS}
    old = Lists.build(1, bitmap(old_white), by_reason, bitmap(old_white[:3]))
    new_index = KeyIndex.from_sorted_keys(np.array(sorted(set(new_white)), np.uint64))
    got = old.with_white(2, new_index)
    want = Lists.from_black_keys(2, new_index, old.black_keys(), old.cut_imeis, old.cut_pairs)
    for index in ("white_index", "black_index", "cut_imei_index"):
        assert getattr(got, index).keys().tolist() == getattr(want, index).keys().tolist()
    assert got.black_reasons_held.tolist() == want.black_reasons_held.tolist()
    assert (got.white_black.words.tolist(), got.white_black.rows, got.generation) == (
        want.white_black.words.tolist(), want.white_black.rows, want.generation)
