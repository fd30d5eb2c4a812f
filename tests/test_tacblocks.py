"""The regulator's blocked TACs: the file read back as written, bad rows by line, lookups
against a dict, kept with the snapshot's generation, replaced by `registry import --kind
tac_blocked` and by the reconcile job (a `tac_blocked*` or `tac-blocked*` file is no TAC
database), and the condition `tac_blocked` decided, with the shipped rule end to end."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.clock import SystemClock
from enforcer.config import load_config
from enforcer.engine.fold import fold
from enforcer.engine.imei import SNR_SPACE
from enforcer.engine.state import StateHolder
from enforcer.engine.tacblocks import NOT_BLOCKED, TAC_BLOCK_REASONS, BlockedTacs
from enforcer.files.importing import Kind
from enforcer.files.snapshots import load_snapshot, save_snapshot
from enforcer.files.tacblockfile import TacBlockFileReader
from enforcer.jobs.reconcile import kind_of, reconcile
from rules.policy import Policy
from tests.kafkatools import wait_for
from tests.test_cli import run
from tests.test_decide import BUYER, DUAL, OWNER, UNOWNED, UNREGISTERED, make_state
from tests.test_importing import import_, state_dir  # noqa: F401  (a fixture)
from tests.test_lists import full_imei
from tests.test_notice_lifecycle import sent
from tests.test_registry_events import verdicts_of, with_verdicts
from tests.test_tacs import COUNTRY_TACS, decided
from tests.test_worker import attach, now_ms

# DUAL's model (35209900) is recalled, UNOWNED's (35111111) never type-approved.
SMALL = [(35209900, "recalled"), (35111111, "not_type_approved"), (1234567, "court_order")]


def reader(chunk_lines: int = 3, report_limit: int = 5) -> TacBlockFileReader:
    return TacBlockFileReader(chunk_lines, report_limit)


def blocked_file(entries: list[tuple[int, str]], header: bool = True) -> str:
    return ("tac,reason\n" if header else "") + "".join(f"{tac:08d},{reason}\n"
                                                          for tac, reason in entries)


def as_read(blocked: BlockedTacs) -> list[tuple[int, str]]:
    return [(int(t), TAC_BLOCK_REASONS[int(r)].value) for t, r in zip(blocked.tac, blocked.reason)]


def test_the_small_file_reads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "tac_blocked.csv.gz"
    path.write_bytes(gzip.compress(("reason,TAC\n" + "".join(
        f"{reason.replace('_', ' ').title()},{tac:08d}\n" for tac, reason in SMALL)).encode()))
    blocked, report = reader().read(path)
    assert (report.rows, report.loaded, report.bad) == (3, 3, 0)
    assert as_read(blocked) == sorted(SMALL)


def test_bad_rows_are_reported_by_line_and_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "tac_blocked.csv"
    path.write_text(blocked_file(SMALL[:1]) + "1234567,recalled\n35x09901,recalled\n\n"
                    "35209900,court_order\n86000002,too_cheap\n86000003\n"
                    "86000004,\"recalled\n")
    blocked, report = reader().read(path)
    assert [(b.line, b.reason) for b in report.bad_rows] == [
        (3, "leading_zero_stripped"), (4, "bad_tac"), (6, "duplicate_tac"),
        (7, "unknown_reason"), (8, "field_count")]
    assert (report.rows, report.bad, report.loaded, report.leading_zero_stripped) == (
        7, 6, 1, 1)  # the 6th bad row (an unclosed quote) counted beyond the limit
    assert as_read(blocked) == SMALL[:1]


written = st.lists(st.tuples(st.integers(10**7, 10**8 - 1),
                             st.sampled_from([r.value for r in TAC_BLOCK_REASONS])),
                   max_size=40, unique_by=lambda entry: entry[0])


@settings(max_examples=150, deadline=None)
@given(written, st.booleans(), st.booleans(), st.integers(1, 7),
       st.lists(st.integers(0, 40), max_size=5))
def test_a_file_reads_as_written_and_bad_rows_anywhere_at_their_line(
        tmp_path_factory, entries, header: bool, zipped: bool, chunk_lines: int,
        at: list[int]) -> None:
    lines = blocked_file(entries, header=False).splitlines()
    bad_lines: list[int] = []
    for position in sorted(at):
        position = min(position, len(lines))
        lines.insert(position, "not-a-tac,recalled")
        bad_lines = [line + (line > position) for line in bad_lines] + [position + 1]
    text = ("tac,reason\n" if header else "") + "\n".join(lines) + "\n"
    path = tmp_path_factory.mktemp("blocked") / "tac_blocked.csv"
    path.write_bytes(gzip.compress(text.encode()) if zipped else text.encode())
    blocked, report = reader(chunk_lines, report_limit=100).read(path)
    assert sorted(b.line - header for b in report.bad_rows) == sorted(bad_lines)
    assert as_read(blocked) == sorted(entries)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 10**8 - 1), st.integers(0, len(TAC_BLOCK_REASONS) - 1),
                       max_size=50),
       st.lists(st.integers(0, 10**14 - 1), max_size=50))
def test_lookups_agree_with_a_dict(tacs: dict[int, int], keys: list[int]) -> None:
    blocked = BlockedTacs.build(np.array(list(tacs), np.uint32),
                                np.array(list(tacs.values()), np.uint8))
    keys += [tac * SNR_SPACE + 7 for tac in list(tacs)[:10]] + [2**64 - 1]  # NO_KEY too
    reasons = blocked.reasons(np.array(keys, dtype=np.uint64))
    assert reasons.tolist() == [tacs.get(key // SNR_SPACE, NOT_BLOCKED) if key < 10**14
                                else NOT_BLOCKED for key in keys]


def test_a_delivery_is_named_by_the_longest_kind_it_begins_with() -> None:
    assert kind_of(Path("tac_blocked-2026-11-29.csv")) is Kind.TAC_BLOCKED
    assert kind_of(Path("tac-blocked-2026-11-29.csv.gz")) is Kind.TAC_BLOCKED
    assert kind_of(Path("tac-2026-11-29.csv.gz")) is Kind.TAC
    assert kind_of(Path("tacs.csv")) is Kind.TAC
    assert kind_of(Path("black-2026.csv")) is Kind.BLACK
    assert kind_of(Path("grey-2026.csv")) is None


def test_the_list_is_kept_with_the_generation_and_through_a_fold(tmp_path: Path,
                                                                 policy: Policy) -> None:
    path = tmp_path / "tac_blocked.csv"
    path.write_text(blocked_file(SMALL))
    blocked, _ = reader().read(path)
    state = make_state(policy)
    save_snapshot(state, tmp_path / "without")
    assert load_snapshot(tmp_path / "without", policy).blocked_tacs is None
    save_snapshot(replace(state, blocked_tacs=blocked), tmp_path / "with")
    assert as_read(load_snapshot(tmp_path / "with", policy).blocked_tacs) == sorted(SMALL)
    folded, _ = fold(replace(state, blocked_tacs=blocked), state.generation + 1)
    assert folded.blocked_tacs is blocked


def test_registry_import_replaces_the_list_and_refuses_it_as_it_refuses_lists(
        state_dir: Path, tmp_path: Path, policy: Policy) -> None:  # noqa: F811
    path = tmp_path / "blocked.csv"
    path.write_text(blocked_file(SMALL))
    tacs = tmp_path / "tac.csv"
    tacs.write_text(COUNTRY_TACS)
    assert import_(state_dir, "tac", tacs).returncode == 0
    done = import_(state_dir, "tac_blocked", path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["kind"], report["before"], report["after"], report["added"],
            report["leading_zero_after"], report["generation"]) == (
        "tac_blocked", 0, 3, 3, 1, 3)
    newer = [(35209900, "court_order"), *SMALL[1:], (86000009, "recalled")]
    path.write_text(blocked_file(newer))
    report = json.loads(import_(state_dir, "tac_blocked", path).stdout)
    assert (report["before"], report["after"], report["added"], report["removed"],
            report["changed"]) == (3, 4, 1, 0, 1)
    path.write_text(blocked_file(newer[:1]))
    done = import_(state_dir, "tac_blocked", path)
    assert done.returncode == 3
    assert "the tac_blocked list would shrink from 4 to 1" in json.loads(done.stdout)["refused"]
    state = load_snapshot(state_dir, policy)
    assert as_read(state.blocked_tacs) == sorted(newer)  # type: ignore[arg-type]
    assert state.tacs is not None and len(state.tacs) == 5  # the TAC database kept
    stats = json.loads(run("lists", "stats", "--state", str(state_dir)).stdout)
    assert (stats["tacs"]["tacs"], stats["blocked_tacs"]) == (5, {"tacs": 4, "bytes": 20})


def test_a_list_dropped_for_the_reconcile_job_is_imported_as_blocked_tacs(
        tmp_path: Path, policy: Policy) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = load_config(environ={"EIR_STATE__DIR": str(tmp_path / "state"),
                                  "EIR_JOBS__DROP_DIR": str(drop),
                                  "EIR_JOBS__DROP_SETTLE_S": "0"})
    (drop / "tac-blocked-2026-11-29.csv").write_text(blocked_file(SMALL))
    holder = StateHolder(make_state(policy))
    counts = reconcile(holder, config, SystemClock())
    assert counts == {"adopted": 0, "imported": 1, "refused": 0, "stale_events": 0}
    assert holder.current.tacs is None
    assert as_read(holder.current.blocked_tacs) == sorted(SMALL)  # type: ignore[arg-type]
    report = msgspec.json.decode((drop / "done" / "tac-blocked-2026-11-29.csv.report.json")
                                 .read_bytes())
    assert report["kind"] == "tac_blocked" and report["after"] == 3


def test_a_blocked_model_is_decided_by_the_shipped_rule_whoever_owns_it(
        tmp_path: Path, policy: Policy) -> None:
    path = tmp_path / "tac_blocked.csv"
    path.write_text(blocked_file(SMALL))
    blocked, _ = reader().read(path)
    state = make_state(policy)
    assert decided(state, DUAL[0], OWNER) == "owner"
    with_blocks = replace(state, blocked_tacs=blocked)
    assert decided(with_blocks, DUAL[0], OWNER) == "model_blocked"
    assert decided(with_blocks, UNOWNED, BUYER) == "model_blocked"
    assert decided(with_blocks, UNREGISTERED, BUYER) == "unregistered"  # its TAC not blocked
    rule = policy.rule("model_blocked")
    assert (rule.verdict, rule.notice_kind, rule.cutoff_scope) == (
        "GREYLISTED", "model_blocked", "imei")


def test_a_blocked_model_is_greylisted_and_warned_end_to_end(env, worker,
                                                             tmp_path: Path) -> None:
    """On the real broker and database: the list imported as an operator does, then an
    attach of a blocked model by its owner and one of a model not blocked."""
    path = tmp_path / "tac_blocked.csv"
    path.write_text(blocked_file(SMALL[1:]))
    done = run("registry", "import", str(path), "--kind", "tac_blocked",
               "--state", env["EIR_STATE__DIR"], check=False)
    assert done.returncode == 0, done.stderr
    with_verdicts(env)
    worker()
    assert verdicts_of(env, [attach(full_imei(UNOWNED), BUYER, now_ms()),
                             attach(full_imei(DUAL[0]), OWNER, now_ms())]) == {
        (f"{UNOWNED:014d}", str(BUYER), "model_blocked"),
        (f"{DUAL[0]:014d}", str(OWNER), "owner")}
    wait_for(lambda: any(m["kind"] == "model_blocked" and m["imei"] == f"{UNOWNED:014d}"
                         for m in sent(env, "notifications")))
