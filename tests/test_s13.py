"""S13 ME-Identity-Check (3GPP TS 29.272): the pure reading and answers (every
Equipment-Status, 5422, the request's faults), then `eir-enforcer serve` with S13 on, asked by
python-diameter's own client node acting as an MME and by its codec over a plain socket (RFC
6733's peer procedures, 3007, 5005, malformed bytes), and the exchange's bytes read by
Wireshark's dissector (tshark)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from diameter.message import Avp, Message
from hypothesis import example, given
from hypothesis import strategies as st
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import (CapabilitiesExchangeRequest, DeviceWatchdogAnswer,
                                       DeviceWatchdogRequest, DisconnectPeerRequest,
                                       MeIdentityCheckRequest)
from diameter.message.constants import AVP_FAILED_AVP
from diameter.node import Node
from diameter.node.application import SimpleThreadingApplication

from enforcer.app.serve import start_s13
from enforcer.clock import Clock
from enforcer.config import ConfigError, load_config
from enforcer.embedded.services import free_port
from enforcer.engine.identity import Mode, read_imsi
from enforcer.engine.imei import imei_rules, parse_imei
from enforcer.engine.state import StateHolder
from enforcer.engine.subscriber import IdentityError
from enforcer.frontends.s13.answers import S13Answers
from enforcer.frontends.s13.node import S13Server
from enforcer.frontends.s13.wire import read_micr
from enforcer.frontends.s13.check import (AVP_IMEI, AVP_TERMINAL_INFORMATION, AVP_USER_NAME,
                                          DIAMETER_ERROR_EQUIPMENT_UNKNOWN,
                                          DIAMETER_INVALID_AVP_VALUE, DIAMETER_MISSING_AVP,
                                          DIAMETER_SUCCESS, S13_APPLICATION_ID, VENDOR_3GPP,
                                          EquipmentStatus, InvalidAvp, read_identity_check)
from metrics.s13 import S13Metrics
from prometheus_client import CollectorRegistry
from rules.policy import Condition
from tests.kafkatools import produce, wait_for
from tests.test_decide import (BUYER, CUT_FOR_BUYER, OWNER, SINGLE, STOLEN, STRANGER, UNREGISTERED,
                               full, home_imsi, state)
from tests.test_eic import API, _metrics, _ready, knowing_owner
from tests.test_http import get
from tests.test_monitoring import catalogued, family
from tests.test_worker import attach, now_ms

NOW_MS = 1_790_000_000_000
EIR_HOST, MME_HOST, REALM = "eir.test.example", "mme.test.example", "test.example"
S6A_APPLICATION_ID = 16777251  # served by an HSS, not by an EIR
DIAMETER_APPLICATION_UNSUPPORTED = 3007
DIAMETER_COMMAND_UNSUPPORTED = 3001
DIAMETER_UNKNOWN_PEER = 3010
DIAMETER_ELECTION_LOST = 4003
DIAMETER_AVP_UNSUPPORTED = 5001
DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
DIAMETER_INVALID_AVP_LENGTH = 5014
UNKNOWN_AVP_CODE = 999_999  # no AVP of RFC 6733 nor of TS 29.272
HEADER_BYTES = 20
DIAMETER_PORT = 3868  # the capture's: Wireshark dissects Diameter on it by default
WATCHDOG_S = 6  # s13.watchdog_s of the serve these tests run: the least it may be
RESETS = 100  # connections reset as they open, in a row
OTHER_ADDRESS = "127.0.0.2"  # another host's, on the loopback interface

__all__ = ["state"]  # the fixture, shared with test_decide


class FixedClock(Clock):
    def now_ms(self) -> int:
        return NOW_MS


def micr(imei: int | str | None, imsi: str | None = None, software_version: str | None = None,
         n: int = 1, origin_host: str = MME_HOST) -> MeIdentityCheckRequest:
    """A ME-Identity-Check-Request as an MME writes it (TS 29.272 §7.2.19)."""
    request = MeIdentityCheckRequest()
    request.header.application_id = S13_APPLICATION_ID
    request.header.hop_by_hop_identifier = 0x1000 + n
    request.header.end_to_end_identifier = 0x2000 + n
    request.session_id = f"{origin_host};1;{n}"
    request.vendor_specific_application_id = VendorSpecificApplicationId(
        vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)
    request.auth_session_state = 1
    request.origin_host = origin_host.encode()
    request.origin_realm = REALM.encode()
    request.destination_realm = REALM.encode()
    if imei is not None:
        text = f"{imei:014d}" if isinstance(imei, int) else imei
        request.terminal_information = TerminalInformation(imei=text,
                                                           software_version=software_version)
    request.user_name = imsi
    return request


def answers_of(holder_state, rules, requests):
    metrics = S13Metrics(CollectorRegistry())
    answers = S13Answers(StateHolder(holder_state), rules, FixedClock(), metrics, EIR_HOST,
                         REALM)
    return [Message.from_bytes(a)
            for a in answers.answer([read_micr(r.as_bytes()) for r in requests])]


def reread(answer: Message) -> Message:
    """An answer as its peer reads it off the wire."""
    return Message.from_bytes(answer.as_bytes())


# --- The pure part ---------------------------------------------------------------------------

def test_terminal_information_and_user_name_are_read_as_an_n5g_eir_check(rules) -> None:
    check = read_identity_check(full(SINGLE), home_imsi(OWNER), rules)
    # No MSISDN: the decision takes the IMSI's from the subscribers' numbers.
    assert (check.imei_key, check.imsi, check.mcc, check.msisdn) == (
        SINGLE, int(home_imsi(OWNER)), 432, 0)
    # 14 digits (the spare digit left out) name the same IMEI; no User-Name, no IMSI.
    assert read_identity_check(f"{SINGLE:014d}", None, rules).imei_key == SINGLE


@pytest.mark.parametrize(("imei", "imsi", "expected"), [
    (None, None, InvalidAvp(DIAMETER_MISSING_AVP, AVP_IMEI, "Terminal-Information carries no "
                            "IMEI")),
    ("3520990017614", None, (DIAMETER_INVALID_AVP_VALUE, AVP_IMEI)),
    ("35209900176148x", None, (DIAMETER_INVALID_AVP_VALUE, AVP_IMEI)),
    ("3520990017614812", None, (DIAMETER_INVALID_AVP_VALUE, AVP_IMEI)),
    ("35209900176148", "imsi-432111234567890", (DIAMETER_INVALID_AVP_VALUE, AVP_USER_NAME)),
    ("35209900176148", "4321", (DIAMETER_INVALID_AVP_VALUE, AVP_USER_NAME)),
])
def test_a_request_the_check_cannot_read_names_the_avp_at_fault(rules, imei, imsi,
                                                                expected) -> None:
    fault = read_identity_check(imei, imsi, rules)
    assert isinstance(fault, InvalidAvp)
    assert (fault if len(expected) == 3 else fault[:2]) == expected


@given(imei=st.one_of(st.from_regex(r"[0-9]{12,17}", fullmatch=True), st.text(max_size=20)),
       imsi=st.one_of(st.none(), st.from_regex(r"[0-9]{3,17}", fullmatch=True),
                      st.text(max_size=20)))
@example(imei="３５２０９９００１７６１４８", imsi=None)  # digits, but not ASCII ones
def test_any_imei_and_user_name_are_read_as_the_engine_reads_them_or_refused(imei, imsi) -> None:
    """The IMEI AVP's key is the engine's (`parse_imei`) for 14 or 15 ASCII digits; the
    User-Name an IMSI as the strict reader reads `imsi-<digits>`; anything else is 5004
    naming the AVP at fault."""
    rules = imei_rules(load_config(environ={}))
    read = read_identity_check(imei, imsi, rules)
    imei_ok = imei.isascii() and imei.isdigit() and len(imei) in (14, 15)
    try:
        imsi_ok = imsi is None or (imsi.isascii() and
                                   read_imsi(f"imsi-{imsi}", Mode.STRICT).digits == imsi)
    except IdentityError:
        imsi_ok = False
    if not imei_ok:
        assert read[:2] == (DIAMETER_INVALID_AVP_VALUE, AVP_IMEI)
    elif not imsi_ok:
        assert read[:2] == (DIAMETER_INVALID_AVP_VALUE, AVP_USER_NAME)
    else:
        parsed = parse_imei(imei, rules)
        assert (read.imei_key, read.malformed) == (parsed.imei_key, parsed.malformed)
        assert read.imsi == (0 if imsi is None else int(imsi))


def test_each_equipment_status_is_the_n5g_eir_decision(state, rules) -> None:
    asked = [micr(full(STOLEN), home_imsi(OWNER), n=1),
             micr(full(UNREGISTERED), home_imsi(STRANGER), n=2),
             micr(full(SINGLE), home_imsi(OWNER), n=3),  # the owner, known by the IMSI
             micr(f"{SINGLE:014d}", home_imsi(OWNER), software_version="07", n=4),
             micr(full(CUT_FOR_BUYER), home_imsi(BUYER), n=5),
             micr(full(CUT_FOR_BUYER), home_imsi(STRANGER), n=6)]
    answers = [reread(a) for a in answers_of(knowing_owner(state), rules, asked)]
    assert [a.equipment_status for a in answers] == [
        EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED, EquipmentStatus.WHITELISTED,
        EquipmentStatus.WHITELISTED, EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED]
    assert {a.result_code for a in answers} == {DIAMETER_SUCCESS}
    # An IMSI whose number is not known is another SIM, as N5g-eir without a GPSI.
    (alone,) = answers_of(state, rules, [micr(full(SINGLE), home_imsi(OWNER))])
    assert alone.equipment_status == EquipmentStatus.GREYLISTED


def test_an_answer_echoes_the_request_and_names_this_eir(state, rules) -> None:
    request = micr(full(SINGLE), home_imsi(OWNER), n=7)
    (answer,) = [reread(a) for a in answers_of(state, rules, [request])]
    assert not answer.header.is_request and not answer.header.is_error
    assert (answer.header.hop_by_hop_identifier, answer.header.end_to_end_identifier) == (
        0x1007, 0x2007)
    assert answer.header.application_id == S13_APPLICATION_ID
    assert answer.header.command_code == 324
    assert answer.session_id == request.session_id
    assert (answer.origin_host, answer.origin_realm) == (EIR_HOST.encode(), REALM.encode())
    assert answer.auth_session_state == 1


def test_unknown_equipment_as_the_policy_says_is_5422_without_a_result_code(state, rules) -> None:
    rules_of = tuple(replace(r, unknown_equipment=r.when is Condition.UNREGISTERED_HOME)
                     for r in state.policy.rules)
    strict = replace(state, policy=replace(state.policy, rules=rules_of))
    unknown, known = [reread(a) for a in answers_of(strict, rules, [
        micr(full(UNREGISTERED), home_imsi(OWNER), n=1), micr(full(STOLEN), None, n=2)])]
    assert unknown.result_code is None and unknown.equipment_status is None
    assert (unknown.experimental_result.vendor_id,
            unknown.experimental_result.experimental_result_code) == (
        VENDOR_3GPP, DIAMETER_ERROR_EQUIPMENT_UNKNOWN)
    assert known.equipment_status == EquipmentStatus.BLACKLISTED


def test_a_fault_of_the_request_is_answered_with_the_avp_in_failed_avp(state, rules) -> None:
    no_imei = micr(None, home_imsi(OWNER), n=1)
    no_imei.terminal_information = TerminalInformation(software_version="07")
    bad_imsi = micr(full(SINGLE), "not-an-imsi", n=2)
    missing, invalid, fine = [reread(a) for a in answers_of(
        state, rules, [no_imei, bad_imsi, micr(full(SINGLE), home_imsi(OWNER), n=3)])]
    assert missing.result_code == DIAMETER_MISSING_AVP
    (failed,) = missing.find_avps((AVP_FAILED_AVP, 0))
    assert [(a.code, a.vendor_id) for a in failed.value] == [(AVP_IMEI, VENDOR_3GPP)]
    assert invalid.result_code == DIAMETER_INVALID_AVP_VALUE
    (failed,) = invalid.find_avps((AVP_FAILED_AVP, 0))
    assert [(a.code, a.value) for a in failed.value] == [(AVP_USER_NAME, "not-an-imsi")]
    assert fine.equipment_status == EquipmentStatus.GREYLISTED


def test_an_address_or_transport_s13_cannot_have_is_a_configuration_error(state, rules) -> None:
    """Exit 2 naming the key, as for eic.port: a port in use; SCTP, which the node does not
    serve (uvloop makes every socket it accepts a TCP transport)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        for env, complaint in [({"EIR_S13__PORT": str(taken)}, "'s13.port'"),
                               ({"EIR_S13__TRANSPORT": "sctp"},
                                "'s13.transport': sctp is not served: the S13 node "
                                r"\(uvloop\) serves TCP only")]:
            config = load_config(environ={"EIR_S13__BIND": "127.0.0.1",
                                          "EIR_S13__PORT": str(free_port()), **env})
            metrics = S13Metrics(CollectorRegistry())
            answers = S13Answers(StateHolder(state), rules, FixedClock(), metrics, EIR_HOST,
                                 REALM)
            server = S13Server(config.s13, answers, metrics)
            with pytest.raises(ConfigError, match=f"^configuration key {complaint}"):
                start_s13(server, config)
            assert not server.alive()


# --- `eir-enforcer serve` with S13 -----------------------------------------------------------

def strict_policy(path: Path) -> Path:
    """The default policy with unregistered home devices answered as unknown equipment."""
    text = (Path(__file__).parents[1] / "rules" / "default.toml").read_text()
    marker = 'when = "unregistered_home"\n'
    assert marker in text
    path.write_text(text.replace(marker, marker + "unknown_equipment = true\n"))
    return path


@contextmanager
def running_s13(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`eir-enforcer serve` with S13 on, ready: its HTTP port and its Diameter port."""
    port, s13_port = free_port(), free_port()
    environ = {**os.environ, **env, "EIR_EIC__PORT": str(port), "EIR_EIC__FOLLOW_S": "0.2",
               "EIR_EIC__BIND": "127.0.0.1", "EIR_S13__ENABLED": "true",
               "EIR_S13__BIND": "127.0.0.1", "EIR_S13__PORT": str(s13_port),
               "EIR_S13__ORIGIN_HOST": EIR_HOST, "EIR_S13__ORIGIN_REALM": REALM,
               "EIR_S13__PEERS": f"aaa://{MME_HOST},aaa://MME2.test.example",
               "EIR_S13__WATCHDOG_S": str(WATCHDOG_S),
               "EIR_POLICY__FILE": str(strict_policy(tmp_path / "policy.toml"))}
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "enforcer.app.cli", "serve"],
                                   env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _ready(port), timeout_s=30)
            yield port, s13_port
        finally:
            process.terminate()
            process.wait(timeout=15)


@pytest.fixture()
def s13(env, tmp_path):
    with running_s13(env, tmp_path) as ports:
        yield ports


class Wire:
    """A plain TCP connection to the EIR, spoken with python-diameter's codec; every message
    each way kept, for the capture."""

    def __init__(self, port: int, record: list[tuple[bool, bytes]],
                 source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.record = record

    def send(self, data: bytes) -> None:
        self.record.append((True, data))
        self.sock.sendall(data)

    def ask(self, message: Message | bytes) -> Message:
        self.send(message if isinstance(message, bytes) else message.as_bytes())
        return self.read()

    def read(self) -> Message:
        header = self._exactly(HEADER_BYTES)
        length = struct.unpack("!I", header[:4])[0] & 0xFFFFFF
        data = header + self._exactly(length - HEADER_BYTES)
        self.record.append((False, data))
        return Message.from_bytes(data)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the EIR closed the connection")
            data += chunk
        return data

    def closed(self) -> bool:
        """Whether the EIR closed the connection, and nothing waits to be read."""
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)  # a socket with a timeout waits for it, even so
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except ConnectionError:
            return True
        finally:
            self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


def cer(origin_host: str = MME_HOST) -> CapabilitiesExchangeRequest:
    request = CapabilitiesExchangeRequest()
    request.header.hop_by_hop_identifier = 1
    request.header.end_to_end_identifier = 1
    request.origin_host = origin_host.encode()
    request.origin_realm = REALM.encode()
    request.host_ip_address = ["127.0.0.1"]
    request.vendor_id = VENDOR_3GPP
    request.product_name = "test-mme"
    request.supported_vendor_id = [VENDOR_3GPP]
    request.auth_application_id = [S13_APPLICATION_ID]
    request.vendor_specific_application_id = [VendorSpecificApplicationId(
        vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)]
    return request


def disconnect(n: int) -> DisconnectPeerRequest:
    """A peer's Disconnect-Peer-Request (RFC 6733 §5.4.1)."""
    dpr = DisconnectPeerRequest()
    dpr.header.hop_by_hop_identifier = dpr.header.end_to_end_identifier = n
    dpr.origin_host, dpr.origin_realm = MME_HOST.encode(), REALM.encode()
    dpr.disconnect_cause = 0  # REBOOTING
    return dpr


def connected(port: int, record: list[tuple[bool, bytes]], origin_host: str = MME_HOST,
              source: str = "127.0.0.1") -> Wire:
    wire = Wire(port, record, source)
    answer = wire.ask(cer(origin_host))
    assert answer.result_code == DIAMETER_SUCCESS
    return wire


def test_serve_answers_an_mme_over_s13(s13, tmp_path) -> None:
    """python-diameter's own client node as the MME: its capabilities exchange, checks of
    every kind (a 5422 among them, followed by more), and its watchdog."""
    port, s13_port = s13
    mme = Node(MME_HOST, REALM, vendor_ids=[VENDOR_3GPP])
    mme.idle_timeout = 1
    mme.wakeup_interval = 1
    peer = mme.add_peer(f"aaa://{EIR_HOST}:{s13_port};transport=tcp", REALM,
                        ip_addresses=["127.0.0.1"], is_persistent=True, is_default=True)
    app = SimpleThreadingApplication(S13_APPLICATION_ID, is_auth_application=True,
                                     request_handler=lambda _app, _message: None)
    mme.add_application(app, [peer])
    mme.start()
    try:
        app.wait_for_ready(timeout=20)
        statuses = []
        for n, (imei, imsi) in enumerate([(UNREGISTERED, OWNER), (STOLEN, OWNER),
                                          (SINGLE, OWNER), (UNREGISTERED, OWNER),
                                          (CUT_FOR_BUYER, BUYER), (CUT_FOR_BUYER, STRANGER)]):
            request = micr(full(imei), home_imsi(imsi), n=n)
            request.header.hop_by_hop_identifier = 0
            answer = app.send_request(request, timeout=5)
            assert answer.session_id == request.session_id
            statuses.append(answer.equipment_status if answer.result_code
                            else answer.experimental_result.experimental_result_code)
        assert statuses == [DIAMETER_ERROR_EQUIPMENT_UNKNOWN, EquipmentStatus.BLACKLISTED,
                            EquipmentStatus.GREYLISTED, DIAMETER_ERROR_EQUIPMENT_UNKNOWN,
                            EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED]
        # Its Device-Watchdog-Requests, sent after a second of silence, are answered.
        wait_for(lambda: peer.counters.dwa >= 1, timeout_s=15)
        # N5g-eir, from the same process and state, answers the same.
        code, body, _ = get(port, f"{API}?pei=imei-{full(STOLEN)}", None)
        assert (code, body) == (200, {"status": "BLACKLISTED"})
        metrics = _metrics(port)
        assert metrics["eir_s13_peers_connected"] == 1
    finally:
        mme.stop(wait_timeout=5)
    assert metrics['eir_s13_answers_total{equipment_status="none",result_code="5422"}'] == 2
    # python-diameter 0.9.0 raised a TypeError sending each 5422 (counting answers by
    # Result-Code), which ended its application's sending thread.
    assert metrics["eir_s13_unsent_answers_total"] == 0
    assert metrics['eir_s13_answers_total{equipment_status="BLACKLISTED",'
                   'result_code="2001"}'] == 2
    families = {family(name.split("{")[0]) for name in metrics}
    assert {f for f in families if f.startswith("eir_")} == catalogued(serve=True, s13=True)
    wait_for(lambda: _metrics(port)["eir_s13_peers_connected"] == 0, timeout_s=15)


def test_serve_keeps_rfc_6733s_peer_procedures_and_outlives_bad_requests(s13, tmp_path) -> None:
    port, s13_port = s13
    record: list[tuple[bool, bytes]] = []
    wire = Wire(s13_port, record)
    cea = wire.ask(cer())
    assert cea.result_code == DIAMETER_SUCCESS
    assert (cea.origin_host, cea.origin_realm) == (EIR_HOST.encode(), REALM.encode())
    assert [(v.vendor_id, v.auth_application_id) for v in cea.vendor_specific_application_id] \
        == [(VENDOR_3GPP, S13_APPLICATION_ID)]

    answer = wire.ask(micr(full(STOLEN), home_imsi(OWNER), software_version="07", n=1))
    assert answer.equipment_status == EquipmentStatus.BLACKLISTED
    # An application this EIR does not serve.
    s6a = micr(full(STOLEN), home_imsi(OWNER), n=2)
    s6a.header.application_id = S6A_APPLICATION_ID
    refused = wire.ask(s6a)
    assert refused.result_code == DIAMETER_APPLICATION_UNSUPPORTED and refused.header.is_error
    assert refused.header.hop_by_hop_identifier == 0x1002
    # Terminal-Information missing: 5005 naming it; no IMEI in it: 5005 naming the IMEI.
    missing = wire.ask(micr(None, home_imsi(OWNER), n=3))
    assert missing.result_code == DIAMETER_MISSING_AVP
    assert [a.code for a in missing.find_avps((AVP_FAILED_AVP, 0))[0].value] == [1401]
    no_imei = micr(None, home_imsi(OWNER), n=4)
    no_imei.terminal_information = TerminalInformation(software_version="07")
    missing = wire.ask(no_imei)
    assert missing.result_code == DIAMETER_MISSING_AVP
    assert [a.code for a in missing.find_avps((AVP_FAILED_AVP, 0))[0].value] == [AVP_IMEI]
    # RFC 6733 §7.1.5: an AVP this EIR does not know, with the M bit: 5001 with it in
    # Failed-AVP; Terminal-Information twice (once in TS 29.272 §7.2.19): 5009 with the second.
    unknown = micr(full(STOLEN), home_imsi(OWNER), n=11)
    unknown.append_avp(Avp(UNKNOWN_AVP_CODE, payload=b"\x00\x00\x00\x01", flags=0x40))
    unsupported = wire.ask(unknown)
    assert (unsupported.result_code, unsupported.header.is_error) == (
        DIAMETER_AVP_UNSUPPORTED, False)
    assert [(a.code, a.payload) for a in unsupported.find_avps((AVP_FAILED_AVP, 0))[0].value] \
        == [(UNKNOWN_AVP_CODE, b"\x00\x00\x00\x01")]
    twice = micr(full(STOLEN), home_imsi(OWNER), n=12)
    twice.append_avp(Avp.new(AVP_TERMINAL_INFORMATION, VENDOR_3GPP, value=[
        Avp.new(AVP_IMEI, VENDOR_3GPP, value=full(SINGLE))]))
    too_many = wire.ask(twice)
    assert (too_many.result_code, too_many.equipment_status) == (
        DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, None)
    (failed,) = too_many.find_avps((AVP_FAILED_AVP, 0))[0].value
    assert (failed.code, [a.value for a in failed.value]) == (AVP_TERMINAL_INFORMATION,
                                                              [full(SINGLE)])
    # A 5422, then more checks on the same connection.
    assert wire.ask(micr(full(UNREGISTERED), home_imsi(OWNER), n=5)) \
        .experimental_result.experimental_result_code == DIAMETER_ERROR_EQUIPMENT_UNKNOWN
    assert wire.ask(micr(full(SINGLE), home_imsi(OWNER), n=6)).equipment_status \
        == EquipmentStatus.GREYLISTED
    dwr = DeviceWatchdogRequest()
    dwr.header.hop_by_hop_identifier = dwr.header.end_to_end_identifier = 7
    dwr.origin_host, dwr.origin_realm = MME_HOST.encode(), REALM.encode()
    dwa = wire.ask(dwr)
    assert (dwa.header.command_code, dwa.result_code) == (280, DIAMETER_SUCCESS)
    dpa = wire.ask(disconnect(8))
    assert (dpa.header.command_code, dpa.result_code) == (282, DIAMETER_SUCCESS)
    wire.close()

    # Bytes that are no Diameter message; then a peer this EIR does not know: refused.
    garbage = Wire(s13_port, [])
    garbage.send(b"\x07" * HEADER_BYTES + b"GET / HTTP/1.1\r\n\r\n")
    garbage.close()
    stranger = Wire(s13_port, [])
    assert stranger.ask(cer("hss.elsewhere.example")).result_code == DIAMETER_UNKNOWN_PEER
    stranger.close()
    # The server goes on: a good request on a new connection, from the other peer configured.
    again = connected(s13_port, [], origin_host="mme2.test.example")
    # A message whose first AVP's length runs past its end: 5014 naming the AVP, its data
    # zeros (RFC 6733 §7.1.5), in a ME-Identity-Check-Answer as any other (TS 29.272
    # §7.2.20), and the connection goes on.
    broken = bytearray(micr(full(STOLEN), None, n=9, origin_host="mme2.test.example").as_bytes())
    broken[HEADER_BYTES + 5:HEADER_BYTES + 8] = b"\xff\xff\xff"
    invalid = again.ask(bytes(broken))
    assert (invalid.header.hop_by_hop_identifier, invalid.result_code) == (
        0x1009, DIAMETER_INVALID_AVP_LENGTH)
    assert not invalid.header.is_error  # a permanent failure, no protocol error
    assert [a.code for a in invalid.find_avps((AVP_FAILED_AVP, 0))[0].value] == [263]
    assert invalid.auth_session_state == 1  # NO_STATE_MAINTAINED
    application = invalid.vendor_specific_application_id
    assert (application.vendor_id, application.auth_application_id) == (
        VENDOR_3GPP, S13_APPLICATION_ID)
    answer = again.ask(micr(full(STOLEN), None, n=10, origin_host="mme2.test.example"))
    assert answer.header.hop_by_hop_identifier == 0x100A
    assert answer.equipment_status == EquipmentStatus.BLACKLISTED
    again.close()
    assert _ready(port)

    dissected = dissect(record, tmp_path)
    assert "_ws.malformed" not in dissected and "Malformed" not in dissected
    for expected in ("Capabilities-Exchange", "ME-Identity-Check", "Equipment-Status",
                     "Terminal-Information", "User-Name", "Experimental-Result-Code: "
                     "DIAMETER_ERROR_EQUIPMENT_UNKNOWN (5422)", "Failed-AVP",
                     "Vendor-Specific-Application-Id", "Device-Watchdog", "Disconnect-Peer",
                     "DIAMETER_AVP_UNSUPPORTED (5001)",
                     "DIAMETER_AVP_OCCURS_TOO_MANY_TIMES (5009)"):
        assert expected in dissected, expected


def test_serve_answers_other_commands_and_takes_nothing_before_a_cer(s13) -> None:
    """RFC 6733 §5.6 and §7.1.3: another S13 command is 3001 with the E bit and the Session-Id
    echoed; a MICR before any CER closes the connection; a peer that connects again replaces
    its first connection, and a 5005 names each mandatory AVP its check lacks."""
    port, s13_port = s13
    early = Wire(s13_port, [])
    early.send(micr(full(STOLEN), None, n=1).as_bytes())
    with pytest.raises((ConnectionError, OSError)):
        early.read()
    early.close()

    first = connected(s13_port, [])
    other = micr(full(STOLEN), None, n=2)
    other.header.command_code = 325  # no S13 command
    refused = first.ask(other)
    assert (refused.header.command_code, refused.result_code, refused.header.is_error) == (
        325, DIAMETER_COMMAND_UNSUPPORTED, True)
    assert refused.find_avps((263, 0))[0].value == other.session_id
    second = connected(s13_port, [])
    with pytest.raises((ConnectionError, OSError)):
        first.read()
    first.close()
    assert _metrics(port)["eir_s13_peers_connected"] == 1
    # A CER again on the open connection, naming the other peer: still one peer connected.
    assert second.ask(cer("mme2.test.example")).result_code == DIAMETER_SUCCESS
    assert _metrics(port)["eir_s13_peers_connected"] == 1
    no_session = micr(full(STOLEN), None, n=3)
    no_session.session_id = None
    no_session.destination_realm = None
    missing = second.ask(no_session)
    assert missing.result_code == DIAMETER_MISSING_AVP
    assert [a.code for a in missing.find_avps((AVP_FAILED_AVP, 0))[0].value] == [263, 283]
    assert second.ask(micr(full(STOLEN), None, n=4)).equipment_status \
        == EquipmentStatus.BLACKLISTED
    second.close()


def test_a_peer_is_replaced_only_from_the_address_it_is_connected_from(s13) -> None:
    """A CER naming a peer connected from another address is refused 4003
    DIAMETER_ELECTION_LOST with the reason (RFC 6733 §5.6.4: the connection open is kept)
    and its connection closed, and the peer is answered as before; once the peer's
    connection is gone, the other address may connect. (From the same address a CER
    replaces: test_serve_answers_other_commands_and_takes_nothing_before_a_cer.)"""
    port, s13_port = s13
    first = connected(s13_port, [])
    other = Wire(s13_port, [], source=OTHER_ADDRESS)
    cea = other.ask(cer())
    assert (cea.result_code, cea.header.is_error, cea.error_message) == (
        DIAMETER_ELECTION_LOST, False, "this peer is connected from another address")
    assert cea.vendor_specific_application_id == []  # nothing granted
    with pytest.raises((ConnectionError, OSError)):
        other.read()
    other.close()
    assert first.ask(micr(full(STOLEN), None, n=1)).equipment_status \
        == EquipmentStatus.BLACKLISTED
    assert _metrics(port)["eir_s13_peers_connected"] == 1
    first.close()
    wait_for(lambda: _metrics(port)["eir_s13_peers_connected"] == 0, timeout_s=10)
    moved = connected(s13_port, [], source=OTHER_ADDRESS)
    assert moved.ask(micr(full(STOLEN), None, n=2)).equipment_status \
        == EquipmentStatus.BLACKLISTED
    moved.close()


def test_the_watchdog_closes_a_silent_peer_after_suspect_and_keeps_a_busy_one(s13) -> None:
    """RFC 3539 §3.4.1 with Tw = s13.watchdog_s (6 s, the least it may be), two peers side by
    side: Tw without a message sends each a DWR; the silent one, Tw more without one, is
    suspect, and Tw more again closed and counted. Every message received sets the timer
    again: the busy one, which leaves its DWR unanswered for three Tw while it sends checks,
    is kept, and once it answers the DWR, a new one comes after Tw of silence."""
    port, s13_port = s13
    silent = connected(s13_port, [])
    busy = connected(s13_port, [], origin_host="mme2.test.example")
    assert _metrics(port)["eir_s13_peers_connected"] == 2
    # Quiet for Tw: the EIR asks each (RFC 6733 §5.5.3).
    dwr = silent.read()
    asked = time.monotonic()
    assert (dwr.header.command_code, dwr.header.is_request) == (280, True)
    assert dwr.origin_host == EIR_HOST.encode()
    busy_dwr = busy.read()
    assert (busy_dwr.header.command_code, busy_dwr.header.is_request) == (280, True)
    closed_after = None
    n = 0
    while time.monotonic() - asked < 3 * WATCHDOG_S:
        n += 1
        answer = busy.ask(micr(full(STOLEN), None, n=n, origin_host="mme2.test.example"))
        assert (answer.header.command_code, answer.header.hop_by_hop_identifier) == (
            324, 0x1000 + n)
        assert answer.equipment_status == EquipmentStatus.BLACKLISTED
        if closed_after is None and silent.closed():
            closed_after = time.monotonic() - asked
        time.sleep(0.1 * WATCHDOG_S)
    # Suspect first, then closed.
    assert closed_after is not None and closed_after >= 1.5 * WATCHDOG_S
    silent.close()
    assert _metrics(port)["eir_s13_watchdog_failures_total"] == 1
    dwa = DeviceWatchdogAnswer()
    dwa.header.hop_by_hop_identifier = busy_dwr.header.hop_by_hop_identifier
    dwa.header.end_to_end_identifier = busy_dwr.header.end_to_end_identifier
    dwa.origin_host, dwa.origin_realm = b"mme2.test.example", REALM.encode()
    dwa.result_code = DIAMETER_SUCCESS
    busy.send(dwa.as_bytes())
    again = busy.read()
    assert (again.header.command_code, again.header.is_request) == (280, True)
    assert again.header.hop_by_hop_identifier != busy_dwr.header.hop_by_hop_identifier
    busy.close()
    assert _metrics(port)["eir_s13_watchdog_failures_total"] == 1  # the silent one only
    wait_for(lambda: _metrics(port)["eir_s13_peers_connected"] == 0, timeout_s=10)


def test_a_connection_without_its_cer_is_closed_in_time_whatever_it_sends(s13) -> None:
    """The CER's deadline counts from the connection (s13.watchdog_s): a host that sends a
    CER a byte at a time, never whole, is closed within it, bytes or not."""
    port, s13_port = s13
    data = cer().as_bytes()
    closed = False
    with socket.create_connection(("127.0.0.1", s13_port), timeout=10) as sock:
        began = time.monotonic()
        sock.settimeout(0.1 * WATCHDOG_S)
        for byte in data[:-1]:  # some 15 watchdog_s of bytes, never the whole CER
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        took = time.monotonic() - began
    assert closed
    assert 0.9 * WATCHDOG_S <= took < 2.5 * WATCHDOG_S
    assert _ready(port)


def test_a_connection_past_s13_max_connections_is_closed_as_it_opens(env, tmp_path) -> None:
    """s13.max_connections (2 here) open, past their CER or not: one more is closed at once,
    counted, and logged in one line; the connections open are answered all the while, and
    once one of them closes, a connection is taken again."""
    with running_s13({**env, "EIR_S13__MAX_CONNECTIONS": "2"}, tmp_path) as (port, s13_port):
        peer = connected(s13_port, [])
        waiting = Wire(s13_port, [])  # no CER yet: it counts all the same
        extra = Wire(s13_port, [])
        with pytest.raises(ConnectionError):  # closed, reset: not a read timing out
            extra.read()
        extra.close()
        assert peer.ask(micr(full(STOLEN), None, n=1)).equipment_status \
            == EquipmentStatus.BLACKLISTED
        assert waiting.ask(cer("mme2.test.example")).result_code == DIAMETER_SUCCESS
        metrics = _metrics(port)
        assert (metrics["eir_s13_refused_connections_total"],
                metrics["eir_s13_peers_connected"]) == (1, 2)
        waiting.close()
        wait_for(lambda: _metrics(port)["eir_s13_peers_connected"] == 1, timeout_s=10)
        again = connected(s13_port, [], origin_host="mme2.test.example")
        assert again.ask(micr(full(STOLEN), None, n=2, origin_host="mme2.test.example")) \
            .equipment_status == EquipmentStatus.BLACKLISTED
        again.close()
        peer.close()
        assert _metrics(port)["eir_s13_refused_connections_total"] == 1
    events = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    refused = [e for e in events if e["event"].startswith("Diameter connection refused")]
    assert [(e["address"], e["max_connections"]) for e in refused] == [("127.0.0.1", 2)]


def test_connections_reset_as_they_open_leave_nothing_behind(env, tmp_path) -> None:
    """Hosts that connect and reset at once (SO_LINGER 0), before the node takes their
    socket: nothing logged as an error, and the node answers as before."""
    with running_s13(env, tmp_path) as (port, s13_port):
        for _ in range(RESETS):
            with socket.create_connection(("127.0.0.1", s13_port)) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer = connected(s13_port, [])
        assert peer.ask(micr(full(STOLEN), None, n=1)).equipment_status \
            == EquipmentStatus.BLACKLISTED
        peer.close()
    events = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    assert [e for e in events if e["level"] in ("error", "critical")] == []


def test_a_peer_that_disconnects_after_its_checks_is_answered_first(s13) -> None:
    """Checks and a DPR in one segment: the checks' answers come before the DPA, and then
    the connection closes (RFC 6733 §5.4); nothing counted unsent."""
    port, s13_port = s13
    leaving = connected(s13_port, [])
    leaving.send(micr(full(STOLEN), home_imsi(OWNER), n=1).as_bytes()
                 + micr(full(SINGLE), home_imsi(OWNER), n=2).as_bytes()
                 + disconnect(3).as_bytes())
    first, second, dpa = leaving.read(), leaving.read(), leaving.read()
    assert [(m.header.command_code, m.header.hop_by_hop_identifier) for m in (first, second)] \
        == [(324, 0x1001), (324, 0x1002)]
    assert [first.equipment_status, second.equipment_status] == [
        EquipmentStatus.BLACKLISTED, EquipmentStatus.GREYLISTED]
    assert (dpa.header.command_code, dpa.header.hop_by_hop_identifier, dpa.result_code) == (
        282, 3, DIAMETER_SUCCESS)
    with pytest.raises((ConnectionError, OSError)):
        leaving.read()
    leaving.close()
    assert _metrics(port)["eir_s13_unsent_answers_total"] == 0
    wait_for(lambda: _metrics(port)["eir_s13_peers_connected"] == 0, timeout_s=10)


def dissect(record: list[tuple[bool, bytes]], tmp_path: Path) -> str:
    """Wireshark's reading of the messages (tshark -V), from a capture text2pcap makes of
    them: the requests from the MME's port to 3868, the answers back."""
    for tool in ("tshark", "text2pcap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} (Debian's tshark package) is not installed: .ci/run installs it")
    hexdump = tmp_path / "exchange.txt"
    with hexdump.open("w") as out:
        for inbound, data in record:
            out.write("I\n" if inbound else "O\n")
            for offset in range(0, len(data), 16):
                chunk = data[offset:offset + 16]
                out.write(f"{offset:06x} {' '.join(f'{b:02x}' for b in chunk)}\n")
    capture = tmp_path / "exchange.pcap"
    subprocess.run(["text2pcap", "-q", "-D", "-4", "10.0.0.1,10.0.0.2", "-T",
                    f"40000,{DIAMETER_PORT}", str(hexdump), str(capture)], check=True)
    shown = subprocess.run(["tshark", "-r", str(capture), "-V"], check=True,
                           capture_output=True, text=True)
    return shown.stdout


def test_an_attach_teaches_serve_the_owners_number(s13, env, worker, dsn) -> None:
    """Issue 22 part 2: S13 carries no MSISDN, and this N5g-eir check no GPSI. The owner's SIM
    attaching teaches the workers its number; serve follows it, and its owner is WHITELISTED
    on both; an inbound roamer's attach teaches nothing."""
    port, s13_port = s13
    owner_check = f"{API}?pei=imei-{full(SINGLE)}&supi=imsi-{home_imsi(OWNER)}"
    # serve asks a connection silent for s13.watchdog_s for a DWA, which a Wire leaves
    # unanswered: a connection for each moment.
    before = connected(s13_port, [])
    assert before.ask(micr(full(SINGLE), home_imsi(OWNER), n=1)).equipment_status \
        == EquipmentStatus.GREYLISTED
    before.close()
    assert get(port, owner_check, None)[1] == {"status": "GREYLISTED"}

    worker()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], [
        attach(full(SINGLE), OWNER, now_ms()),
        attach(full(UNREGISTERED), STRANGER, now_ms(), imsi="262011234567890")])
    wait_for(lambda: get(port, owner_check, None)[1] == {"status": "WHITELISTED"}, timeout_s=30)
    after = connected(s13_port, [], origin_host="mme2.test.example")
    statuses = [after.ask(micr(full(SINGLE), home_imsi(imsi), n=n,
                               origin_host="mme2.test.example")).equipment_status
                for n, imsi in ((2, OWNER), (3, STRANGER))]
    after.close()
    # Another SIM on the owner's device is still another SIM's.
    assert statuses == [EquipmentStatus.WHITELISTED, EquipmentStatus.GREYLISTED]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT imsi, msisdn FROM subscribers").fetchall() == [
            (int(home_imsi(OWNER)), OWNER)]
    assert _metrics(port)["eir_eic_subscriber_numbers"] == 1
