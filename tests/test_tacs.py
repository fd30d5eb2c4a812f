"""The TAC database: its two file forms read back as written, bad rows by line, lookups
against a dict, kept with the snapshot's generation, replaced by `registry import --kind
tac` and by the reconcile job's drop directory, with the lists' safety checks."""

from __future__ import annotations

import csv
import gzip
import io
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
from enforcer.engine.tacs import (DEVICE_TYPES, NO_ROW, RAT_NAMES, Rat, TacDatabase, TacInfo,
                                  device_type_code, rat_of)
from enforcer.files.snapshots import load_snapshot, save_snapshot
from enforcer.files.tacfile import TacFileReader, rats_of_bands
from enforcer.jobs.reconcile import reconcile
from enforcer.engine.decide import decide, decision_at
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.imei import ImeiRules, parse_imei
from enforcer.engine.subscriber import parse_imsi
from rules.policy import DEFAULT_POLICY, Policy, load_policy
from tests.kafkatools import wait_for
from tests.test_cli import run
from tests.test_decide import (BUYER, DUAL, OWNER, SINGLE, UNOWNED, UNREGISTERED, home_imsi,
                               make_state)
from tests.test_lists import full_imei
from tests.test_notice_lifecycle import sent
from tests.test_registry_events import verdicts_of, with_verdicts
from tests.test_worker import attach, now_ms
from tests.test_importing import import_, state_dir  # noqa: F401  (a fixture)

RAT_WORDS = {Rat.GERAN: "GERAN", Rat.UTRAN: "UTRAN", Rat.EUTRA: "LTE", Rat.NR: "NR"}
# The small TAC file the tests write: (tac, manufacturer, model, device type, radios).
SMALL = [
    (35209900, "Samsung", "Galaxy S21, 5G", "smartphone", Rat.GERAN | Rat.UTRAN | Rat.EUTRA
     | Rat.NR),
    (1234567, "Nokia", "105", "feature_phone", Rat.GERAN),  # reporting body 01: 01234567
    (86000001, "Quectel", "EC25", "module", Rat.UTRAN | Rat.EUTRA),
]


def reader(chunk_lines: int = 3) -> TacFileReader:
    return TacFileReader(chunk_lines=chunk_lines, report_limit=5)


def radio_names(rats: Rat) -> str:
    return " ".join(word for rat, word in RAT_WORDS.items() if rat in rats)


def plain_file(entries: list[tuple[int, str, str, str, Rat]], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["tac", "manufacturer", "model", "device_type", "rats"])
    for tac, maker, model, kind, rats in entries:
        writer.writerow([f"{tac:08d}", maker, model, kind, radio_names(rats)])
    return out.getvalue()


def gsma_file(entries: list[tuple[int, str, str, str, Rat]]) -> str:
    bands = {Rat.GERAN: "GSM 900,GSM 1800", Rat.UTRAN: "WCDMA FDD Band I",
             Rat.EUTRA: "LTE FDD BAND 3", Rat.NR: "NR SA BAND n78"}
    lines = ["TAC|Marketing Name|Manufacturer|Bands|Allocation Date|Model Name|Device Type"]
    for tac, maker, model, kind, rats in entries:
        text = ",".join(band for rat, band in bands.items() if rat in rats)
        lines.append(f"{tac:08d}|{model}|{maker}|{text}|01-Jan-2020|M-{tac}|{kind}")
    return "\n".join(lines) + "\n"


def as_read(database: TacDatabase) -> list[TacInfo]:
    return [database.info(int(tac)) for tac in database.tac]  # type: ignore[misc]


def expected(entries: list[tuple[int, str, str, str, Rat]]) -> list[TacInfo]:
    return [TacInfo(tac, maker, model, DEVICE_TYPES[device_type_code(kind)],
                    tuple(r.name for r in Rat if r in rats and r.name))
            for tac, maker, model, kind, rats in sorted(entries)]


def test_the_small_file_in_both_forms_reads_as_written(tmp_path: Path) -> None:
    plain, gsma = tmp_path / "tac.csv", tmp_path / "tac-gsma.csv.gz"
    plain.write_text(plain_file(SMALL))
    gsma.write_bytes(gzip.compress(gsma_file(SMALL).encode()))
    for path in (plain, gsma):
        database, report = reader().read(path)
        assert (report.rows, report.loaded, report.bad) == (3, 3, 0)
        assert as_read(database) == expected(SMALL)


def test_bad_rows_are_reported_by_line_and_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "tac.csv"
    path.write_text(plain_file(SMALL[:1]) + "1234567,Nokia,105,feature phone,GSM\n"
                    "35x09901,A,B,smartphone,LTE\n\n35209900,Again,B,smartphone,LTE\n"
                    "86000002,A,B,modem,6G\n86000003,A,B\n86000004,\"A,B,modem,LTE\n")
    database, report = reader().read(path)
    assert [(b.line, b.reason) for b in report.bad_rows] == [
        (3, "leading_zero_stripped"), (4, "bad_tac"), (6, "duplicate_tac"),
        (7, "unknown_rat"), (8, "field_count")]
    assert (report.rows, report.bad, report.loaded, report.leading_zero_stripped) == (
        7, 6, 1, 1)  # the 6th bad row (an unclosed quote) counted beyond the limit
    assert as_read(database) == expected(SMALL[:1])


def test_a_gsma_export_lacking_a_column_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "tac.csv"
    path.write_text("TAC|Manufacturer|Model Name|Device Type\n35209900|A|B|Smartphone\n")
    database, report = reader().read(path)
    assert report.unreadable == "a GSMA TAC export's header lacks bands" and not len(database)


def test_gsma_bands_name_the_radios_of_the_model() -> None:
    assert rats_of_bands("GSM850,GSM900,DCS1800,PCS1900") == Rat.GERAN
    assert rats_of_bands("WCDMA FDD Band I,HSPA+,LTE FDD BAND 20") == Rat.UTRAN | Rat.EUTRA
    assert rats_of_bands("5G NR n78,LTE TDD BAND 40") == Rat.EUTRA | Rat.NR
    assert rats_of_bands("") == Rat(0)


def test_the_attachs_rat_names_one_radio_or_none() -> None:
    assert rat_of("NR") == Rat.NR and rat_of(" eutra ") == Rat.EUTRA
    assert rat_of("GERAN") == Rat.GERAN and rat_of("WCDMA") == Rat.UTRAN
    assert rat_of("WLAN") == Rat(0) and rat_of(None) == Rat(0)


names = st.text(st.characters(codec="utf-8", exclude_characters="|\"\r\n\x00\x85\u2028\u2029"
                              "\x1c\x1d\x1e\x0b\x0c"), max_size=12).map(str.strip)
entries = st.lists(st.tuples(st.integers(0, 10**8 - 1), names, names,
                             st.sampled_from(["Smartphone", "Mobile Phone/Feature phone",
                                              "Tablet", "IoT Device", "Dongle", "", "Toaster"]),
                             st.builds(Rat, st.integers(0, 15))),
                   max_size=40, unique_by=lambda entry: entry[0])


@settings(max_examples=150, deadline=None)
@given(entries, st.booleans(), st.booleans(), st.integers(1, 7))
def test_a_plain_file_reads_as_written(tmp_path_factory, written, header: bool, zipped: bool,
                                       chunk_lines: int) -> None:
    written = [e for e in written if e[0] >= 10**7]  # 0… TACs: see the GSMA test below
    text = plain_file(written, header)
    path = tmp_path_factory.mktemp("tac") / "tac.csv"
    path.write_bytes(gzip.compress(text.encode()) if zipped else text.encode())
    database, report = reader(chunk_lines).read(path)
    assert report.bad == 0 and report.unreadable is None
    assert as_read(database) == expected(written)


@settings(max_examples=150, deadline=None)
@given(entries, st.integers(1, 7))
def test_a_gsma_export_reads_as_written(tmp_path_factory, written, chunk_lines: int) -> None:
    written = [(tac, maker, model or f"M-{tac}", kind, rats)
               for tac, maker, model, kind, rats in written]  # no marketing name: the model
    path = tmp_path_factory.mktemp("tac") / "tac.csv"
    path.write_text(gsma_file(written))
    database, report = reader(chunk_lines).read(path)
    assert report.bad == 0
    assert as_read(database) == expected(written)


@settings(max_examples=100, deadline=None)
@given(entries, st.lists(st.integers(0, 40), max_size=5), st.integers(1, 7))
def test_bad_rows_anywhere_are_reported_at_their_line(tmp_path_factory, written, at,
                                                      chunk_lines: int) -> None:
    written = [e for e in written if e[0] >= 10**7]
    lines = plain_file(written, header=False).splitlines()
    bad_lines = []
    for position in sorted(at):
        position = min(position, len(lines))
        lines.insert(position, "not-a-tac,A,B,smartphone,LTE")
        bad_lines = [line + (line > position) for line in bad_lines] + [position + 1]
    path = tmp_path_factory.mktemp("tac") / "tac.csv"
    path.write_text("\n".join(lines) + "\n")
    database, report = TacFileReader(chunk_lines, report_limit=100).read(path)
    assert sorted(b.line for b in report.bad_rows) == sorted(bad_lines)
    assert as_read(database) == expected(written)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 10**8 - 1), max_size=50),
       st.lists(st.integers(0, 10**14 - 1), max_size=50))
def test_lookups_agree_with_a_dict(allocated: set[int], keys: list[int]) -> None:
    tacs = sorted(allocated)
    database = TacDatabase.build(np.array(tacs[::-1], np.uint32), np.zeros(len(tacs), np.uint8),
                                 np.zeros(len(tacs), np.uint8), ["m"] * len(tacs),
                                 [f"model {t}" for t in tacs[::-1]])
    keys += [tac * SNR_SPACE + 1 for tac in tacs[:10]]
    rows = database.rows(np.array(keys, dtype=np.uint64))
    row_of = {tac: row for row, tac in enumerate(tacs)}
    assert rows.tolist() == [row_of.get(key // SNR_SPACE, NO_ROW) for key in keys]
    assert all(database.info(tac).model == f"model {tac}" for tac in tacs)  # type: ignore


def test_every_rat_name_is_a_radio() -> None:
    assert set(RAT_NAMES.values()) == set(Rat)


def test_the_database_is_kept_with_the_generation(tmp_path: Path, policy: Policy) -> None:
    path = tmp_path / "tac.csv"
    path.write_text(plain_file(SMALL))
    tacs, _ = reader().read(path)
    state = make_state(policy)
    save_snapshot(state, tmp_path / "without")
    assert load_snapshot(tmp_path / "without", policy).tacs is None
    save_snapshot(replace(state, tacs=tacs), tmp_path / "with")
    assert as_read(load_snapshot(tmp_path / "with", policy).tacs) == expected(SMALL)


def test_registry_import_replaces_the_database_and_keeps_it_through_a_list_import(
        state_dir: Path, tmp_path: Path, policy: Policy) -> None:  # noqa: F811
    path = tmp_path / "tac.csv"
    path.write_text(plain_file(SMALL))
    done = import_(state_dir, "tac", path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["kind"], report["before"], report["after"], report["added"],
            report["generation"]) == ("tac", 0, 3, 3, 2)
    newer = [(35209900, "Samsung", "Galaxy S21", "smartphone", Rat.EUTRA), *SMALL[1:],
             (86000009, "Quectel", "BG96", "module", Rat.EUTRA)]
    path.write_text(plain_file(newer))
    report = json.loads(import_(state_dir, "tac", path).stdout)
    assert (report["before"], report["after"], report["added"], report["removed"],
            report["changed"]) == (3, 4, 1, 0, 1)
    white = tmp_path / "white.csv"
    state = load_snapshot(state_dir, policy)
    white.write_text("".join(f"{key:014d}\n" for key in state.lists.white_index.keys()))
    assert import_(state_dir, "white", white).returncode == 0
    assert as_read(load_snapshot(state_dir, policy).tacs) == expected(newer)


def test_a_tac_file_that_shrinks_or_lost_its_leading_zeros_is_refused(
        state_dir: Path, tmp_path: Path, policy: Policy) -> None:  # noqa: F811
    path = tmp_path / "tac.csv"
    path.write_text(plain_file(SMALL))
    assert import_(state_dir, "tac", path).returncode == 0
    path.write_text(plain_file(SMALL[:1]))
    done = import_(state_dir, "tac", path)
    assert done.returncode == 3
    assert "the tac list would shrink from 3 to 1" in json.loads(done.stdout)["refused"]
    stripped = plain_file([SMALL[0], SMALL[2]]) + "1234567,Nokia,105,feature phone,GSM\n"
    path.write_text(stripped)
    done = import_(state_dir, "tac", path, EIR_LISTS__MAX_SHRINK_SHARE="0.5")
    refused = json.loads(done.stdout)["refused"]
    assert done.returncode == 3 and "leading_zero_stripped" not in refused
    assert refused.startswith("1 of 3 rows are bad") and "leading zero stripped" in refused
    assert load_snapshot(state_dir, policy).generation == 2


def test_a_tac_file_dropped_for_the_reconcile_job_is_imported(tmp_path: Path,
                                                              policy: Policy) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = load_config(environ={"EIR_STATE__DIR": str(tmp_path / "state"),
                                  "EIR_JOBS__DROP_DIR": str(drop),
                                  "EIR_JOBS__DROP_SETTLE_S": "0"})
    (drop / "tac-2026-11-29.csv.gz").write_bytes(gzip.compress(gsma_file(SMALL).encode()))
    holder = StateHolder(make_state(policy))
    counts = reconcile(holder, config, SystemClock())
    assert counts == {"adopted": 0, "imported": 1, "refused": 0, "stale_events": 0}
    assert as_read(holder.current.tacs) == expected(SMALL)  # type: ignore[arg-type]
    assert as_read(load_snapshot(tmp_path / "state", policy).tacs) == expected(SMALL)
    report = msgspec.json.decode((drop / "done" / "tac-2026-11-29.csv.gz.report.json")
                                 .read_bytes())
    assert report["kind"] == "tac" and report["after"] == 3


def test_a_fold_keeps_the_database(tmp_path: Path, policy: Policy) -> None:
    path = tmp_path / "tac.csv"
    path.write_text(plain_file(SMALL))
    tacs, _ = reader().read(path)
    state = replace(make_state(policy), tacs=tacs)
    folded, _ = fold(state, state.generation + 1)
    assert folded.tacs is tacs


# The TACs of the test country's phones: SINGLE's (86012345) and UNREGISTERED's (35999999)
# left out, SINGLE's model a GSM-only one.
COUNTRY_TACS = plain_file([(35209900, "Samsung", "Galaxy S21", "smartphone", Rat.EUTRA | Rat.NR),
                           (35111111, "Nokia", "105", "feature phone", Rat.GERAN),
                           (35222222, "Apple", "iPhone 12", "smartphone", Rat.EUTRA),
                           (35333333, "Xiaomi", "Redmi 9", "smartphone", Rat.EUTRA),
                           (35444444, "Huawei", "Y6", "smartphone", Rat.EUTRA)])
RAT_POLICY = """
[[rules]]
name = "radio"
when = "rat_inconsistent"
verdict = "GREYLISTED"
reason = "rat_inconsistent"
"""


def decided(state, imei: int, msisdn: int, rat: str | None = None) -> str:
    parsed = parse_imei(f"{imei:014d}", ImeiRules((), frozenset()))
    event = AttachEvent(parsed, parse_imsi(home_imsi(msisdn)), msisdn, 0, rat=rat)
    return decision_at(decide(AttachBatch.from_events([event]), state),
                       AttachBatch.from_events([event]), 0).rule


def test_an_unallocated_tac_is_a_counterfeit_only_once_a_database_is_imported(
        tmp_path: Path, policy: Policy) -> None:
    path = tmp_path / "tac.csv"
    path.write_text(COUNTRY_TACS)
    tacs, _ = reader().read(path)
    state = make_state(policy)
    assert decided(state, UNREGISTERED, BUYER) == "unregistered"
    with_tacs = replace(state, tacs=tacs)
    assert decided(with_tacs, UNREGISTERED, BUYER) == "counterfeit"
    assert decided(with_tacs, SINGLE, OWNER) == "counterfeit"  # whoever owns it
    assert decided(with_tacs, DUAL[0], OWNER) == "owner"


def test_a_model_on_a_radio_it_lacks_is_rat_inconsistent(tmp_path: Path) -> None:
    own = tmp_path / "policy.toml"
    text = DEFAULT_POLICY.read_text()
    at = text.index('[[rules]]\nname = "owner"')
    own.write_text(text[:at] + RAT_POLICY.lstrip() + "\n" + text[at:])
    path = tmp_path / "tac.csv"
    path.write_text(COUNTRY_TACS)
    tacs, _ = reader().read(path)
    state = replace(make_state(load_policy(own)), tacs=tacs)
    assert decided(state, UNOWNED, BUYER, "LTE") == "radio"  # a GSM-only model on LTE
    assert decided(state, UNOWNED, BUYER, "GERAN") == "no_cartable"
    assert decided(state, UNOWNED, BUYER) == "no_cartable"  # no rat: nothing to compare
    assert decided(state, UNOWNED, BUYER, "WLAN") == "no_cartable"
    assert decided(state, DUAL[0], OWNER, "EUTRA") == "owner"
    without = replace(state, tacs=None)
    assert decided(without, UNOWNED, BUYER, "LTE") == "no_cartable"


def test_a_counterfeit_is_greylisted_and_warned_end_to_end(env, worker, tmp_path: Path,
                                                          caplog) -> None:
    """On the real broker and database: the TAC database imported as an operator does,
    an attach of a phone whose TAC is in it, one whose TAC is not."""
    path = tmp_path / "tac.csv"
    path.write_text(COUNTRY_TACS)
    done = run("registry", "import", str(path), "--kind", "tac",
               "--state", env["EIR_STATE__DIR"], check=False)
    assert done.returncode == 0, done.stderr
    with_verdicts(env)
    worker()
    assert not any(r.getMessage().startswith("no TAC database") for r in caplog.records)
    assert verdicts_of(env, [attach(full_imei(UNREGISTERED), BUYER, now_ms()),
                             attach(full_imei(DUAL[0]), OWNER, now_ms())]) == {
        (f"{UNREGISTERED:014d}", str(BUYER), "counterfeit"),
        (f"{DUAL[0]:014d}", str(OWNER), "owner")}
    wait_for(lambda: any(m["kind"] == "counterfeit" and m["imei"] == f"{UNREGISTERED:014d}"
                         for m in sent(env, "notifications")))


def test_a_worker_without_a_tac_database_warns_once_at_start(env, worker, caplog) -> None:
    worker()
    warned = [r for r in caplog.records if r.getMessage().startswith("no TAC database")]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
