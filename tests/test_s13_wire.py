"""ME-Identity-Check written and read by hand (enforcer/frontends/s13/wire.py) against
python-diameter as the reference: a request it builds reads to its fields; an answer written
by hand is, byte for byte, the one python-diameter writes for the same fields (as
S13Answers wrote them with it before), a 5005's and a 5014's Failed-AVP among them; any AVPs
behind a header that is right reach the AVP reader and raise nothing but 5014, and any bytes
whatever nothing but WireError."""

from __future__ import annotations

import dataclasses
import struct

from diameter.message import Avp, Message
from diameter.message.avp import AvpInteger32, AvpUnsigned32
from diameter.message.avp.grouped import (ExperimentalResult, FailedAvp, ProxyInfo,
                                          TerminalInformation, VendorSpecificApplicationId)
from diameter.message.commands import MeIdentityCheckAnswer, MeIdentityCheckRequest
from diameter.message.constants import AVP_RESULT_CODE
from hypothesis import example, given
from hypothesis import strategies as st

from enforcer.frontends.s13.check import (AVP_IMEI, AVP_TERMINAL_INFORMATION, AVP_USER_NAME,
                                          DIAMETER_ERROR_EQUIPMENT_UNKNOWN,
                                          DIAMETER_INVALID_AVP_VALUE, DIAMETER_MISSING_AVP,
                                          DIAMETER_SUCCESS, DIAMETER_UNABLE_TO_COMPLY,
                                          ME_IDENTITY_CHECK, S13_APPLICATION_ID, VENDOR_3GPP)
from enforcer.frontends.s13.wire import (AVP_AUTH_SESSION_STATE, AVP_FAILED_AVP,
                                         AVP_FLAG_MANDATORY, AVP_FLAG_VENDOR, AVP_HEADER_BYTES,
                                         AVP_PROXY_INFO, AVP_SESSION_ID,
                                         DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
                                         DIAMETER_AVP_UNSUPPORTED, DIAMETER_INVALID_AVP_LENGTH,
                                         FLAG_ERROR, FLAG_PROXYABLE, FLAG_REQUEST, HEADER_BYTES,
                                         ONCE, REPEATED, TERMINAL_ONCE, MicaWriter, WireError,
                                         header_bytes, read_header, read_micr, refusal, salvage)

NO_STATE_MAINTAINED = 1
EIR_HOST, REALM = b"eir.test.example", b"test.example"
DIAMETER_APPLICATION_UNSUPPORTED = 3007


class ReferenceExperimental(MeIdentityCheckAnswer):
    """python-diameter's answer without a Result-Code, for an Experimental-Result."""

    avp_def = tuple(d for d in MeIdentityCheckAnswer.avp_def if d.avp_code != AVP_RESULT_CODE)


identities = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,12}){0,3}", fullmatch=True)
texts = st.text(max_size=24)
proxies = st.lists(st.builds(ProxyInfo, proxy_host=identities.map(str.encode),
                             proxy_state=st.binary(max_size=12)), max_size=2)


@st.composite
def requests(draw, imei: bool = False) -> MeIdentityCheckRequest:
    """Any ME-Identity-Check-Request python-diameter writes, some of its AVPs left out (with
    `imei`, never its Terminal-Information's IMEI: drawn so, not filtered, which a loaded
    machine took too long over)."""
    request = MeIdentityCheckRequest()
    request.header.application_id = S13_APPLICATION_ID
    request.header.hop_by_hop_identifier = draw(st.integers(0, 2**32 - 1))
    request.header.end_to_end_identifier = draw(st.integers(0, 2**32 - 1))
    request.header.is_proxyable = draw(st.booleans())
    if draw(st.booleans()):
        request.session_id = draw(texts)
    if draw(st.booleans()):
        request.vendor_specific_application_id = VendorSpecificApplicationId(
            vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)
    if draw(st.booleans()):
        request.auth_session_state = NO_STATE_MAINTAINED
    request.origin_host = draw(st.one_of(st.none(), identities.map(str.encode)))
    request.origin_realm = draw(st.one_of(st.none(), identities.map(str.encode)))
    request.destination_realm = draw(st.one_of(st.none(), identities.map(str.encode)))
    if imei or draw(st.booleans()):
        request.terminal_information = TerminalInformation(
            imei=draw(st.one_of(*([] if imei else [st.none()]),
                                st.from_regex(r"[0-9]{14,15}", fullmatch=True), texts)),
            software_version=draw(st.one_of(st.none(), st.from_regex(r"[0-9]{2}",
                                                                      fullmatch=True))))
    request.user_name = draw(st.one_of(st.none(), st.from_regex(r"[0-9]{6,15}", fullmatch=True),
                                       texts))
    request.proxy_info = draw(proxies)
    return request


def reference_answer(request: MeIdentityCheckRequest, result_code: int,
                     equipment_status: int | None, experimental: bool,
                     failed: list[Avp] | None = None) -> bytes:
    """The answer as S13Answers wrote it with python-diameter's codec."""
    kind = ReferenceExperimental if experimental else MeIdentityCheckAnswer
    answer = kind(request.to_answer().header)
    answer.header.is_proxyable = request.header.is_proxyable
    answer.session_id = request.session_id
    answer.vendor_specific_application_id = VendorSpecificApplicationId(
        vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)
    answer.auth_session_state = NO_STATE_MAINTAINED
    answer.origin_host = EIR_HOST
    answer.origin_realm = REALM
    answer.proxy_info = request.proxy_info
    if experimental:
        answer.experimental_result = ExperimentalResult(vendor_id=VENDOR_3GPP,
                                                        experimental_result_code=result_code)
    else:
        answer.result_code = result_code
        answer.equipment_status = equipment_status
    if failed:
        answer.failed_avp = FailedAvp(additional_avps=failed)
    return answer.as_bytes()


@given(requests())
def test_a_request_python_diameter_writes_reads_to_its_fields(request) -> None:
    data = request.as_bytes()
    read = read_micr(data)
    reference = Message.from_bytes(data)
    assert (read.header.length, read.header.command_code, read.header.application_id) == (
        len(data), 324, S13_APPLICATION_ID)
    assert read.header.identifiers == data[12:HEADER_BYTES]
    assert read.session_id == (None if reference.session_id is None
                               else reference.session_id.encode())
    terminal = reference.terminal_information
    assert read.imei == (None if terminal is None else terminal.imei)
    assert read.user_name == reference.user_name
    # The missing AVPs are the ones python-diameter finds missing, in its order.
    required = [d for d in MeIdentityCheckRequest.avp_def if d.is_required]
    lacking = [(d.avp_code, d.vendor_id) for d in required
               if getattr(reference, d.attr_name) is None]
    if lacking:
        assert read.fault.result_code == DIAMETER_MISSING_AVP
        assert [(a.code, a.vendor_id) for a in failed_avps(read.fault.failed_avp)] == lacking
    else:
        assert read.fault is None
    assert len(read.proxy_infos) == len(reference.proxy_info)


def failed_avps(failed: bytes) -> list[Avp]:
    """The AVPs a Failed-AVP holds, as python-diameter reads them."""
    return Avp.from_bytes(struct.pack("!II", AVP_FAILED_AVP, AVP_FLAG_MANDATORY << 24
                                      | AVP_HEADER_BYTES + len(failed)) + failed).value


ANSWERS = st.sampled_from([(DIAMETER_SUCCESS, 0, False), (DIAMETER_SUCCESS, 1, False),
                           (DIAMETER_SUCCESS, 2, False),
                           (DIAMETER_ERROR_EQUIPMENT_UNKNOWN, None, True),
                           (DIAMETER_UNABLE_TO_COMPLY, None, False)])


@given(requests(), ANSWERS)
def test_an_answer_written_by_hand_is_python_diameters_byte_for_byte(request, kind) -> None:
    result_code, status, experimental = kind
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    ours = writer.answer(read_micr(request.as_bytes()),
                         writer.body(result_code, status, experimental))
    assert ours == reference_answer(request, result_code, status, experimental)
    answer = Message.from_bytes(ours)
    assert isinstance(answer, MeIdentityCheckAnswer)
    assert answer.header.hop_by_hop_identifier == request.header.hop_by_hop_identifier
    assert answer.equipment_status == status


@given(requests(imei=True))
def test_a_failed_avp_holds_the_avp_as_received(request) -> None:
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    read = read_micr(request.as_bytes())
    ours = writer.answer(read, writer.body(DIAMETER_INVALID_AVP_VALUE, None, False),
                         read.imei_avp)
    imei = Avp.new(AVP_IMEI, VENDOR_3GPP, value=request.terminal_information.imei)
    assert ours == reference_answer(request, DIAMETER_INVALID_AVP_VALUE, None, False, [imei])


def least(code: int, vendor: int) -> Avp:
    """An AVP as an example of it (RFC 6733 §7.1.5): zeros of its type's least length, by
    python-diameter's dictionary (an Enumerated's 4 bytes; none for text and grouped)."""
    example = Avp.new(code, vendor, is_mandatory=True)
    if isinstance(example, (AvpInteger32, AvpUnsigned32)):
        example.value = 0
    return example


def test_an_example_has_its_types_least_data() -> None:
    assert least(AVP_AUTH_SESSION_STATE, 0).as_bytes() == bytes.fromhex("00000115 4000000c") \
        + bytes(4)
    assert read_micr(MeIdentityCheckRequest().as_bytes()).fault.failed_avp.startswith(
        Avp.new(AVP_SESSION_ID, is_mandatory=True).as_bytes()
        + least(AVP_AUTH_SESSION_STATE, 0).as_bytes())


@given(requests())
def test_a_request_lacking_avps_names_each_in_failed_avp(request) -> None:
    """The 5005 names in Failed-AVP each mandatory AVP python-diameter finds the request
    lacking, in its order, as an example of it (RFC 6733 §7.1.5, §7.5: zeros of its type's
    least length): byte for byte the answer python-diameter writes with those AVPs."""
    data = request.as_bytes()
    reference = Message.from_bytes(data)
    lacking = [least(d.avp_code, d.vendor_id) for d in MeIdentityCheckRequest.avp_def
               if d.is_required and getattr(reference, d.attr_name) is None]
    fault = read_micr(data).fault
    if not lacking:
        assert fault is None
        return
    assert fault.result_code == DIAMETER_MISSING_AVP
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    ours = writer.answer(read_micr(data), writer.body(DIAMETER_MISSING_AVP, None, False),
                         fault.failed_avp)
    assert ours == reference_answer(request, DIAMETER_MISSING_AVP, None, False, lacking)


@given(requests(), st.sampled_from([AVP_USER_NAME, AVP_SESSION_ID, 9999]),
       st.sampled_from([AVP_HEADER_BYTES - 4, 0xFFFFFF]))
def test_an_avp_whose_length_cannot_be_is_answered_5014_as_a_mica(request, code,
                                                                  length) -> None:
    """RFC 6733 §7.1.5 and TS 29.272 §7.2.20: a request whose last AVP's length is shorter
    than its header or runs past the message is answered 5014 in a ME-Identity-Check-Answer
    (Auth-Session-State among its AVPs) with the Session-Id and Proxy-Info read before it
    and the AVP at fault in Failed-AVP: byte for byte the answer python-diameter writes."""
    raw = bytearray(request.as_bytes() + struct.pack("!II", code,
                                                     (AVP_FLAG_MANDATORY << 24) | length))
    raw[1:4] = len(raw).to_bytes(3, "big")
    data = bytes(raw)
    try:
        read_micr(data)
    except WireError as error:
        fault = error
    else:
        raise AssertionError("an AVP whose length cannot be was read")
    assert fault.result_code == DIAMETER_INVALID_AVP_LENGTH
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    ours = writer.answer(salvage(data, read_header(data)),
                         writer.body(DIAMETER_INVALID_AVP_LENGTH, None, False), fault.failed_avp)
    assert ours == reference_answer(request, DIAMETER_INVALID_AVP_LENGTH, None, False,
                                    [Avp.new(code, is_mandatory=True) if code != 9999
                                     else Avp(9999, flags=AVP_FLAG_MANDATORY)])
    assert Message.from_bytes(ours).auth_session_state == NO_STATE_MAINTAINED


@given(requests(), st.integers(0, 2**32 - 1))
def test_a_refusal_is_a_protocol_error_with_the_session_echoed(request, application) -> None:
    request.header.application_id = application
    data = request.as_bytes()
    read = read_micr(data)
    answer = Message.from_bytes(refusal(data, read.header, DIAMETER_APPLICATION_UNSUPPORTED,
                                        EIR_HOST, REALM))
    assert answer.header.is_error and not answer.header.is_request
    assert answer.header.application_id == application
    assert [a.value for a in answer.find_avps((268, 0))] == [DIAMETER_APPLICATION_UNSUPPORTED]
    assert [a.value for a in answer.find_avps((263, 0))] == (
        [] if request.session_id is None else [request.session_id])
    assert len(answer.find_avps((284, 0))) == len(request.proxy_info)


def framed(body: bytes) -> bytes:
    """`body`, padded, as the AVPs of a ME-Identity-Check-Request whose header is right."""
    body += bytes(-len(body) % 4)
    return header_bytes(HEADER_BYTES + len(body), FLAG_REQUEST | FLAG_PROXYABLE,
                        ME_IDENTITY_CHECK, S13_APPLICATION_ID, bytes(8)) + body


AVP_CODES = st.one_of(st.sampled_from([AVP_SESSION_ID, AVP_AUTH_SESSION_STATE, AVP_USER_NAME,
                                       AVP_TERMINAL_INFORMATION, AVP_IMEI, AVP_PROXY_INFO]),
                      st.integers(0, 2**32 - 1))


@st.composite
def raw_avps(draw, inside: bool = False) -> bytes:
    """AVPs of any code, flags, vendor or none, data (a Terminal-Information's AVPs among
    them) and length, right or a little or a lot off."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        code = draw(AVP_CODES)
        vendor = draw(st.one_of(st.none(), st.just(VENDOR_3GPP), st.integers(0, 2**32 - 1)))
        flags = draw(st.integers(0, 0x7F)) | (AVP_FLAG_VENDOR if vendor is not None else 0)
        if code == AVP_TERMINAL_INFORMATION and not inside and draw(st.booleans()):
            data = draw(raw_avps(inside=True))
        else:
            data = draw(st.binary(max_size=20))
        head = AVP_HEADER_BYTES + (0 if vendor is None else 4)
        length = head + len(data) + draw(st.sampled_from([0, 0, 0, -1, 1, -4, 4, -head, 2**20]))
        parts.append(struct.pack("!II", code, flags << 24 | max(0, min(length, 0xFFFFFF)))
                     + (b"" if vendor is None else struct.pack("!I", vendor))
                     + data + bytes(-len(data) % 4))
    return b"".join(parts)


def mutated(request: MeIdentityCheckRequest, edits: list[tuple[int, bytes]]) -> bytes:
    """A request's AVPs with bytes overwritten (or added at the end) at a few places."""
    body = bytearray(request.as_bytes()[HEADER_BYTES:])
    for at, chunk in edits:
        at %= len(body) + 1
        body[at:at + len(chunk)] = chunk
    return framed(bytes(body))


EDITS = st.lists(st.tuples(st.integers(0, 2**16), st.binary(min_size=1, max_size=4)),
                 min_size=1, max_size=4)


@given(st.one_of(raw_avps().map(framed), st.binary(max_size=300).map(framed),
                 st.builds(mutated, requests(), EDITS)))
@example(framed(b"\x00\x00\x01\x07\x40\xff\xff\xff"))
@example(framed(b"\x00\x00\x05\x79\xc0\x00\x00\x0c\x00\x00\x28\xaf"))
def test_any_avps_raise_nothing_but_5014_and_are_answered(data) -> None:
    """Behind a header that is right, any AVPs whatever reach the AVP reader: read, or 5014
    with the AVP at fault, whose answer is a message our reader reads."""
    try:
        read = read_micr(data)
    except WireError as error:
        assert error.result_code == DIAMETER_INVALID_AVP_LENGTH  # never the header's fault
        assert len(error.failed_avp) >= AVP_HEADER_BYTES and len(error.failed_avp) % 4 == 0
        request = salvage(data, read_header(data))
        writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
        answer = read_micr(writer.answer(request, writer.body(DIAMETER_INVALID_AVP_LENGTH,
                                                              None, False), error.failed_avp))
        assert (answer.session_id, answer.proxy_infos) == (request.session_id,
                                                           request.proxy_infos)
    else:
        assert read.header.length == len(data)


@given(st.binary(max_size=300))
@example(b"\x01\x00\x00\x1c" + bytes(16) + b"\x00\x00\x01\x07\x40\xff\xff\xff")
@example(b"\x01\x00\x00\x20" + bytes(16) + b"\x00\x00\x05\x79\xc0\x00\x00\x0c\x00\x00\x28\xaf")
def test_any_bytes_raise_nothing_but_wire_error(data) -> None:
    try:
        read_micr(data)
    except WireError as error:
        assert error.result_code in (None, DIAMETER_INVALID_AVP_LENGTH)

@given(requests().filter(lambda r: len(r.as_bytes()) > HEADER_BYTES), st.data())
def test_a_request_cut_or_overwritten_anywhere_raises_nothing_but_wire_error(request,
                                                                            data) -> None:
    raw = bytearray(request.as_bytes())
    at = data.draw(st.integers(HEADER_BYTES, len(raw) - 1))
    width = len(raw[at:at + 4])
    raw[at:at + width] = data.draw(st.binary(min_size=width, max_size=width))
    try:
        read = read_micr(bytes(raw))
    except WireError as error:
        assert error.result_code == DIAMETER_INVALID_AVP_LENGTH
        assert len(error.failed_avp) >= 8  # the AVP at fault, for Failed-AVP
    else:
        assert read.header.length == len(raw)


def test_terminal_information_is_named_when_missing() -> None:
    request = MeIdentityCheckRequest()
    request.session_id = "mme;1"
    fault = read_micr(request.as_bytes()).fault
    assert fault.result_code == DIAMETER_MISSING_AVP
    assert AVP_TERMINAL_INFORMATION in [a.code for a in failed_avps(fault.failed_avp)]


def _defined(avp_def, annotations) -> tuple[set, set]:
    """python-diameter's definition of a message or grouped AVP: the AVPs (code, vendor) it
    holds once at most, and those it may repeat (a list)."""
    once = {(d.avp_code, d.vendor_id) for d in avp_def
            if not annotations[d.attr_name].startswith("list")}
    return once, {(d.avp_code, d.vendor_id) for d in avp_def} - once


def test_the_avps_known_are_python_diameters_definition_of_the_request() -> None:
    """TS 29.272 §7.2.19 and §7.3.3 as python-diameter defines them: what is not there and
    has the M bit is a 5001, what is there once at most a 5009 when twice."""
    assert _defined(MeIdentityCheckRequest.avp_def, MeIdentityCheckRequest.__annotations__) \
        == (set(ONCE), set(REPEATED))
    terminal = {f.name: str(f.type) for f in dataclasses.fields(TerminalInformation)}
    assert _defined(TerminalInformation.avp_def, terminal) == (set(TERMINAL_ONCE), set())


KNOWN = set(ONCE) | set(REPEATED)
unknown_avps = st.builds(
    lambda code, vendor, mandatory, payload: Avp(
        code, vendor_id=vendor, payload=payload,
        flags=(AVP_FLAG_VENDOR if vendor else 0) | (AVP_FLAG_MANDATORY if mandatory else 0)),
    st.integers(1, 2**32 - 1), st.sampled_from([0, VENDOR_3GPP, 9]), st.booleans(),
    st.binary(max_size=9)).filter(lambda a: (a.code, a.vendor_id) not in KNOWN)
unknown_in_terminal = unknown_avps.filter(
    lambda a: (a.code, a.vendor_id) not in set(TERMINAL_ONCE))


def in_terminal_information(inner: Avp) -> Avp:
    return Avp.new(AVP_TERMINAL_INFORMATION, VENDOR_3GPP, value=[inner])


def reference_fault(avps: list[Avp]) -> tuple[int, list[Avp]] | None:
    """The fault of the AVPs in this order by python-diameter's definition (RFC 6733
    §7.1.5): 5001 with each AVP unknown with the M bit, else 5009 with the first seen once
    too often, an AVP inside Terminal-Information inside one of its own (§7.5)."""
    unsupported: list[Avp] = []
    repeated: list[Avp] = []
    seen: set = set()
    for a in avps:
        key = (a.code, a.vendor_id)
        if key not in KNOWN:
            unsupported += [a] if a.is_mandatory else []
        elif key in seen and key in ONCE:
            repeated.append(a)
        else:
            seen.add(key)
            if key == (AVP_TERMINAL_INFORMATION, VENDOR_3GPP):
                inner_seen: set = set()
                for i in a.value:
                    inner = (i.code, i.vendor_id)
                    if inner not in TERMINAL_ONCE:
                        unsupported += [in_terminal_information(i)] if i.is_mandatory else []
                    elif inner in inner_seen:
                        repeated.append(in_terminal_information(i))
                    inner_seen.add(inner)
    if unsupported:
        return DIAMETER_AVP_UNSUPPORTED, unsupported
    return (DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, repeated[:1]) if repeated else None


@given(requests().filter(lambda r: r.terminal_information is not None), st.data())
def test_avps_unknown_or_too_many_are_answered_5001_or_5009_as_python_diameter_writes_it(
        request, data) -> None:
    """RFC 6733 §7.1.5: AVPs this EIR does not know with the M bit (outside or inside
    Terminal-Information) are a 5001 with each in Failed-AVP, and those without it are
    ignored; else an AVP of those TS 29.272 §7.2.19 has once at most (Terminal-Information,
    User-Name, Session-Id ..., or IMEI inside Terminal-Information) seen again is a 5009
    with the first seen once too often. Inserted anywhere; the answer is, byte for byte,
    the ME-Identity-Check-Answer python-diameter writes with that Failed-AVP."""
    terminal = request.terminal_information
    terminal.additional_avps = data.draw(st.lists(st.one_of(
        unknown_in_terminal, st.builds(lambda imei: Avp.new(AVP_IMEI, VENDOR_3GPP, value=imei),
                                       st.from_regex(r"[0-9]{14}", fullmatch=True))),
        max_size=2))
    avps = list(request.avps)
    assert b"".join(a.as_bytes() for a in avps) == request.as_bytes()[HEADER_BYTES:]
    once = [a for a in avps if (a.code, a.vendor_id) in ONCE]
    extras = data.draw(st.lists(st.one_of(unknown_avps, *(
        [st.sampled_from(once)] if once else [])), max_size=3))
    for extra in extras:
        avps.insert(data.draw(st.integers(1, len(avps))), extra)  # the Session-Id first
    body = b"".join(a.as_bytes() for a in avps)
    raw = bytearray(request.as_bytes()[:HEADER_BYTES] + body)
    raw[1:4] = len(raw).to_bytes(3, "big")
    read = read_micr(bytes(raw))
    expected = reference_fault(avps)
    if expected is None:
        assert read.fault is None or read.fault.result_code == DIAMETER_MISSING_AVP
        return
    code, failed = expected
    assert read.fault.result_code == code
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    ours = writer.answer(read, writer.body(code, None, False), read.fault.failed_avp)
    assert ours == reference_answer(request, code, None, False, failed)
    assert not read_header(ours).flags & FLAG_ERROR  # a permanent failure (§7.1)
