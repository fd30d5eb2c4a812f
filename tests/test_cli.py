"""The command line, run as a user runs it: a real process, real files, JSON out."""

from __future__ import annotations

import gzip
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import pytest

from enforcer.embedded.demoview import MAX_COLUMNS
from enforcer.engine.imei import luhn_digit
from enforcer.embedded.services import free_port
from enforcer.engine.status import ImeiStatus
from tests.test_lists import GZIP_FAULTS, full_imei

CLI = [sys.executable, "-m", "enforcer.app.cli"]


def run(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check, env=env)


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_imei_prints_one_json_object_per_value() -> None:
    out = lines(run("imei", "490154203237518", "imeisv-3520990017614823", "12*34").stdout)
    assert [o["key"] for o in out] == ["49015420323751", "35209900176148", None]
    assert all(set(o) == {"input", "key", "tac", "snr", "svn", "check_digit", "malformed",
                          "problems"} for o in out)
    assert out[1]["svn"] == "23" and out[2]["problems"] == ["non_digit"]


@pytest.mark.parametrize("command", [[], ["imei"], ["check"], ["lists"], ["lists", "stats"],
                                     ["state"], ["state", "build"], ["state", "synth"],
                                     ["demo"]])
def test_every_subcommand_has_help(command: list[str]) -> None:
    assert "usage: eir-enforcer" in run(*command, "--help").stdout


@pytest.fixture()
def registry_files(tmp_path: Path) -> dict[str, Path]:
    def imei(key: int) -> str:
        return f"{key:014d}" + luhn_digit(f"{key:014d}")

    files = {
        "white": ("imei\n" + "".join(f"{imei(35209900000000 + i)}\n" for i in range(10))
                  + "bogus\n"),
        "black": "35209900000009,stolen\n35777700000000,lost\n",
        "devices": ("imeis,owner_msisdn,source,registered_on\n"
                    "35209900000000;35209900000001,989121111111,import,2024-03-01\n"
                    "35209900000002,,import,2024-03-02\n"
                    "35209900000003,989121111111,smuggled,2024-03-02\n"
                    "35209900000004,989121111111234,import,2024-03-02\n"
                    "35209900000005,989121111111,import,1969-12-31\n"
                    "35209900000006;35209900000000,989121111111,import,2024-03-02\n"),
        "cartables": "cartable_id,msisdn\n7,989121111111\n7,989123333333\n-1,989125555555\n",
        "operator-sims": "35209900000001,989124444444\n",
    }
    paths = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.csv.gz"
        with gzip.open(path, "wt") as f:
            f.write(text)
        paths[name] = path
    return paths


def build(registry_files: dict[str, Path], state: Path) -> dict:
    """Built with every bad row tolerated: the files hold one of each kind on purpose."""
    args = [arg for name, path in registry_files.items() for arg in (f"--{name}", str(path))]
    return json.loads(run("state", "build", *args, "--state", str(state),
                          env={**os.environ, "EIR_LISTS__MAX_BAD_SHARE": "1"}).stdout)


def check(state: Path, imei: str, msisdn: str, *extra: str) -> dict:
    imsi = "43211" + msisdn[-10:]
    return json.loads(run("check", "--imei", imei, "--imsi", imsi, "--msisdn", msisdn,
                          "--time", "2026-11-23T08:00:00", "--state", str(state),
                          *extra).stdout)


def test_state_build_reports_bad_rows_and_check_decides(registry_files, tmp_path) -> None:
    state = tmp_path / "state"
    report = build(registry_files, state)
    assert report["generation"] == 1
    assert report["files"]["white"]["loaded"] == 10
    assert report["files"]["white"]["bad_rows"] == [
        {"line": 12, "reason": "non_digit", "text": "bogus"}]
    assert [(b["line"], b["reason"]) for b in report["files"]["devices"]["bad_rows"]] == [
        (4, "unknown_source"), (5, "owner_msisdn_too_long"), (6, "registered_on_out_of_range")]
    assert report["files"]["cartables"]["bad_rows"][0]["reason"] == "cartable_id_out_of_range"
    # The last device claims an IMEI the first one has: it is left out, the first keeps it.
    assert report["registry"] == {"devices": 2, "left_out_unregistered": 0,
                                  "left_out_conflicting": 1}

    owner = check(state, "352099000000018", "989121111111")
    assert (owner["verdict"], owner["rule"], owner["slot"]) == ("WHITELISTED", "owner", 1)
    assert check(state, "35209900000000", "989123333333")["verdict"] == "WHITELISTED"
    assert check(state, "35209900000001", "989124444444")["rule"] == "owner"
    buyer = check(state, "35209900000000", "989122222222")
    assert buyer["verdict"] == "GREYLISTED"
    assert buyer["effects"]["open_notice"]["kind"] == "ownership_transfer"
    seen = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
    deadline = datetime.fromtimestamp(buyer["effects"]["open_notice"]["deadline_ms"] / 1000,
                                      tz=timezone.utc)
    assert deadline - seen == timedelta(days=30)
    assert check(state, "35209900000002", "989122222222")["rule"] == "no_cartable"
    stolen = check(state, "35209900000009", "989122222222")
    assert (stolen["verdict"], stolen["black_reason"]) == ("BLACKLISTED", "stolen")
    assert check(state, "35209900000009", "989122222222", "--emergency")["verdict"] == \
        "WHITELISTED"
    assert check(state, "35888800000000", "989122222222")["rule"] == "unregistered"


def test_rebuilding_makes_the_next_generation(registry_files, tmp_path) -> None:
    state = tmp_path / "state"
    build(registry_files, state)
    assert build(registry_files, state)["generation"] == 2
    stats = json.loads(run("lists", "stats", "--state", str(state)).stdout)
    assert stats["generation"] == 2
    assert stats["white"]["count"] == 10 and stats["black"]["count"] == 2
    assert stats["black"]["by_reason"]["lost"]["count"] == 1
    assert stats["registry"]["devices"] == 2
    assert stats["white"]["index_bytes"] > 0


def test_state_build_refuses_a_devices_file_with_its_columns_in_the_wrong_order(
        registry_files, tmp_path) -> None:
    state = tmp_path / "state"
    args = ["--white", str(registry_files["white"]), "--state", str(state)]
    assert run("state", "build", *args, env={**os.environ, "EIR_LISTS__MAX_BAD_SHARE": "0.1"}
               ).returncode == 0
    swapped = tmp_path / "devices.csv"
    swapped.write_text("989121111111,35209900000000;35209900000001,import,2024-03-01\n"
                       "989121111111,35209900000002,import,2024-03-02\n")
    refused = run("state", "build", *args, "--devices", str(swapped), check=False,
                  env={**os.environ, "EIR_LISTS__MAX_BAD_SHARE": "0.1"})
    assert refused.returncode == 3
    assert refused.stderr == (
        f"eir-enforcer state build: refused: devices file {swapped}: 2 of 2 rows are bad "
        "(100.00%), more than the 10.00% allowed\n")
    report = json.loads(refused.stdout)
    assert [b["reason"] for b in report["files"]["devices"]["bad_rows"]] == [
        "imei_too_short"] * 2  # the owner's MSISDN read as the IMEIs
    # Nothing written: the generation in use is the first, its device still owned.
    assert json.loads(run("lists", "stats", "--state", str(state)).stdout)["generation"] == 1
    assert check(state, "35209900000000", "989121111111")["rule"] == "no_cartable"


@pytest.mark.parametrize("kind", ["white", "black", "devices", "operator-sims"])
def test_state_build_refuses_any_file_whose_imeis_lost_their_leading_zero(
        tmp_path: Path, kind: str) -> None:
    def imei(key: int) -> str:
        return f"{key:014d}" + luhn_digit(f"{key:014d}")

    zero_tac = [imei(1332700100150 + i) for i in range(3)]  # TAC 01332700
    stripped = zero_tac[0].lstrip("0")
    rows = {
        "white": [imei(35209900000000), *zero_tac],
        "black": [f"{zero_tac[2]},stolen"],
        "devices": [f"{zero_tac[1]},989121111111,import,2024-03-01"],
        "operator-sims": [f"{zero_tac[1]},989124444444"],
    }
    mangled = {"white": stripped, "black": f"{stripped},lost",
               "devices": f"{stripped},,import,2024-03-02",
               "operator-sims": f"{stripped},989124444444"}
    args = []
    for name, lines_ in rows.items():
        path = tmp_path / f"{name}.csv"
        path.write_text("".join(f"{line}\n" for line in lines_)
                        + (f"{mangled[name]}\n" if name == kind else ""))
        args += [f"--{name}", str(path)]
    result = run("state", "build", *args, "--state", str(tmp_path / "state"), check=False)
    assert result.returncode == 3
    report = json.loads(result.stdout)
    file = report["files"][kind.replace("-", "_")]
    assert file["leading_zero_stripped"] == 1
    assert file["bad_rows"][0]["text"] == mangled[kind]
    assert file["bad_rows"][0]["reason"].endswith("leading_zero_stripped")
    assert f"{kind.replace('-', '_')} file {tmp_path / kind}.csv: 1 of" in result.stderr
    assert not (tmp_path / "state").exists()


def test_check_refuses_a_bad_imsi_clearly(registry_files, tmp_path) -> None:
    state = tmp_path / "state"
    build(registry_files, state)
    result = run("check", "--imei", "35209900000000", "--imsi", "4321", "--msisdn",
                 "989121111111", "--state", str(state), check=False)
    assert result.returncode == 2 and "IMSI must have 5-15 digits" in result.stderr


def test_check_reads_its_time_as_rfc_3339(registry_files, tmp_path) -> None:
    """issue 18: `check --time 2026-11-23T10:00:00z` ended in a traceback."""
    state = tmp_path / "state"
    build(registry_files, state)
    args = ["check", "--imei", "35209900000000", "--imsi", "432119122222222", "--msisdn",
            "989122222222", "--state", str(state), "--time"]
    deadlines = {json.loads(run(*args, time).stdout)["effects"]["open_notice"]["deadline_ms"]
                 for time in ("2026-11-23T10:00:00z", "2026-11-23t13:30:00.0004+03:30",
                              "2026-11-23 10:00:00Z", "1795428000000")}
    assert deadlines == {1795428000000 + 30 * 86_400_000}


@pytest.mark.parametrize("time", ["9999-12-31T23:59:59.999z", "0001-01-01t00:00:00+00:00",
                                  "253402300799999"])
def test_the_edges_of_the_times_taken_reach_the_database(dsn, time: str) -> None:
    result = run("notices", "list", "--due-before", time, "--kind", "unregistered", "--imei",
                 "IMEI-352099001761481", "--msisdn", "+989121234567",
                 env={**os.environ, "EIR_POSTGRES__DSN": dsn})
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_notices_are_listed_by_a_kind_of_the_policy_or_of_a_stored_notice(dsn) -> None:
    """A kind the policy no longer opens may still have live notices the NOC looks for."""
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn,"
                     " rule, state, opened_at, deadline, last_seen, reminder_days, sms)"
                     " VALUES ('court_hold', 'imei', 35209900176148, 0, 432111234567890,"
                     " 989121234567, 'court', 'open', now(), now(), now(), '{}', false)")
    listed = run("notices", "list", "--kind", "court_hold", env=env)
    assert [json.loads(line)["kind"] for line in listed.stdout.splitlines()] == ["court_hold"]
    assert run("notices", "list", "--kind", "unregistered", env=env).stdout == ""
    refused = run("notices", "list", "--kind", "parking_ticket", check=False, env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert "--kind: 'parking_ticket' is no notice kind of the policy" in line


def stored_notices(dsn: str, count: int) -> None:
    """`count` open notices, one an IMEI, as a worker would have opened them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn,"
                     " rule, state, opened_at, deadline, last_seen, reminder_days, sms)"
                     " SELECT 'unregistered', 'imei', 35209900000000 + n, 0, 432111234567890,"
                     " 989121234567, 'unregistered', 'open', now(), now(), now(), '{}', true"
                     " FROM generate_series(1, %s) AS n", (count,))


def test_a_list_the_limit_cut_says_so_on_stderr(dsn) -> None:
    """Trial finding 5: `notices list --state cut` showed 100 of 1,407 with no hint."""
    env = {**os.environ, "EIR_POSTGRES__DSN": dsn}
    stored_notices(dsn, 5)
    cut = run("notices", "list", "--limit", "3", env=env)
    assert len(cut.stdout.splitlines()) == 3
    assert cut.stderr == "eir-enforcer notices list: 3 shown; --limit N for more\n"
    whole = run("notices", "list", "--limit", "5", env=env)
    assert (len(whole.stdout.splitlines()), whole.stderr) == (5, "")
    assert len(run("notices", "list", env=env).stdout.splitlines()) == 5
    assert run("clones", "list", "--limit", "1", env=env).stderr == ""
    for command in (["notices", "list"], ["clones", "list"]):
        assert "(default: 100)" in run(*command, "--help").stdout


def test_a_reader_that_goes_away_ends_the_output_quietly(dsn) -> None:
    """Trial finding 5: `notices list --state cut | head -3` ended in a traceback
    (BrokenPipeError). Past the pipe's buffer, as a shell runs it."""
    stored_notices(dsn, 2000)
    piped = subprocess.run(["bash", "-c", f"set -o pipefail; {shlex.join(CLI)} notices list "
                            "--limit 2000 | head -3"], capture_output=True, text=True,
                           env={**os.environ, "EIR_POSTGRES__DSN": dsn})
    assert (piped.returncode, piped.stderr) == (141, "")  # 128 + SIGPIPE, as a shell says
    assert len(piped.stdout.splitlines()) == 3


def test_status_help_names_every_status() -> None:
    """Trial finding 10: it did not mention misused."""
    described = " ".join(run("status", "--help").stdout.split())
    assert all(status.value in described for status in ImeiStatus)


# Every option that takes a value from the user, given one it cannot take: (arguments,
# what the one line must name). Nothing here needs a broker or a database. {scratch} is a
# directory holding `a-file` (a regular file), `latin-1.toml` (not UTF-8, as TOML must be)
# and `latin-1-policy.toml` (a configuration whose policy.file is latin-1.toml).
# /proc/sys/vm/drop_caches is write-only, for root too: a file no one may read.
BAD_INPUT = [
    (["--log-level", "LOUD", "imei", "1"], "--log-level"),
    (["--log-format", "xml", "imei", "1"], "--log-format"),
    (["--config", "/nonexistent.toml", "imei", "1"], "--config"),
    (["--config", "/proc/sys/vm/drop_caches", "imei", "1"], "--config"),
    (["--config", "{scratch}/latin-1.toml", "imei", "1"], "latin-1.toml is not valid TOML"),
    (["--config", "{scratch}/latin-1-policy.toml", "lists", "stats"], "policy file"),
    (["imei"], "VALUE"),
    (["check", "--imsi", "432111234567890", "--msisdn", "989121234567"], "--imei"),
    (["check", "--imei", "1", "--imsi", "4321", "--msisdn", "989121234567"], "--imsi"),
    (["check", "--imei", "1", "--imsi", "imsi-abc", "--msisdn", "989121234567"], "--imsi"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "0912123456"],
     "--msisdn"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "98-912"], "--msisdn"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "989121234567",
      "--time", "2026-11-23T10:00:00x"], "--time"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "989121234567",
      "--time", "2026-11-23"], "--time"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "989121234567",
      "--time", "0000-01-01T00:00:00Z"], "--time"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "989121234567",
      "--state", "/nonexistent"], "/nonexistent"),
    (["check", "--imei", "1", "--imsi", "432111234567890", "--msisdn", "989121234567",
      "--state", "{scratch}/a-file"], "--state"),
    (["lists", "stats", "--state", "/nonexistent"], "/nonexistent"),
    (["state", "build", "--white", "/nonexistent.csv"], "--white"),
    (["state", "build", "--white", "/etc", "--black", "/etc"], "--white: /etc is a directory"),
    (["state", "build", "--white", "/proc/sys/vm/drop_caches"], "--white"),
    (["state", "build", "--white", "/etc/hostname", "--state", "{scratch}/a-file"], "--state"),
    (["state", "build"], "--white"),
    (["state", "synth", "--devices", "10", "--state", "{scratch}/a-file/state"], "--state"),
    (["state", "synth", "--devices", "10", "--state", "/sys/eir-state"], "--state"),
    (["state", "synth", "--devices", "-3"], "--devices"),
    (["state", "synth", "--devices", "ten"], "--devices"),
    (["state", "synth", "--imeis", "0"], "--imeis"),
    (["state", "synth", "--devices", "10", "--imeis", "50"], "--imeis"),
    (["state", "synth", "--seed", "-1"], "--seed"),
    (["registry", "import", "/nonexistent.csv", "--kind", "white"], "file"),
    (["registry", "import", "/etc", "--kind", "white"], "/etc is a directory"),
    (["registry", "import", "/etc/hostname", "--kind", "white", "--state", "{scratch}/a-file"],
     "--state"),
    (["registry", "import", "/etc/hostname", "--kind", "purple"], "--kind"),
    (["services", "sideways"], "action"),
    (["history", "12*34"], "imei"),
    (["history", "35209900ABCDEF"], "imei"),
    (["status", "x", "--msisdn", "989121234567"], "imei"),
    (["status", "35209900176148", "--msisdn", "12"], "--msisdn"),
    (["status", "352099001761482", "--msisdn", "989121234567"], "mistyped"),  # Luhn: 1
    (["clones", "list", "--limit", "0"], "--limit"),
    (["clones", "list", "--limit", "ten"], "--limit"),
    (["notices", "list", "--state", "asleep"], "--state"),
    (["notices", "list", "--imei", "abc"], "--imei"),
    (["notices", "list", "--msisdn", "0912"], "--msisdn"),
    (["notices", "list", "--due-before", "tomorrow"], "--due-before"),
    (["notices", "list", "--due-before", "99999999999999999"], "--due-before"),
    (["notices", "list", "--limit", "-1"], "--limit"),
    (["notices", "show", "0"], "id"),
    (["notices", "show", "99999999999999999999"], "id"),
    (["notices", "cancel", "x", "--reason", "court ruling"], "id"),
    (["notices", "cancel", "17", "--reason", " "], "--reason"),
    (["demo", "--devices", "0"], "--devices"),
    (["demo", "--rate", "fast"], "--rate"),
    (["demo", "--duration", "-1"], "--duration: -1 is not above 0"),
    (["demo", "--duration", "nan"], "--duration: nan is not a finite number"),
    (["demo", "--bad-share", "2"], "--bad-share: 2 is not within [0, 1]"),
    (["demo", "--days", "inf"], "--days: inf is not a finite number"),  # it said "(0, inf]"
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """Every BAD_INPUT row's run, a few at a time: each is a second of imports, mostly. A row
    the command line failed to refuse would start its command: away from the checkout."""
    scratch = tmp_path_factory.mktemp("refused")
    (scratch / "a-file").write_text("not a directory\n")
    (scratch / "latin-1.toml").write_bytes('[state]\ndir = "état"\n'.encode("latin-1"))
    (scratch / "latin-1-policy.toml").write_text(f'[policy]\nfile = "{scratch}/latin-1.toml"\n')
    env = {**os.environ, "EIR_STATE__DIR": str(scratch / "state"),
           "EIR_SERVICES__DIR": str(scratch / "services")}
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = pool.map(lambda args: run(*(a.format(scratch=scratch) for a in args),
                                         check=False, env=env), [a for a, _ in BAD_INPUT])
        return {tuple(args): result for (args, _), result in zip(BAD_INPUT, runs)}


@pytest.mark.parametrize(("args", "named"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_it_and_exit_2(refused, args: list[str],
                                                    named: str) -> None:
    result = refused[tuple(args)]
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("eir-enforcer") and named in result.stderr


# Deliveries that cannot be read as registry files: (file, its bytes, what the one line says
# after naming the file). The gzip faults from tests/test_lists.py; a file of random bytes;
# a white list saved as UTF-16 (a spreadsheet's "Unicode text"); IMEIs followed by a Latin-1
# no-break space (0xA0: not UTF-8).
UNREADABLE_DELIVERIES = [
    ("truncated.csv.gz", GZIP_FAULTS["truncated.csv.gz"], "not readable: truncated gzip"),
    ("bad-deflate.csv.gz", GZIP_FAULTS["bad-deflate.csv.gz"], "not readable: corrupt gzip"),
    ("random.csv", np.random.default_rng(18).bytes(4096), "rows are bad"),
    ("utf-16.csv", "".join(f"{full_imei(35209900000000 + i)}\n" for i in range(10))
     .encode("utf-16"), "rows are bad"),
    ("latin-1.csv", "".join(f"{full_imei(35209900000000 + i)}\xa0\n" for i in range(10))
     .encode("latin-1"), "rows are bad"),
]


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory) -> tuple[Path, dict[tuple[str, str], subprocess.CompletedProcess],
                                          int]:
    """Each delivery given to registry import (on a snapshot of generation 1) and to state
    build (as its devices file), a few at a time; the scratch directory; the snapshot's
    generation after them all."""
    scratch = tmp_path_factory.mktemp("unreadable")
    state = scratch / "state"
    run("state", "synth", "--devices", "100", "--state", str(state))
    white = scratch / "white.csv"
    white.write_text("".join(f"{full_imei(35209900000000 + i)}\n" for i in range(10)))
    commands = {}
    for name, content, _ in UNREADABLE_DELIVERIES:
        (scratch / name).write_bytes(content)
        commands[("registry import", name)] = [
            "registry", "import", str(scratch / name), "--kind", "white", "--state", str(state)]
        commands[("state build", name)] = [
            "state", "build", "--white", str(white), "--devices", str(scratch / name),
            "--state", str(scratch / f"built-{name}")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(commands, pool.map(lambda args: run(*args, check=False),
                                           commands.values())))
    stats = json.loads(run("lists", "stats", "--state", str(state)).stdout)
    return scratch, runs, stats["generation"]


@pytest.mark.parametrize("command", ["registry import", "state build"])
@pytest.mark.parametrize(("name", "content", "said"), UNREADABLE_DELIVERIES,
                         ids=[name for name, _, _ in UNREADABLE_DELIVERIES])
def test_a_delivery_that_cannot_be_read_is_refused_naming_it_and_exit_3(
        unreadable, command: str, name: str, content: bytes, said: str) -> None:
    scratch, runs, generation = unreadable
    result = runs[(command, name)]
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"eir-enforcer {command}: refused: ")
    assert said in result.stderr.split(f"{scratch / name}: ")[1]
    report = json.loads(result.stdout)
    file = report["file"] if command == "registry import" else report["files"]["devices"]
    assert (file["unreadable"] is not None) == said.startswith("not readable")
    # Nothing written: the snapshot is generation 1 still, the build wrote none.
    assert generation == 1
    assert not (scratch / f"built-{name}").exists()


def test_an_invalid_policy_is_refused_at_start(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('home_mcc = [432]\n[fallback]\nverdict = "WHITELISTED"\nreason = "x"\n'
                      '[[rules]]\nname = "e"\nwhen = "emergency"\nverdict = "MAYBE"\n'
                      'reason = "r"\n')
    result = run("lists", "stats", "--state", str(tmp_path), check=False,
                 env={"EIR_POLICY__FILE": str(policy), "PATH": ""})
    assert result.returncode == 2
    assert "rules[0].verdict: 'MAYBE' is not one of" in result.stderr


def test_missing_snapshot_says_how_to_make_one(tmp_path: Path) -> None:
    result = run("lists", "stats", "--state", str(tmp_path / "none"), check=False)
    assert result.returncode == 2 and "eir-enforcer state build" in result.stderr


def test_synthetic_snapshot(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = json.loads(run("state", "synth", "--devices", "5000", "--state", str(state)).stdout)
    assert out["devices"] == 5000 and out["imeis"] == 7500


def test_demo_decides_each_kind_then_runs_the_worker_on_embedded_services(
        tmp_path: Path) -> None:
    kafka, postgres, metrics = free_port(), free_port(), free_port()
    env = {"EIR_STATE__DIR": str(tmp_path / "state"), "EIR_SERVICES__DIR": str(tmp_path / "svc"),
           "EIR_SERVICES__KAFKA_PORT": str(kafka), "EIR_SERVICES__POSTGRES_PORT": str(postgres),
           "EIR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
           "EIR_POSTGRES__DSN": f"postgresql://postgres@127.0.0.1:{postgres}/eir",
           "EIR_HTTP__PORT": str(metrics), "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
           "PATH": os.environ["PATH"]}
    # The user's own services, up before the demo: it uses them and leaves them up.
    run("services", "up", env=env)
    try:
        # It ends on day 31, while the notices opened on its first days are reminded and cut.
        demo = run("demo", "--devices", "20000", "--rate", "1000", "--duration", "15",
                   "--days", "31", env=env).stdout
        up = [s["up"] for s in json.loads(run("services", "status", env=env).stdout)["services"]]
        with psycopg.connect(env["EIR_POSTGRES__DSN"]) as conn:
            stored = dict(conn.execute(
                "SELECT coalesce(step, to_state), count(*) FROM notice_transitions"
                " WHERE step IS NOT NULL OR to_state IN ('open', 'lapsed') GROUP BY 1"
                ).fetchall())
            (cut_now,) = conn.execute("SELECT count(*) FROM notices WHERE state = 'cut'"
                                      ).fetchone()
    finally:
        run("services", "down", env=env)
    for shown in ("decisions/s", "owner", "other_cartable", "no_cartable", "unregistered",
                  "roamer", "blacklisted", "malformed", "emergency", "eir-enforcer check",
                  "slot_usage holds", "Try next:", "eir-enforcer history"):
        assert shown in demo
    # Piped, not a terminal: plain reports every few seconds, no escape codes, 100 columns.
    lines = demo.splitlines()
    assert "\x1b" not in demo and max(len(line) for line in lines) <= MAX_COLUMNS
    reports = [line for line in lines if line.startswith("  [")]
    assert 2 <= len(reports) < len(lines) / 4
    sent_decided = [(int(r.split(" sent")[0].split()[-1].replace(",", "")),
                     int(r.split(" decided")[0].split()[-1].replace(",", ""))) for r in reports]
    # Trial finding 6: "290,000 sent · 290,876 decided".
    assert all(sent >= decided for sent, decided in sent_decided), sent_decided
    decided = sent_decided[-1][1]
    assert decided > 0

    def figure(line: str, name: str) -> int:
        return int(line.split(f" {name} ")[1].split()[0].strip(",;").replace(",", ""))
    # The fast clock: a month of notices in seconds.
    assert float(reports[-1].split("day ")[1].split("]")[0]) > 30
    notices = [line for line in lines if line.startswith("    notices ")][-1]
    assert figure(notices, "warned") > 0 and figure(notices, "cut") > 0
    # The closing summary counts what the last report counted, by the same names.
    upserts = figure([line for line in lines if line.startswith("    verdicts ")][-1],
                     "upserts")
    closing = " ".join(demo.split())
    assert f"decided {decided:,} attach events" in closing
    assert f"this run's {upserts:,} upserts" in closing
    # ... and what the database holds once the worker stopped (trial finding 6: what the
    # sweeps did after the last sample was missing from it).
    funnel = closing.split("Notices: ")[1].split(";")[0]
    assert funnel == ", ".join(f"{stored.get(step, 0):,} {shown}" for step, shown in [
        ("open", "opened"), ("warning", "warned"), ("reminder", "reminded"), ("cutoff", "cut"),
        ("resolved", "restored"), ("lapsed", "lapsed")])
    assert f"; {cut_now:,} subjects still cut off" in closing
    # The worker's log lines went to a file, not across the display.
    assert f"The worker's log lines: {tmp_path / 'svc' / 'demo.log'}" in closing
    assert (tmp_path / "svc" / "demo.log").exists()
    # Services up before the demo are up after it, and nothing says to start them again.
    assert up == [True, True]
    assert "still up, as they were before the demo" in closing
    assert "services up" not in closing and "eir-enforcer services down" in closing


@pytest.mark.parametrize(("option", "value"), [("--duration", "0"), ("--days", "nan"),
                                               ("--days", "inf"), ("--rate", "-5"),
                                               ("--devices", "1.5")])
def test_demo_refuses_a_duration_rate_or_count_that_is_not_above_zero(option: str,
                                                                      value: str) -> None:
    result = run("demo", option, value, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {option}: " in result.stderr
