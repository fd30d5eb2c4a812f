"""`eir-enforcer registry import`, run as an operator runs it: a national file in, a report of
what changed out, the next generation swapped in (or refused, and why, with nothing
swapped), and attaches decided by the new generation."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from enforcer.state import save_snapshot
from tests.test_cli import run
from tests.test_decide import (BUYER, DUAL, OWNER, SINGLE, STOLEN, UNOWNED, home_imsi,
                               make_state)

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
    assert "would shrink from 7 to 2 (71.43%)" in json.loads(done.stdout)["refused"]
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
