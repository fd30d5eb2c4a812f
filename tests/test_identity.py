"""Identity forms, one table for every path (docs/messages.md, "Identities"): each PEI, SUPI
and GPSI text is read in the strict mode where serve reads (the reader itself, read_check's
fast path, `eir-enforcer serve` over HTTP) and in the lenient mode where the stream reads (the
reader itself, the reference attach decoder, the poll decoder, a worker on the real broker,
`eir-enforcer check`), with the outcome the table gives for that mode. A JSON number, which
only the stream carries, goes through the readers and the stream's paths."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import msgspec
import numpy as np
import pytest

from enforcer.engine.batchdecode import decode_poll
from enforcer.engine.attachdecode import DeadLetter, decode_attach
from enforcer.frontends.eic import Check, Problem, read_check
from enforcer.engine.events import NO_KEY
from enforcer.engine.identity import Mode, OtherForm, read_imei, read_imsi, read_msisdn
from enforcer.engine.imei import ImeiRules
from enforcer.engine.lists import Lists
from enforcer.engine.pairset import PairSet
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.engine.subscriber import IdentityError
from rules.policy import Policy
from tests.test_cli import run
from tests.kafkatools import produce, read_all, wait_for
from tests.test_decide import (BUYER, CUT_FOR_BUYER, OWNER, SINGLE, UNREGISTERED, full, home_imsi,
                               make_state)
from tests.test_decode import GOOD, WINDOW
from tests.test_eic import API, running_serve
from tests.test_http import get
from tests.test_registry_events import with_verdicts
from tests.test_worker import attach, history, now_ms

REFUSED = "refused"  # strict: a 400 naming the parameter; lenient: a dead letter
OTHER = "other"  # strict only: valid, names no IMEI, IMSI or MSISDN; the check goes on without


class Key(NamedTuple):
    """An IMEI read: its key (None: none), and whether it is malformed."""

    key: int | None
    malformed: bool = False


class Row(NamedTuple):
    field: str  # the attach event's field; serve's parameter is PARAM[field]
    text: str | int  # an int: a JSON number, which only the stream carries
    strict: object  # Key, an IMSI or MSISDN as a number, OTHER or REFUSED
    lenient: object


PARAM = {"imei": "pei", "imsi": "supi", "msisdn": "gpsi"}
PLACEHOLDER = 499901064000  # 004999010640000's key: burnt into cheap basebands
IMSI = home_imsi(BUYER)  # cut off on CUT_FOR_BUYER, as SHORT_IMSIS are on the state served
SHORT_IMSIS = (4321112345678, 43211)  # 13 and 5 digits: TS 29.571's Supi allows 5-15
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")

TABLE = [
    Row("imei", f"imei-{full(SINGLE)}", Key(SINGLE), Key(SINGLE)),
    Row("imei", f"imeisv-{SINGLE:014d}07", Key(SINGLE), Key(SINGLE)),
    Row("imei", f"IMEI-{full(SINGLE)}", REFUSED, Key(SINGLE)),
    Row("imei", f"IMEISV-{SINGLE:014d}07", REFUSED, Key(SINGLE)),
    Row("imei", f"imeisv-{full(SINGLE)}", REFUSED, Key(SINGLE, True)),  # 15 digits: pei_form
    Row("imei", f"imei-{SINGLE:014d}", REFUSED, Key(SINGLE, True)),
    Row("imei", full(SINGLE), REFUSED, Key(SINGLE)),
    Row("imei", f" imei-{full(SINGLE)}\t", REFUSED, Key(SINGLE)),
    Row("imei", f"imei-{full(SINGLE).translate(PERSIAN)}", REFUSED, Key(SINGLE)),
    Row("imei", "imei-004999010640000", Key(PLACEHOLDER, True), Key(PLACEHOLDER, True)),
    Row("imei", "imei-12345", REFUSED, Key(None, True)),
    Row("imei", "mac-00-1a-2b-3c-4d-5e", OTHER, Key(None, True)),
    Row("imei", "mac-00-1A-2B-3C-4D-5E-untrusted", OTHER, Key(None, True)),
    Row("imei", "eui-00-11-22-33-44-55-66-77", OTHER, Key(None, True)),
    Row("imei", "mac-00-1a-2b", REFUSED, Key(None, True)),
    # Numbers: read from 15 digits on; fewer may have lost a leading zero (issue 18's
    # 013327001001504 as 13327001001504), so they give no key.
    Row("imei", int(full(SINGLE)), REFUSED, Key(SINGLE)),
    Row("imei", int(f"{SINGLE}07"), REFUSED, Key(SINGLE)),
    Row("imei", SINGLE, REFUSED, Key(None, True)),
    Row("imei", 13327001001504, REFUSED, Key(None, True)),
    Row("imsi", f"imsi-{IMSI}", int(IMSI), int(IMSI)),
    Row("imsi", f"IMSI-{IMSI}", REFUSED, int(IMSI)),
    Row("imsi", IMSI, REFUSED, int(IMSI)),
    Row("imsi", f" imsi-{IMSI} ", REFUSED, int(IMSI)),
    Row("imsi", int(IMSI), REFUSED, int(IMSI)),
    Row("imsi", "imsi-4321112345678", 4321112345678, 4321112345678),  # issue 18: 13 digits
    Row("imsi", "imsi-43211", 43211, 43211),
    Row("imsi", "imsi-4321", REFUSED, REFUSED),
    Row("imsi", f"imsi-{IMSI}0", REFUSED, REFUSED),
    Row("imsi", f"imsi-{IMSI[:-1]}x", REFUSED, REFUSED),
    Row("imsi", f"imsi-{IMSI.translate(PERSIAN)}", REFUSED, REFUSED),
    Row("imsi", "nai-user@realm.example", OTHER, REFUSED),
    Row("imsi", "gci-0011223344556677", OTHER, REFUSED),
    Row("imsi", "gli-line-7", OTHER, REFUSED),
    Row("imsi", "nai-", REFUSED, REFUSED),
    Row("msisdn", f"msisdn-{OWNER}", OWNER, OWNER),
    Row("msisdn", f"MSISDN-{OWNER}", REFUSED, OWNER),
    Row("msisdn", f"+{OWNER}", REFUSED, OWNER),
    Row("msisdn", str(OWNER), REFUSED, OWNER),
    Row("msisdn", f" msisdn-{OWNER}", REFUSED, OWNER),
    Row("msisdn", OWNER, REFUSED, OWNER),
    Row("msisdn", "msisdn-09121111111", OTHER, REFUSED),  # national form: no E.164 number
    Row("msisdn", "msisdn-12345", OTHER, REFUSED),  # 5 digits: the pattern's, not E.164's
    Row("msisdn", "msisdn-1234", REFUSED, REFUSED),
    Row("msisdn", "msisdn-9891211111112345", REFUSED, REFUSED),
    Row("msisdn", f"msisdn-+{OWNER}", REFUSED, REFUSED),
    Row("msisdn", "extid-meter-7@iot.example", OTHER, REFUSED),
    Row("msisdn", "extid-meter-7", REFUSED, REFUSED),
]
IDS = [f"{row.field}:{row.text.strip()}" if isinstance(row.text, str)
       else f"{row.field}:number {row.text}" for row in TABLE]
# A query string and a command line carry text only: serve and `check` read these rows.
TEXT_ROWS = [row for row in TABLE if isinstance(row.text, str)]
TEXT_IDS = [i for row, i in zip(TABLE, IDS) if isinstance(row.text, str)]


def read(row: Row, mode: Mode, rules: ImeiRules) -> object:
    try:
        if row.field == "imei":
            parsed = read_imei(row.text, mode, rules)
            return Key(parsed.imei_key, parsed.malformed)
        if row.field == "imsi":
            return read_imsi(row.text, mode).value
        return read_msisdn(row.text, mode)
    except OtherForm:
        return OTHER
    except IdentityError:
        return REFUSED


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_the_reader_reads_each_form_as_the_table_says(rules: ImeiRules, row: Row) -> None:
    assert read(row, Mode.STRICT, rules) == row.strict
    assert read(row, Mode.LENIENT, rules) == row.lenient


# --- the stream: lenient -------------------------------------------------------------------

@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_the_stream_reads_each_form_leniently(rules: ImeiRules, row: Row) -> None:
    message = msgspec.json.encode(GOOD | {row.field: row.text})
    decoded = decode_attach(message, rules, WINDOW)
    poll = decode_poll([message], rules, WINDOW)
    if row.lenient == REFUSED:
        assert isinstance(decoded, DeadLetter) and decoded.reason == f"bad_{row.field}"
        assert [d.reason for _, d in poll.dead] == [decoded.reason]
        return
    assert not isinstance(decoded, DeadLetter) and not poll.dead
    if row.field == "imei":
        key = int(poll.batch.imei_key[0])
        seen = Key(decoded.imei.imei_key, decoded.imei.malformed)
        polled = Key(None if key == NO_KEY else key, bool(poll.batch.malformed[0]))
    elif row.field == "imsi":
        seen, polled = decoded.imsi.value, int(poll.batch.imsi[0])
    else:
        seen, polled = decoded.msisdn, int(poll.batch.msisdn[0])
    assert seen == polled == row.lenient


def check_args(row: Row) -> list[str]:
    """`eir-enforcer check` with the row's text in its option, beside the identities
    serve_query gives the other parameters."""
    args = {"imei": f"{SINGLE:014d}", "imsi": home_imsi(OWNER), "msisdn": str(OWNER)}
    if row.field == "imsi":
        args = {"imei": f"{CUT_FOR_BUYER:014d}", "imsi": row.text, "msisdn": str(BUYER)}
    args[row.field] = row.text
    return [arg for name, value in args.items() for arg in (f"--{name}", value)]


def test_check_reads_each_form_leniently(policy, tmp_path: Path) -> None:
    save_snapshot(cut_for_each_imsi(policy), tmp_path / "state")
    with ThreadPoolExecutor(max_workers=4) as pool:  # a second of imports each
        results = list(pool.map(lambda row: run("check", *check_args(row), "--state",
                                                str(tmp_path / "state"), check=False),
                                TEXT_ROWS))
    for row, result in zip(TEXT_ROWS, results):
        if row.lenient == REFUSED:
            assert result.returncode == 2 and f"argument --{row.field}:" in result.stderr, row
            continue
        assert result.returncode == 0, (row, result.stderr)
        decided = json.loads(result.stdout)
        if row.field == "imei":
            key = decided["imei"]["key"]
            assert Key(key and int(key), decided["imei"]["malformed"]) == row.lenient, row
        else:  # the cut pair's IMSI, or the owner's MSISDN
            assert decided["rule"] == ("cut_off" if row.field == "imsi" else "owner"), row


def rfc3339_forms(ms: int) -> list[str]:
    """One instant (whole seconds) as several RFC 3339 date-times: issue 18's lower-case z
    among them."""
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    tehran = moment.astimezone(timezone(timedelta(hours=3, minutes=30)))
    return [f"{moment:%Y-%m-%dT%H:%M:%S}z", f"{moment:%Y-%m-%dt%H:%M:%S}Z",
            f"{tehran:%Y-%m-%dT%H:%M:%S}.000999+03:30", f"{moment:%Y-%m-%d %H:%M:%S}-00:00",
            str(ms)]


def test_a_worker_reads_the_lenient_forms_and_rfc3339_times(env, worker, dsn) -> None:
    """The table's IMSI and MSISDN rows as a core's attaches, each on its own IMEI and with its
    time in another RFC 3339 form: what the table reads goes into the history at that time,
    what it refuses to the dead-letter topic with its reason."""
    rows = [row for row in TABLE if row.field != "imei"]
    at = (time.time_ns() // 1_000_000_000 - 60) * 1000
    times = rfc3339_forms(at)
    attaches = [{"imei": f"{UNREGISTERED + i:014d}", "imsi": home_imsi(OWNER),
                 "msisdn": str(OWNER), "ts": times[i % len(times)], row.field: row.text}
                for i, row in enumerate(rows)]
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], attaches)
    worker()
    refused = [f"bad_{row.field}" for row in rows if row.lenient == REFUSED]
    wait_for(lambda: len(read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                                  env["EIR_KAFKA__ATTACH_DLQ_TOPIC"])) >= len(refused))
    dlq = read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_DLQ_TOPIC"])
    assert [dict(m.headers)["dlq-reason"].decode() for m in dlq] == refused
    wait_for(lambda: len(history(dsn)) == len(rows) - len(refused))
    seen = datetime.fromtimestamp(at / 1000, timezone.utc)
    assert {(imei_key, imsi, msisdn, first) for imei_key, imsi, msisdn, _, first, *_ in
            history(dsn)} == {
        (UNREGISTERED + i, row.lenient if row.field == "imsi" else int(home_imsi(OWNER)),
         row.lenient if row.field == "msisdn" else OWNER, seen)
        for i, row in enumerate(rows) if row.lenient != REFUSED}


def test_a_worker_greylists_an_imei_sent_as_a_number_of_14_digits(env, worker, dsn) -> None:
    """Issue 18's 013327001001504 as a number, then a 15-digit number: the first is decided
    GREYLISTED as malformed with no IMEI (it was read as TAC 13327001), the second as the
    unregistered IMEI it is; neither is a dead letter, and only the second has a history."""
    with_verdicts(env)
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    seen = now_ms()
    produce(bootstrap, env["EIR_KAFKA__ATTACH_TOPIC"], [
        attach(0, OWNER, seen) | {"imei": 13327001001504},
        attach(0, OWNER, seen + 1) | {"imei": int(full(UNREGISTERED))}])
    worker()
    wait_for(lambda: len(read_all(bootstrap, env["EIR_KAFKA__VERDICTS_TOPIC"])) == 2)
    verdicts = [msgspec.json.decode(m.value)
                for m in read_all(bootstrap, env["EIR_KAFKA__VERDICTS_TOPIC"])]
    assert sorted((v["imei"] or "", v["verdict"], v["rule"]) for v in verdicts) == [
        ("", "GREYLISTED", "malformed"), (f"{UNREGISTERED:014d}", "GREYLISTED", "unregistered")]
    assert [row[0] for row in history(dsn)] == [UNREGISTERED]
    assert read_all(bootstrap, env["EIR_KAFKA__ATTACH_DLQ_TOPIC"]) == []


# --- serve: strict -------------------------------------------------------------------------

def serve_query(row: Row) -> dict[str, str]:
    """The row's text in its parameter, beside the others: SINGLE and its owner's SIM for a
    GPSI or a PEI; for a SUPI, CUT_FOR_BUYER, which is cut off for the SUPI's IMSI."""
    if row.field == "imsi":
        return {"pei": f"imei-{full(CUT_FOR_BUYER)}", "supi": row.text}
    query = {"pei": f"imei-{full(SINGLE)}", "supi": f"imsi-{home_imsi(OWNER)}",
             "gpsi": f"msisdn-{OWNER}"}
    return query | {PARAM[row.field]: row.text}


@pytest.mark.parametrize("row", TEXT_ROWS, ids=TEXT_IDS)
def test_serve_reads_each_form_strictly(rules: ImeiRules, row: Row) -> None:
    check = read_check(serve_query(row), rules)
    if row.strict == REFUSED:
        assert isinstance(check, Problem) and check.status == 400
        assert check.as_json()["invalidParams"] == [{"param": PARAM[row.field],
                                                     "reason": check.detail}]
        return
    assert isinstance(check, Check)
    if row.field == "imei":
        assert (check.imei_key, check.malformed) == ((None, False) if row.strict == OTHER
                                                     else row.strict)
    elif row.field == "imsi":
        assert check.imsi == (0 if row.strict == OTHER else row.strict)
    else:
        assert check.msisdn == (0 if row.strict == OTHER else row.strict)


def answer_over_http(row: Row) -> tuple[int, str | None]:
    """What serve answers for the row, from what the strict reader made of it."""
    if row.strict == REFUSED:
        return 400, None
    if row.field == "imei":
        if row.strict == OTHER:
            return 404, None
        return 200, "GREYLISTED" if row.strict.malformed else "WHITELISTED"
    if row.field == "imsi":  # read: the pair is cut off; else the PEI alone
        return 200, "GREYLISTED" if row.strict == OTHER else "BLACKLISTED"
    return 200, "GREYLISTED" if row.strict == OTHER else "WHITELISTED"  # the owner's GPSI


def cut_for_each_imsi(policy: Policy) -> EnforcementState:
    """The test state (generation 2), with CUT_FOR_BUYER also cut off for each short IMSI."""
    base = make_state(policy)
    imsis = np.array([int(IMSI), *SHORT_IMSIS], np.uint64)
    lists = Lists.from_black_keys(base.lists.generation + 1, base.lists.white_index,
                                  base.lists.black_keys(),
                                  cut_imeis=base.lists.cut_imeis,
                                  cut_pairs=PairSet.from_pairs(
                                      np.full(len(imsis), CUT_FOR_BUYER, np.uint64), imsis))
    return EnforcementState(lists, base.devices, policy)


@pytest.fixture()
def serve_cut_for_each_imsi(env, policy, tmp_path: Path):
    save_snapshot(cut_for_each_imsi(policy), Path(env["EIR_STATE__DIR"]))
    with running_serve(env, tmp_path / "serve.log") as port:
        yield port


def test_serve_answers_each_form_as_the_table_says(serve_cut_for_each_imsi) -> None:
    answered, expected = [], []
    for row in TEXT_ROWS:
        query = "&".join(f"{name}={quote(value, safe='')}"
                         for name, value in serve_query(row).items())
        code, body, _ = get(serve_cut_for_each_imsi, f"{API}?{query}", None)
        answered.append((row.text, code, body.get("status") if code == 200 else None))
        expected.append((row.text, *answer_over_http(row)))
        if code == 400:
            assert body["invalidParams"][0]["param"] == PARAM[row.field], row
    assert answered == expected
