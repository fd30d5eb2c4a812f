"""`eir-enforcer registry import`, run as an operator runs it: a national file in, a report of
what changed out, the next generation swapped in (or refused, and why, with nothing
swapped), and attaches decided by the new generation."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from enforcer.files.snapshots import save_snapshot
from tests.test_cli import run
from tests.test_decide import (BUYER, CLONED, CUT_FOR_BUYER, DUAL, OWNER, SINGLE, STOLEN, UNOWNED,
                               WHITE_ONLY, home_imsi, make_state)
from tests.test_lists import ZERO_TAC_KEY, full_imei, imeisv_list, zero_tac_list

FRESH = 35777777000000


@pytest.fixture()
def state_dir(tmp_path: Path, policy) -> Path:
    directory = tmp_path / "state"
    save_snapshot(make_state(policy), directory)  # generation 1
    return directory


def check(state_dir: Path, imei: int, msisdn: int) -> dict:
    return json.loads(run("check", "--imei", f"{imei:014d}", "--imsi", home_imsi(msisdn),
                          "--msisdn", str(msisdn), "--state", str(state_dir)).stdout)


def import_(state_dir: Path, kind: str, path: Path, **env: str):
    return run("registry", "import", str(path), "--kind", kind, "--state", str(state_dir),
               check=False, env={**os.environ, **env})


def test_a_white_list_adds_removes_and_keeps_the_devices_it_still_covers(
        state_dir: Path, tmp_path: Path) -> None:
    current = [35111111000100, *DUAL, SINGLE, UNOWNED, STOLEN, 35333333000000]
    lines = [f"{k:014d}" for k in current if k != UNOWNED] + [f"{FRESH:014d}"]
    path = tmp_path / "white.csv.gz"
    path.write_bytes(gzip.compress(("imei\n" + "\n".join(lines) + "\nnot-an-imei\n").encode()))
    done = import_(state_dir, "white", path, EIR_LISTS__MAX_BAD_SHARE="0.2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["before"], report["after"], report["added"], report["removed"]) == (
        7, 7, 1, 1)
    assert report["file"]["bad_rows"] == [{"line": 9, "reason": "non_digit",
                                           "text": "not-an-imei"}]
    assert report["generation"] == 2 and report["refused"] is None
    assert report["registry"]["left_out_unregistered"] == 1  # UNOWNED's device
    assert check(state_dir, DUAL[1], OWNER)["rule"] == "owner"
    assert check(state_dir, UNOWNED, BUYER)["rule"] == "unregistered"
    assert check(state_dir, FRESH, BUYER)["rule"] == "no_cartable"
    # Still black-listed: the new white list's rows of the black list's keys.
    assert check(state_dir, STOLEN, OWNER)["rule"] == "blacklisted"


def test_a_file_with_too_many_bad_rows_is_refused(state_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "white.csv"
    keys = [35111111000100, *DUAL, SINGLE, UNOWNED, STOLEN, 35333333000000]
    path.write_text("".join(f"{k:014d}\n" for k in keys) + "x\n")  # 1 bad row of 8
    done = import_(state_dir, "white", path)
    assert done.returncode == 3
    assert json.loads(done.stdout)["refused"].startswith("1 of 8 rows are bad (12.50%)")
    assert "refused" in done.stderr
    assert check(state_dir, UNOWNED, BUYER)["generation"] == 1  # nothing swapped


def test_a_list_that_shrinks_too_much_is_refused(state_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "white.csv"
    path.write_text(f"{DUAL[0]:014d}\n{DUAL[1]:014d}\n")  # 7 -> 2: a truncated file
    done = import_(state_dir, "white", path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert "would shrink from 7 to 2 (71.43%)" in report["refused"]
    assert (report["before"], report["after"], report["added"], report["removed"]) == (
        7, 2, 0, 5)
    assert check(state_dir, SINGLE, OWNER)["rule"] == "owner"


def test_a_black_list_reports_reasons_that_changed(state_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "black.csv"
    path.write_text(f"imei,reason\n{STOLEN:014d},fraud\n35222222000100,cloned\n"
                    f"{SINGLE:014d},court_order\n")
    done = import_(state_dir, "black", path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["before"], report["after"], report["added"], report["removed"],
            report["changed"]) == (2, 3, 1, 0, 1)
    decided = check(state_dir, SINGLE, OWNER)
    assert decided["rule"] == "blacklisted" and decided["black_reason"] == "court_order"
    assert check(state_dir, STOLEN, OWNER)["black_reason"] == "fraud"


def test_an_owners_file_moves_ownership(state_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("imeis,owner_msisdn,source,registered_on\n"
                    f"{DUAL[0]:014d};{DUAL[1]:014d},{OWNER},import,2024-03-01\n"
                    f"{SINGLE:014d},{BUYER},pre_scheme,2024-03-01\n"
                    f"{UNOWNED:014d},,import,2024-03-01\n"
                    f"{STOLEN:014d},{OWNER},import,2024-03-01\n"
                    f"35333333000000,{OWNER},passenger,2024-03-01\n")
    done = import_(state_dir, "owners", path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["before"], report["after"], report["added"], report["removed"],
            report["changed"]) == (5, 5, 0, 0, 1)
    assert check(state_dir, SINGLE, BUYER)["rule"] == "owner"
    assert check(state_dir, SINGLE, OWNER)["rule"] == "other_cartable"


CURRENT_WHITE = [*DUAL, SINGLE, UNOWNED, WHITE_ONLY, STOLEN, CUT_FOR_BUYER]


def white_with_zero_tac(state_dir: Path, tmp_path: Path) -> None:
    """Generation 2: generation 1's white list and 300 IMEIs of TAC 01332700."""
    path = tmp_path / "white-clean.csv"
    path.write_text("".join(f"{full_imei(k)}\n" for k in CURRENT_WHITE)
                    + "".join(f"{full_imei(ZERO_TAC_KEY + i)}\n" for i in range(300)))
    assert import_(state_dir, "white", path).returncode == 0


def test_a_white_list_whose_imeis_lost_their_leading_zero_is_refused(
        state_dir: Path, tmp_path: Path) -> None:
    white_with_zero_tac(state_dir, tmp_path)
    path = tmp_path / "white.csv"
    path.write_text("".join(f"{full_imei(k)}\n" for k in CURRENT_WHITE)
                    + "".join(f"{line}\n" for line in zero_tac_list()))  # 100 of 300 stripped
    done = import_(state_dir, "white", path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert report["refused"] == ("100 of 307 rows are bad (32.57%, 100 of them with a leading "
                                 "zero stripped), more than the 1.00% allowed")
    assert report["file"]["bad_rows"][0] == {"line": 8, "reason": "leading_zero_stripped",
                                             "text": "13327001001504"}
    assert done.stderr.count("\n") == 1 and "refused" in done.stderr
    # Nothing swapped: the device is registered still, not `unregistered`.
    decided = check(state_dir, ZERO_TAC_KEY, BUYER)
    assert (decided["generation"], decided["rule"]) == (2, "no_cartable")


def test_a_list_whose_imeis_starting_with_0_fall_in_number_is_refused(
        state_dir: Path, tmp_path: Path) -> None:
    white_with_zero_tac(state_dir, tmp_path)
    # The same IMEIs as IMEISVs, through a spreadsheet: TAC 01332700's are 15 digits now,
    # which read as IMEIs of TAC 13327001. No row is bad and the list does not shrink.
    path = tmp_path / "white.csv"
    keys = [*CURRENT_WHITE, *(ZERO_TAC_KEY + i for i in range(300))]
    path.write_text("".join(f"{k:014d}01\n".lstrip("0") for k in keys))
    done = import_(state_dir, "white", path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert (report["file"]["bad"], report["before"], report["after"]) == (0, 307, 307)
    assert report["refused"] == (
        "the white IMEIs that start with 0 would fall from 300 to 0, by more than the 50% "
        "allowed: leading zeros stripped by a spreadsheet?")
    assert check(state_dir, ZERO_TAC_KEY, BUYER)["generation"] == 2
    allowed = import_(state_dir, "white", path, EIR_LISTS__MAX_LEADING_ZERO_FALL="1")
    assert allowed.returncode == 0, allowed.stderr


def test_a_list_of_imeisvs_that_lost_their_leading_zero_is_refused(
        state_dir: Path, tmp_path: Path) -> None:
    """The trial's file: 1,000 IMEISVs, 100 of TAC 01332700 saved as 15-digit numbers."""
    path = tmp_path / "white.csv"
    path.write_text("".join(f"{line}\n" for line in imeisv_list()))
    done = import_(state_dir, "white", path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    stripped = report["file"]["leading_zero_stripped"]
    assert stripped > 50 and report["file"]["bad"] == stripped
    assert report["refused"].startswith(f"{stripped} of 1,000 rows are bad")
    assert check(state_dir, SINGLE, OWNER)["generation"] == 1


def test_a_black_list_whose_imeis_lost_their_leading_zero_is_refused(
        state_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "black.csv"
    rows = [f"{full_imei(STOLEN)},stolen", f"{full_imei(CLONED)},cloned",
            *(f"{line},stolen" for line in zero_tac_list(6))]
    path.write_text("imei,reason\n" + "".join(f"{row}\n" for row in rows))
    done = import_(state_dir, "black", path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert report["refused"].startswith("2 of 8 rows are bad (25.00%, 2 of them with a leading")
    assert [b["reason"] for b in report["file"]["bad_rows"]] == ["leading_zero_stripped"] * 2
    assert check(state_dir, SINGLE, OWNER)["generation"] == 1


def test_a_black_list_that_grows_with_other_tacs_is_not_taken_for_stripped_zeros(
        state_dir: Path, tmp_path: Path) -> None:
    """A sweep black-lists 3,000 phones of TAC 35…: the share of black-listed IMEIs starting
    with 0 falls from 20 in 22 to 20 in 3,022, their number does not."""
    zero_tac = [f"{full_imei(ZERO_TAC_KEY + i)},stolen" for i in range(20)]
    first = tmp_path / "black-1.csv"
    first.write_text("".join(f"{row}\n" for row in [f"{full_imei(STOLEN)},stolen",
                                                    f"{full_imei(CLONED)},cloned", *zero_tac]))
    assert import_(state_dir, "black", first).returncode == 0
    swept = [f"{full_imei(35888888000000 + i)},fraud" for i in range(3000)]
    second = tmp_path / "black-2.csv"
    second.write_text(first.read_text() + "".join(f"{row}\n" for row in swept))
    done = import_(state_dir, "black", second)
    assert done.returncode == 0, done.stdout
    report = json.loads(done.stdout)
    assert (report["leading_zero_before"], report["leading_zero_after"]) == (20, 20)
    assert (report["added"], report["refused"]) == (3000, None)


def test_an_owners_file_whose_imeis_lost_their_leading_zero_is_refused(
        state_dir: Path, tmp_path: Path) -> None:
    white_with_zero_tac(state_dir, tmp_path)
    zero_tac = zero_tac_list(2)
    path = tmp_path / "devices.csv"
    path.write_text("imeis,owner_msisdn,source,registered_on\n"
                    f"{full_imei(DUAL[0])};{full_imei(DUAL[1])},{OWNER},import,2024-03-01\n"
                    f"{full_imei(SINGLE)},{OWNER},pre_scheme,2024-03-01\n"
                    f"{full_imei(UNOWNED)},,import,2024-03-01\n"
                    f"{full_imei(STOLEN)},{OWNER},import,2024-03-01\n"
                    f"{full_imei(CUT_FOR_BUYER)},{OWNER},passenger,2024-03-01\n"
                    f"{zero_tac[1]};{zero_tac[0]},{BUYER},import,2024-03-01\n")
    done = import_(state_dir, "owners", path)
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert report["file"]["bad_rows"] == [{
        "line": 7, "reason": "imei_leading_zero_stripped",
        "text": f"{zero_tac[1]};{zero_tac[0]},{BUYER},import,2024-03-01"}]
    assert check(state_dir, ZERO_TAC_KEY, BUYER)["rule"] == "no_cartable"
