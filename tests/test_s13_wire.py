"""ME-Identity-Check written and read by hand (enforcer/frontends/s13/wire.py) against
python-diameter as the reference: a request it builds reads to its fields; an answer written
by hand is, byte for byte, the one python-diameter writes for the same fields (as
S13Answers wrote them with it before); any bytes whatever raise nothing but WireError."""

from __future__ import annotations

from diameter.message import Avp, Message
from diameter.message.avp.grouped import (ExperimentalResult, FailedAvp, ProxyInfo,
                                          TerminalInformation, VendorSpecificApplicationId)
from diameter.message.commands import MeIdentityCheckAnswer, MeIdentityCheckRequest
from diameter.message.constants import AVP_RESULT_CODE
from hypothesis import example, given
from hypothesis import strategies as st

from enforcer.frontends.s13.check import (AVP_IMEI, AVP_TERMINAL_INFORMATION,
                                          DIAMETER_ERROR_EQUIPMENT_UNKNOWN,
                                          DIAMETER_INVALID_AVP_VALUE, DIAMETER_MISSING_AVP,
                                          DIAMETER_SUCCESS, DIAMETER_UNABLE_TO_COMPLY,
                                          S13_APPLICATION_ID, VENDOR_3GPP)
from enforcer.frontends.s13.wire import (DIAMETER_INVALID_AVP_LENGTH, HEADER_BYTES, MicaWriter,
                                         WireError, read_micr, refusal)

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
def requests(draw) -> MeIdentityCheckRequest:
    """Any ME-Identity-Check-Request python-diameter writes, some of its AVPs left out."""
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
    if draw(st.booleans()):
        request.terminal_information = TerminalInformation(
            imei=draw(st.one_of(st.none(), st.from_regex(r"[0-9]{14,15}", fullmatch=True),
                                texts)),
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
    assert [Avp.from_bytes(m).code for m in read.missing] == [c for c, _ in lacking]
    assert [Avp.from_bytes(m).vendor_id for m in read.missing] == [v for _, v in lacking]
    assert len(read.proxy_infos) == len(reference.proxy_info)


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


@given(requests().filter(lambda r: r.terminal_information is not None
                         and r.terminal_information.imei is not None))
def test_a_failed_avp_holds_the_avp_as_received(request) -> None:
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    read = read_micr(request.as_bytes())
    ours = writer.answer(read, writer.body(DIAMETER_INVALID_AVP_VALUE, None, False),
                         read.imei_avp)
    imei = Avp.new(AVP_IMEI, VENDOR_3GPP, value=request.terminal_information.imei)
    assert ours == reference_answer(request, DIAMETER_INVALID_AVP_VALUE, None, False, [imei])


@given(requests())
def test_a_request_lacking_avps_names_each_in_failed_avp(request) -> None:
    writer = MicaWriter(EIR_HOST, REALM, NO_STATE_MAINTAINED)
    read = read_micr(request.as_bytes())
    ours = Message.from_bytes(writer.answer(read, writer.body(DIAMETER_MISSING_AVP, None,
                                                              False), b"".join(read.missing)))
    named = [(a.code, a.vendor_id) for f in ours.failed_avp for a in f.additional_avps] \
        if read.missing else []
    assert named == [(Avp.from_bytes(m).code, Avp.from_bytes(m).vendor_id)
                     for m in read.missing]


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
    read = read_micr(request.as_bytes())
    assert AVP_TERMINAL_INFORMATION in [Avp.from_bytes(m).code for m in read.missing]
