"""N5g-eir Equipment Identity Check: the pure answers (every status, SUPI precedence,
ProblemDetails), then `eir-enforcer serve` as a 5G core calls it, and the 3GPP OpenAPI
description of the service run against it by schemathesis."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from http import HTTPStatus
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, urlencode

import h2.config
import h2.connection
import h2.events
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from enforcer.querystring import query_values
from enforcer.frontends.eic import Cause, Check, Problem, EirResponseData, answer_checks, read_check
from enforcer.embedded.services import free_port
from enforcer.engine.identity import Mode, OtherForm, read_imei, read_imsi, read_msisdn
from enforcer.engine.subscriber import IdentityError
from rules.policy import Condition
from tests.test_decide import (BUYER, CUT_FOR_BUYER, CUT_IMEI, OWNER, SINGLE, STOLEN, STRANGER,
                               UNREGISTERED, full, home_imsi, state)
from tests.test_http import get
from tests.test_registry_events import registry_event
from tests.kafkatools import produce, wait_for
from tests.test_monitoring import catalogued, family

NOW_MS = 1_790_000_000_000
SPEC = Path(__file__).resolve().parents[2] / "shared" / "3gpp" / \
    "TS29511_N5g-eir_EquipmentIdentityCheck.yaml"
API = "/n5g-eir-eic/v1/equipment-status"


def query(imei: int | None = None, supi: int | None = None, gpsi: int | None = None,
          **raw: str) -> dict[str, str]:
    out = dict(raw)
    if imei is not None:
        out["pei"] = f"imei-{full(imei)}"
    if supi is not None:
        out["supi"] = f"imsi-{home_imsi(supi)}"
    if gpsi is not None:
        out["gpsi"] = f"msisdn-{gpsi}"
    return out


def ask(state, rules, **params) -> EirResponseData | Problem:
    check = read_check(query(**params), rules)
    if isinstance(check, Problem):
        return check
    return answer_checks([check], state, NOW_MS)[0]


__all__ = ["state"]  # the fixture, shared with test_decide


def test_the_owner_is_whitelisted(state, rules) -> None:
    assert ask(state, rules, imei=SINGLE, supi=OWNER, gpsi=OWNER) == EirResponseData("WHITELISTED",
                                                                                     "owner")


def test_another_sim_on_a_registered_device_is_greylisted(state, rules) -> None:
    answer = ask(state, rules, imei=SINGLE, supi=STRANGER, gpsi=STRANGER)
    assert answer == EirResponseData("GREYLISTED", "other_cartable")


def test_an_unregistered_device_is_greylisted(state, rules) -> None:
    assert ask(state, rules, imei=UNREGISTERED, supi=OWNER, gpsi=OWNER).status == "GREYLISTED"


def test_a_blacklisted_imei_is_blacklisted_for_every_sim_and_without_one(state, rules) -> None:
    assert ask(state, rules, imei=STOLEN, supi=OWNER, gpsi=OWNER).status == "BLACKLISTED"
    assert ask(state, rules, imei=STOLEN).status == "BLACKLISTED"


def test_a_cut_off_pair_is_blacklisted_only_for_that_supi(state, rules) -> None:
    assert ask(state, rules, imei=CUT_FOR_BUYER, supi=BUYER, gpsi=BUYER).status == "BLACKLISTED"
    assert ask(state, rules, imei=CUT_FOR_BUYER, supi=OWNER, gpsi=OWNER).status == "WHITELISTED"
    # The PEI alone is not the pair: not refused.
    assert ask(state, rules, imei=CUT_FOR_BUYER).status == "GREYLISTED"


def test_this_operators_own_cutoff_of_a_pair_counts_for_that_supi(state, rules) -> None:
    cut = replace(state, cutoffs=state.cutoffs.changed([(SINGLE, int(home_imsi(BUYER)))], []))
    assert ask(cut, rules, imei=SINGLE, supi=BUYER, gpsi=BUYER).status == "BLACKLISTED"
    assert ask(cut, rules, imei=SINGLE, supi=OWNER, gpsi=OWNER).status == "WHITELISTED"


def test_a_cut_off_imei_is_blacklisted_without_a_supi(state, rules) -> None:
    assert ask(state, rules, imei=CUT_IMEI).status == "BLACKLISTED"


def knowing_owner(state):
    """The state with OWNER's number known by the IMSI, as an attach of the SIM teaches it."""
    numbers = state.numbers.with_pairs(np.array([int(home_imsi(OWNER))], np.uint64),
                                       np.array([OWNER], np.uint64))
    return replace(state, numbers=numbers)


def test_without_a_gpsi_the_owner_known_by_the_imsi_is_whitelisted(state, rules) -> None:
    assert ask(knowing_owner(state), rules, imei=SINGLE, supi=OWNER) == EirResponseData(
        "WHITELISTED", "owner")
    # A GPSI given is the number: the IMSI's known one does not replace it.
    assert ask(knowing_owner(state), rules, imei=SINGLE, supi=OWNER, gpsi=STRANGER).status \
        == "GREYLISTED"


def test_without_a_gpsi_an_imsi_not_known_cannot_be_told_and_is_greylisted(state, rules) -> None:
    assert ask(state, rules, imei=SINGLE, supi=OWNER).status == "GREYLISTED"
    assert ask(knowing_owner(state), rules, imei=SINGLE, supi=STRANGER).status == "GREYLISTED"


def test_a_placeholder_imei_is_greylisted_as_malformed(state, rules) -> None:
    answer = ask(state, rules, pei="imei-004999010640000", gpsi=OWNER)
    assert answer == EirResponseData("GREYLISTED", "malformed")


def test_an_imeisv_is_the_imei_with_a_software_version(state, rules) -> None:
    answer = ask(state, rules, pei=f"imeisv-{SINGLE:014d}07", supi=OWNER, gpsi=OWNER)
    assert answer == EirResponseData("WHITELISTED", "owner")


def test_a_wireline_pei_is_unknown_equipment(state, rules) -> None:
    answer = ask(state, rules, pei="mac-00-1a-2b-3c-4d-5e")
    assert isinstance(answer, Problem) and answer.status is HTTPStatus.NOT_FOUND
    assert answer.as_json() == {"title": "Not Found", "status": 404, "cause":
                                "ERROR_EQUIPMENT_UNKNOWN",
                                "detail": "the equipment is not known to this EIR"}


def test_the_policy_may_answer_unregistered_equipment_as_unknown(state, rules) -> None:
    rules_of = tuple(replace(r, unknown_equipment=r.when is Condition.UNREGISTERED_HOME)
                     for r in state.policy.rules)
    strict = replace(state, policy=replace(state.policy, rules=rules_of))
    answer = ask(strict, rules, imei=UNREGISTERED, supi=OWNER, gpsi=OWNER)
    assert isinstance(answer, Problem) and answer.cause is Cause.ERROR_EQUIPMENT_UNKNOWN
    assert ask(strict, rules, imei=SINGLE, supi=OWNER, gpsi=OWNER).status == "WHITELISTED"


@pytest.mark.parametrize(("params", "param", "cause"), [
    ({}, "pei", Cause.MANDATORY_IE_MISSING),
    ({"pei": "imei-12345"}, "pei", Cause.MANDATORY_IE_INCORRECT),
    ({"pei": "352099001761481"}, "pei", Cause.MANDATORY_IE_INCORRECT),
    ({"pei": "imei-35209900176148x"}, "pei", Cause.MANDATORY_IE_INCORRECT),
    ({"pei": f"imei-{full(SINGLE)}", "supi": "imsi-12"}, "supi", Cause.OPTIONAL_IE_INCORRECT),
    ({"pei": f"imei-{full(SINGLE)}", "supi": "432111234567890"}, "supi",
     Cause.OPTIONAL_IE_INCORRECT),
    ({"pei": f"imei-{full(SINGLE)}", "gpsi": "msisdn-0912"}, "gpsi",
     Cause.OPTIONAL_IE_INCORRECT),
    ({"pei": f"imei-{full(SINGLE)}", "supported-features": "xyz"}, "supported-features",
     Cause.OPTIONAL_IE_INCORRECT),
])
def test_a_parameter_that_is_not_valid_is_a_400_naming_it(rules, params, param, cause) -> None:
    problem = read_check(params, rules)
    assert isinstance(problem, Problem) and problem.status is HTTPStatus.BAD_REQUEST
    body = problem.as_json()
    assert body["cause"] == cause.value and body["invalidParams"][0]["param"] == param


def test_other_identity_forms_are_read_as_absent(rules) -> None:
    check = read_check({"pei": f"imei-{full(SINGLE)}", "supi": "nai-user@realm",
                        "gpsi": "extid-user@domain"}, rules)
    assert check == Check(SINGLE, False, 0, None, 0)


@given(st.dictionaries(st.sampled_from(["pei", "supi", "gpsi", "supported-features", "x"]),
                       st.text(max_size=40)))
def test_any_query_is_read_as_a_check_or_a_400(params) -> None:
    from enforcer.engine.imei import imei_rules
    from enforcer.config import load_config
    check = read_check(params, imei_rules(load_config(environ={})))
    assert isinstance(check, Check) or check.status is HTTPStatus.BAD_REQUEST


# Mostly near the forms a 5G core sends: the edges of their lengths, a leading 0, capitals,
# the forms that name no SIM.
identities = st.one_of(
    st.text(max_size=20),
    st.builds(lambda prefix, digits: prefix + digits,
              st.sampled_from(["imsi-", "msisdn-", "IMSI-", " imsi-", "msisdn-+", "nai-",
                               "gci-", "extid-", "extid-a@", ""]),
              st.text(alphabet="0123456789 ٣@", max_size=17)),
    st.builds(lambda prefix, digits: prefix + digits, st.sampled_from(["imsi-", "msisdn-"]),
              st.text(alphabet="0123456789", min_size=3, max_size=17)))
peis = st.one_of(
    st.text(max_size=20),
    st.builds(lambda prefix, digits: prefix + digits,
              st.sampled_from(["imei-", "imeisv-", "IMEI-", " imei-", "mac", "eui", ""]),
              st.text(alphabet="0123456789-aF", min_size=12, max_size=26)),
    st.builds(lambda prefix, digits: prefix + digits, st.sampled_from(["imei-", "imeisv-"]),
              st.text(alphabet="0123456789", min_size=14, max_size=17)))


def strictly(read, value):
    """The strict reader's answer (enforcer.engine.identity), as read_check should give it: the
    identity, None for a form that names none, Problem for a 400."""
    try:
        return read(value)
    except OtherForm:
        return None
    except IdentityError:
        return Problem


@given(peis, identities, identities)
@example(f"imei-{full(SINGLE)}", "imsi-432111234567890", "msisdn-0912345678")
@example("imeisv-352099001761481", "imsi-432111234567890", "msisdn-123456")
@example("mac-00-1a-2b-3c-4d-5e", "imsi-4321112345678901", "msisdn-989121234567")
@example("imei-004999010640000", "imsi-4321112345678", "msisdn-989121234567")
@example(f"imei-{full(SINGLE)}", "imsi-43211123456789", "msisdn-123456789012345")
@example(f"imei-{full(SINGLE)}", "nai-", "extid-a@b")
def test_the_fast_path_reads_as_the_strict_reader(rules, pei, supi, gpsi) -> None:
    check = read_check({"pei": pei, "supi": supi, "gpsi": gpsi}, rules)
    imei = strictly(lambda v: read_imei(v, Mode.STRICT, rules), pei) if pei else Problem
    imsi = strictly(lambda v: read_imsi(v, Mode.STRICT), supi)
    msisdn = strictly(lambda v: read_msisdn(v, Mode.STRICT), gpsi)
    if Problem in (imei, imsi, msisdn):
        assert isinstance(check, Problem)
        return
    assert check == Check(None if imei is None else imei.imei_key,
                          False if imei is None else imei.malformed,
                          0 if imsi is None else imsi.value,
                          None if imsi is None else imsi.mcc,
                          0 if msisdn is None else msisdn)


def test_a_batch_answers_each_check_as_alone(state, rules) -> None:
    cases = [dict(imei=SINGLE, supi=OWNER, gpsi=OWNER), dict(imei=STOLEN),
             dict(imei=CUT_FOR_BUYER, supi=BUYER, gpsi=BUYER),
             dict(imei=UNREGISTERED, supi=STRANGER, gpsi=STRANGER),
             dict(pei="eui-00-11-22-33-44-55-66-77")]
    checks = [read_check(query(**c), rules) for c in cases]
    assert answer_checks(checks, state, NOW_MS) == [ask(state, rules, **c) for c in cases]



@given(st.text(alphabet="pei=&imsu-0123456789%2B+ é;", max_size=60))
@example("pei=1&supi=2&pei=3")
@example("pei=1&p%65i=3")
@example("pei=&pei=1")
def test_a_query_is_read_as_parse_qsl_reads_it(query: str) -> None:
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    repeated = [name for i, name in enumerate(names) if name in names[:i]]
    values, given_twice = query_values(query)
    assert given_twice == (repeated[0] if repeated else None)
    if not repeated:
        assert values == dict(pairs)

# --- `eir-enforcer serve`, over HTTP ---------------------------------------------------------

@contextmanager
def running_serve(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """`eir-enforcer serve` on the configuration `env`, ready; its port."""
    port = free_port()
    environ = {**os.environ, **env, "EIR_EIC__PORT": str(port), "EIR_EIC__FOLLOW_S": "0.2",
               "EIR_EIC__BIND": "127.0.0.1"}
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "enforcer.app.cli", "serve"], env=environ,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ready(port), timeout_s=30)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@pytest.fixture()
def serve(env, tmp_path):
    with running_serve(env, tmp_path / "serve.log") as port:
        yield port


def _ready(port: int) -> bool:
    try:
        return get(port, "/readyz", token=None)[0] == 200
    except OSError:
        return False


def test_serve_says_once_at_the_default_level_what_it_listens_on(env, tmp_path) -> None:
    """Trial finding 10: serve did not say it had started, nor on which port."""
    with running_serve(env, tmp_path / "serve.log") as port:
        pass
    events = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    (started,) = [e for e in events if e["event"] == "equipment checks started"]
    assert (started["logger"], started["listen"], started["path"], started["follows"]) == (
        "eir.lifecycle", f"127.0.0.1:{port}", "/n5g-eir-eic/v1/equipment-status", "postgres")
    assert events[-1]["event"] == "equipment checks stopped"


def check_path(**params) -> str:
    return f"{API}?{urlencode(query(**params))}"


def test_serve_answers_a_5g_core_and_follows_the_registry(serve, env, worker) -> None:
    port = serve
    code, body, headers = get(port, check_path(imei=SINGLE, supi=OWNER, gpsi=OWNER), None)
    assert (code, body) == (200, {"status": "WHITELISTED"})
    assert headers["content-type"] == "application/json"
    code, body, _ = get(port, check_path(imei=CUT_FOR_BUYER, supi=BUYER, gpsi=BUYER), None)
    assert (code, body) == (200, {"status": "BLACKLISTED"})
    code, body, headers = get(port, f"{API}?pei=imei-1", None)
    assert code == 400 and body["invalidParams"][0]["param"] == "pei"
    assert headers["content-type"] == "application/problem+json"
    code, body, _ = get(port, f"{API}?pei=mac-00-1a-2b-3c-4d-5e", None)
    assert code == 404 and body["cause"] == "ERROR_EQUIPMENT_UNKNOWN"

    # The registry black-lists the device: a worker stores the change, serve takes it in.
    worker()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"], [
        registry_event("r-eic-1", "blacklisted", imeis=[f"{SINGLE:014d}"], reason="stolen")])
    wait_for(lambda: get(port, check_path(imei=SINGLE, supi=OWNER, gpsi=OWNER), None)[1]
             == {"status": "BLACKLISTED"}, timeout_s=30)

    metrics = _metrics(port)
    assert metrics['eir_eic_answers_total{answer="WHITELISTED"}'] >= 1
    assert metrics['eir_eic_answers_total{answer="bad_request"}'] == 1
    assert metrics['eir_eic_answers_total{answer="unknown"}'] == 1
    families = {family(name.split("{")[0]) for name in metrics}
    assert {f for f in families if f.startswith("eir_")} == catalogued(serve=True)


def _metrics(port: int) -> dict[str, float]:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # noqa: S310
        text = r.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_the_3gpp_openapi_description_holds_against_serve(serve) -> None:
    """schemathesis generates requests from TS 29.511's OpenAPI file (and the TS 29.571
    types it references) and checks every answer against it: status codes, content types,
    bodies, and that what the schema rejects is rejected.

    Not whether all it admits is accepted: TS 29.571 ends the Pei, Supi and Gpsi patterns
    with `|.+`, so any string is schema-valid, while serve answers 400 for a value in none of
    the forms the patterns name (`imei-12345`, `IMSI-…`): docs/messages.md, "Identities"."""
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", str(SPEC),
         "--url", f"http://127.0.0.1:{serve}/n5g-eir-eic/v1", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance",
         "--max-examples", "150", "--workers", "1", "--seed", "8",
         "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated and int(generated.group(1)) >= 100, result.stdout[-3000:]


def _h2_ask(port: int, paths: list[str]) -> list[tuple[int, dict]]:
    """As an AMF asks: HTTP/2 with prior knowledge, every path on its own stream of one
    connection, all sent before any answer is read."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    streams = {}
    for path in paths:
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [(":method", "GET"), (":path", path),
                                      (":scheme", "http"), (":authority", "eir")],
                          end_stream=True)
        streams[stream_id] = {"status": 0, "body": b""}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        ended = 0
        while ended < len(paths):
            data = sock.recv(65536)
            assert data, "serve closed the HTTP/2 connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    streams[event.stream_id]["status"] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id]["body"] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended += 1
            sock.sendall(conn.data_to_send())
    return [(s["status"], json.loads(s["body"])) for s in streams.values()]


def test_serve_answers_http2_streams_of_one_connection(serve) -> None:
    answers = _h2_ask(serve, [check_path(imei=SINGLE, supi=OWNER, gpsi=OWNER),
                              check_path(imei=STOLEN, supi=OWNER, gpsi=OWNER),
                              f"{API}?pei=imei-1", f"{API}?pei=mac-00-1a-2b-3c-4d-5e"])
    assert [(code, body.get("status")) for code, body in answers] == [
        (200, "WHITELISTED"), (200, "BLACKLISTED"), (400, 400), (404, 404)]
    assert answers[3][1]["cause"] == "ERROR_EQUIPMENT_UNKNOWN"


def test_a_parameter_given_twice_is_a_400_naming_it_on_http1_and_http2(serve) -> None:
    stolen, single = f"imei-{full(STOLEN)}", f"imei-{full(SINGLE)}"
    supi = f"supi=imsi-{home_imsi(OWNER)}"
    paths = [f"{API}?pei={stolen}&pei={single}", f"{API}?pei={single}&pei={stolen}",
             f"{API}?pei={single}&{supi}&{supi}", f"{API}?pei={single}&p%65i={stolen}",
             f"{API}?pei={single}&gpsi=msisdn-{OWNER}&gpsi=",
             f"{API}?pei={single}&x=1&x=2"]
    expected = [("pei", "MANDATORY_IE_INCORRECT"), ("pei", "MANDATORY_IE_INCORRECT"),
                ("supi", "OPTIONAL_IE_INCORRECT"), ("pei", "MANDATORY_IE_INCORRECT"),
                ("gpsi", "OPTIONAL_IE_INCORRECT"), ("x", "OPTIONAL_IE_INCORRECT")]
    over_http1 = [get(serve, path, None) for path in paths]
    over_http2 = _h2_ask(serve, paths)
    for code, body in [(code, body) for code, body, _ in over_http1] + over_http2:
        assert code == 400 and body["status"] == 400
    assert [(body["invalidParams"][0]["param"], body["cause"])
            for _, body, _ in over_http1] == expected
    assert [(body["invalidParams"][0]["param"], body["cause"])
            for _, body in over_http2] == expected
    assert get(serve, f"{API}?pei={single}&{supi}", None)[1] == {"status": "GREYLISTED"}


def test_serve_answers_pipelined_http1_in_order_and_refuses_garbage(serve) -> None:
    first, second = (check_path(imei=STOLEN, supi=OWNER, gpsi=OWNER),
                     check_path(imei=SINGLE, supi=OWNER, gpsi=OWNER))
    with socket.create_connection(("127.0.0.1", serve), timeout=10) as sock:
        sock.sendall(f"GET {first} HTTP/1.1\r\nhost: eir\r\n\r\n"
                     f"GET {second} HTTP/1.1\r\nhost: eir\r\nconnection: close\r\n\r\n".encode())
        answered = _read_to_end(sock)
    assert re.findall(rb'"status":"(\w+)"', answered) == [b"BLACKLISTED", b"WHITELISTED"]
    with socket.create_connection(("127.0.0.1", serve), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert _read_to_end(sock).startswith(b"HTTP/1.1 400 ")


def _read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
