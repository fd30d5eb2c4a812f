"""ME-Identity-Check on the wire, by hand (RFC 6733 §3-4; 3GPP TS 29.272 §7.2.19-20, §7.3),
pure: a request's bytes read into the few fields the check needs (`read_micr`), and its
answer written (`MicaWriter`), without python-diameter's codec on the hot path.

A Diameter message is a 20-byte header (version 1, length, flags R/P/E/T, command code,
Application-Id, Hop-by-Hop and End-to-End identifiers) and AVPs, each a code, flags (V
vendor, M mandatory), a 24-bit length that leaves out the padding to 4 bytes, the Vendor-Id
when V is set, and the data. The reference for what is read and written is python-diameter
(tests/test_s13_wire.py): a request it builds reads to the fields it reads, and an answer
written here decodes there to what `answers.S13Answers` answered with its codec.

Nothing malformed raises anything but `WireError`."""

from __future__ import annotations

import struct
from typing import NamedTuple

from enforcer.frontends.s13.check import AVP_IMEI, AVP_TERMINAL_INFORMATION, AVP_USER_NAME, \
    DIAMETER_MISSING_AVP, S13_APPLICATION_ID, VENDOR_3GPP

# RFC 6733 §3: the header.
HEADER_BYTES = 20
DIAMETER_VERSION = 1
FLAG_REQUEST = 0x80
FLAG_PROXYABLE = 0x40
FLAG_ERROR = 0x20
# RFC 6733 §4.1: an AVP's header, with and without its Vendor-Id.
AVP_HEADER_BYTES = 8
VENDOR_AVP_HEADER_BYTES = 12
AVP_FLAG_VENDOR = 0x80
AVP_FLAG_MANDATORY = 0x40
# RFC 6733 §8.8, §6.3-4, §6.5-6, §6.7.1-2, §6.10, §8.6-7 and §7.5; RFC 7944 §9.1;
# TS 29.272 §7.3.51, §7.3.4-6 (3GPP2-MEID, Software-Version).
AVP_SESSION_ID = 263
AVP_ORIGIN_HOST = 264
AVP_ORIGIN_REALM = 296
AVP_DESTINATION_HOST = 293
AVP_DESTINATION_REALM = 283
AVP_ROUTE_RECORD = 282
AVP_DRMP = 301
AVP_3GPP2_MEID = 1471
AVP_SOFTWARE_VERSION = 1403
AVP_VENDOR_SPECIFIC_APPLICATION_ID = 260
AVP_VENDOR_ID = 266
AVP_AUTH_APPLICATION_ID = 258
AVP_AUTH_SESSION_STATE = 277
AVP_RESULT_CODE = 268
AVP_EXPERIMENTAL_RESULT = 297
AVP_EXPERIMENTAL_RESULT_CODE = 298
AVP_FAILED_AVP = 279
AVP_PROXY_INFO = 284
AVP_EQUIPMENT_STATUS = 1445
# RFC 6733 §7.1.3 (protocol errors: the E bit) and §7.1.5.
PROTOCOL_ERRORS = range(3000, 4000)
DIAMETER_AVP_UNSUPPORTED = 5001
DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
DIAMETER_INVALID_AVP_LENGTH = 5014

# TS 29.272 §7.2.19: the AVPs of a ME-Identity-Check-Request (code, vendor) that occur once
# at most, and those that may repeat; any other with the M bit is one this EIR does not
# support (RFC 6733 §4.1).
ONCE = ((AVP_SESSION_ID, 0), (AVP_DRMP, 0), (AVP_VENDOR_SPECIFIC_APPLICATION_ID, 0),
        (AVP_AUTH_SESSION_STATE, 0), (AVP_ORIGIN_HOST, 0), (AVP_ORIGIN_REALM, 0),
        (AVP_DESTINATION_HOST, 0), (AVP_DESTINATION_REALM, 0),
        (AVP_TERMINAL_INFORMATION, VENDOR_3GPP), (AVP_USER_NAME, 0))
REPEATED = ((AVP_PROXY_INFO, 0), (AVP_ROUTE_RECORD, 0))
# Those it must carry, in the order python-diameter names them in a 5005's Failed-AVP.
REQUIRED = ((AVP_SESSION_ID, 0), (AVP_AUTH_SESSION_STATE, 0), (AVP_ORIGIN_HOST, 0),
            (AVP_ORIGIN_REALM, 0), (AVP_DESTINATION_REALM, 0),
            (AVP_TERMINAL_INFORMATION, VENDOR_3GPP))
# TS 29.272 §7.3.3: Terminal-Information's AVPs, each once at most.
TERMINAL_ONCE = ((AVP_IMEI, VENDOR_3GPP), (AVP_3GPP2_MEID, VENDOR_3GPP),
                 (AVP_SOFTWARE_VERSION, VENDOR_3GPP))

# RFC 6733 §7.1.5: the example of an AVP missing (5005), or of one whose length cannot be
# (5014), holds zeros of its type's least length: an Enumerated's 4 bytes (the request's
# Auth-Session-State, DRMP), none for text, identities and grouped AVPs.
ENUMERATED_BYTES = 4
_LEAST_DATA = {(AVP_AUTH_SESSION_STATE, 0): ENUMERATED_BYTES, (AVP_DRMP, 0): ENUMERATED_BYTES}

# A bit each for those that occur once (seen twice: 5009), none for those that repeat.
_BITS = {**{once: 1 << i for i, once in enumerate(ONCE)}, **dict.fromkeys(REPEATED, 0)}
_ALL_REQUIRED = sum(_BITS[required] for required in REQUIRED)
_TERMINAL_BITS = {once: 1 << i for i, once in enumerate(TERMINAL_ONCE)}
_HEADER = struct.Struct("!B3sB3sI8s")
_HEADER_WORDS = struct.Struct("!III8s")  # the same, read a word at a time
_AVP = struct.Struct("!II")
_VENDOR = struct.Struct("!I")
_U32 = struct.Struct("!I")


class WireError(Exception):
    """A message whose bytes cannot be read as Diameter: the result code to answer (5014
    DIAMETER_INVALID_AVP_LENGTH) and the AVP at fault as Failed-AVP's content, or no code when
    the header itself is wrong and the connection cannot be trusted to frame the next one
    (RFC 6733 §7.1.5 and §3)."""

    def __init__(self, detail: str, result_code: int | None = None,
                 failed_avp: bytes = b"") -> None:
        super().__init__(detail)
        self.result_code = result_code
        self.failed_avp = failed_avp


class Fault(NamedTuple):
    """A request read whole that its command's definition refuses (RFC 6733 §7.1.5): the
    result code, and what its Failed-AVP holds (AVPs, each with its padding)."""

    result_code: int
    failed_avp: bytes


class Header(NamedTuple):
    """A message's header (RFC 6733 §3): `length` in bytes with the header, `flags` the byte
    of R, P, E and T, `identifiers` the Hop-by-Hop and End-to-End ones as their 8 bytes."""

    length: int
    flags: int
    command_code: int
    application_id: int
    identifiers: bytes


class Micr(NamedTuple):
    """What a ME-Identity-Check-Request says that its answer needs (TS 29.272 §7.2.19):
    None for an AVP it lacks; the IMEI and User-Name AVPs as received (without their
    padding), for a Failed-AVP naming them; each Proxy-Info's data, echoed in order (§6.7.2);
    `fault` when the AVPs break the command's definition, the first of (RFC 6733 §7.1.5):
    5001 DIAMETER_AVP_UNSUPPORTED, each AVP with the M bit this EIR does not know in
    Failed-AVP; 5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, the first AVP seen once too often;
    5005 DIAMETER_MISSING_AVP, an example of each AVP it must carry and does not (§7.5).
    One inside Terminal-Information is named inside a Terminal-Information of its own
    (§7.5). The AVPs it reads are the first of their kind."""

    header: Header
    session_id: bytes | None
    imei: str | None  # a UTF8String that is none read with U+FFFD (no IMEI has it: 5004)
    imei_avp: bytes
    user_name: str | None
    user_name_avp: bytes
    proxy_infos: tuple[bytes, ...]
    fault: Fault | None


def read_header(data: bytes, at: int = 0) -> Header:
    """The header of the message at `at` of `data` (at least HEADER_BYTES of it). Raises
    WireError, with no result code, for a version other than 1 or a length that cannot be
    a message's (under 20 bytes or not a multiple of 4), or fewer than 20 bytes."""
    if len(data) - at < HEADER_BYTES:
        raise WireError(f"a header of {len(data) - at} bytes")
    version_length, flags_command, application, identifiers = _HEADER_WORDS.unpack_from(data,
                                                                                       at)
    version, size = version_length >> 24, version_length & 0xFFFFFF
    if version != DIAMETER_VERSION:
        raise WireError(f"Diameter version {version}, not {DIAMETER_VERSION}")
    if size < HEADER_BYTES or size % 4:
        raise WireError(f"a message of {size} bytes")
    return Header(size, flags_command >> 24, flags_command & 0xFFFFFF, application,
                  identifiers)


def _avp_at(data: bytes, at: int, end: int) -> tuple[int, int, int, int, int]:
    """The AVP at `at` of a message or group ending at `end`: its code, flags, vendor, and
    where its data starts and ends. Raises WireError (5014) when its length is shorter than
    its header or runs past `end`."""
    if end - at < AVP_HEADER_BYTES:
        raise WireError("an AVP header runs past the message", DIAMETER_INVALID_AVP_LENGTH,
                        data[at:end] + bytes(AVP_HEADER_BYTES - (end - at)))
    code, flags_length = _AVP.unpack_from(data, at)
    length, flags = flags_length & 0xFFFFFF, flags_length >> 24
    header, vendor = AVP_HEADER_BYTES, 0
    if flags & AVP_FLAG_VENDOR:
        header = VENDOR_AVP_HEADER_BYTES
        if end - at >= header:
            (vendor,) = _VENDOR.unpack_from(data, at + AVP_HEADER_BYTES)
    if length < header or at + length > end:
        raise WireError(f"AVP {code}'s length {length} does not fit",
                        DIAMETER_INVALID_AVP_LENGTH, example(code, vendor))
    return code, flags, vendor, at + header, at + length


def _avps(data: bytes, start: int, end: int):
    """Each AVP between start and end: (code, vendor, data's start, data's end). Raises
    WireError (5014) at the first whose length cannot be."""
    at = start
    while at < end:
        code, _, vendor, data_at, data_end = _avp_at(data, at, end)
        yield code, vendor, data_at, data_end
        at += (data_end - at + 3) & ~3


def _padded(avp_bytes: bytes) -> bytes:
    return avp_bytes + bytes(-len(avp_bytes) % 4)


def _in_terminal_information(avp_bytes: bytes) -> bytes:
    """An AVP of a Terminal-Information, for a Failed-AVP, in a Terminal-Information of its
    own (RFC 6733 §7.5)."""
    return avp(AVP_TERMINAL_INFORMATION, _padded(avp_bytes), VENDOR_3GPP)


def read_micr(data: bytes, header: Header | None = None) -> Micr:
    """A whole ME-Identity-Check-Request (`data` is the message, its header's length long;
    `header` its header when already read) read, its faults of definition in `fault`.
    Raises WireError: the header's (no result code) or an AVP's length (5014)."""
    if header is None:
        header = read_header(data)
    end = header.length
    if end != len(data):
        raise WireError(f"a message of {len(data)} bytes says {end}")
    session_id = imei = user_name = None
    imei_avp = user_name_avp = b""
    proxy_infos: list[bytes] = []
    unsupported: list[bytes] = []  # the AVPs with the M bit not known, padded
    repeated = b""  # the first AVP seen once too often, padded
    seen = 0  # the ONCE found, a bit each
    at = HEADER_BYTES
    while at < end:  # the hot path: no generator, and the AVPs' bytes cut out only here
        code, flags, vendor, start, stop = _avp_at(data, at, end)
        bit = _BITS.get((code, vendor))
        if bit is None:
            if flags & AVP_FLAG_MANDATORY:
                unsupported.append(_padded(data[at:stop]))
        elif seen & bit:
            if not repeated:
                repeated = _padded(data[at:stop])
        else:  # a code known is of one vendor
            seen |= bit
            if code == AVP_SESSION_ID:
                session_id = data[start:stop]
            elif code == AVP_USER_NAME:
                user_name = data[start:stop].decode("utf-8", "replace")
                user_name_avp = data[at:stop]
            elif code == AVP_PROXY_INFO:
                proxy_infos.append(data[start:stop])
            elif code == AVP_TERMINAL_INFORMATION:
                inner_at, inner_seen = start, 0
                while inner_at < stop:
                    inner, i_flags, i_vendor, i_start, i_stop = _avp_at(data, inner_at, stop)
                    bit = _TERMINAL_BITS.get((inner, i_vendor))
                    if bit is None:
                        if i_flags & AVP_FLAG_MANDATORY:
                            unsupported.append(_in_terminal_information(data[inner_at:i_stop]))
                    elif inner_seen & bit:
                        if not repeated:
                            repeated = _in_terminal_information(data[inner_at:i_stop])
                    else:
                        inner_seen |= bit
                        if inner == AVP_IMEI:
                            imei = data[i_start:i_stop].decode("utf-8", "replace")
                            imei_avp = data[inner_at:i_stop]
                    inner_at += (i_stop - inner_at + 3) & ~3
        at += (stop - at + 3) & ~3
    fault = None
    if unsupported:
        fault = Fault(DIAMETER_AVP_UNSUPPORTED, b"".join(unsupported))
    elif repeated:
        fault = Fault(DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, repeated)
    elif (seen & _ALL_REQUIRED) != _ALL_REQUIRED:
        fault = Fault(DIAMETER_MISSING_AVP, b"".join(
            example(code, vendor) for code, vendor in REQUIRED
            if not seen & _BITS[code, vendor]))
    return Micr(header, session_id, imei, imei_avp, user_name, user_name_avp,
                tuple(proxy_infos), fault)


def avp(code: int, value: bytes, vendor: int = 0) -> bytes:
    """One AVP with its padding, M set (and V with a vendor), as python-diameter writes it."""
    if vendor:
        head = _AVP.pack(code, ((AVP_FLAG_VENDOR | AVP_FLAG_MANDATORY) << 24)
                         | (VENDOR_AVP_HEADER_BYTES + len(value))) + _VENDOR.pack(vendor)
    else:
        head = _AVP.pack(code, (AVP_FLAG_MANDATORY << 24) | (AVP_HEADER_BYTES + len(value)))
    return head + value + bytes(-len(value) % 4)


def example(code: int, vendor: int) -> bytes:
    """An example of an AVP, as Failed-AVP names one missing or unreadable (RFC 6733 §7.1.5,
    §7.5): its data zeros of its type's least length (`_LEAST_DATA`; none for others)."""
    return avp(code, bytes(_LEAST_DATA.get((code, vendor), 0)), vendor)


def unsigned(code: int, value: int, vendor: int = 0) -> bytes:
    """An Unsigned32 or Enumerated AVP."""
    return avp(code, _U32.pack(value), vendor)


def header_bytes(length: int, flags: int, command_code: int, application_id: int,
                 identifiers: bytes) -> bytes:
    """A message's header (RFC 6733 §3)."""
    return _HEADER.pack(DIAMETER_VERSION, length.to_bytes(3, "big"), flags,
                        command_code.to_bytes(3, "big"), application_id, identifiers)


def answer_flags(request: Header, error: bool = False) -> int:
    """An answer's flags: R clear, P as the request's (RFC 6733 §6.2), E for a protocol
    error (§7.1.3)."""
    return (request.flags & FLAG_PROXYABLE) | (FLAG_ERROR if error else 0)


class MicaWriter:
    """ME-Identity-Check-Answers (TS 29.272 §7.2.20) of one EIR, in python-diameter's AVP
    order: Session-Id, Vendor-Specific-Application-Id, the result, Auth-Session-State
    (NO_STATE_MAINTAINED), Origin-Host and Origin-Realm, Equipment-Status, Failed-AVP,
    Proxy-Info. What follows the Session-Id up to Proxy-Info is the same for every answer
    of a kind, and is written once."""

    def __init__(self, origin_host: bytes, origin_realm: bytes,
                 auth_session_state: int) -> None:
        self._application = avp(AVP_VENDOR_SPECIFIC_APPLICATION_ID,
                                unsigned(AVP_VENDOR_ID, VENDOR_3GPP)
                                + unsigned(AVP_AUTH_APPLICATION_ID, S13_APPLICATION_ID))
        self._rest = unsigned(AVP_AUTH_SESSION_STATE, auth_session_state) \
            + avp(AVP_ORIGIN_HOST, origin_host) + avp(AVP_ORIGIN_REALM, origin_realm)
        self._bodies: dict[tuple[int, int | None, bool], bytes] = {}

    def body(self, result_code: int, equipment_status: int | None,
             experimental: bool) -> bytes:
        """The answer's AVPs from Vendor-Specific-Application-Id to Equipment-Status: a
        Result-Code with the status, or an Experimental-Result (3GPP's) and no status."""
        key = (result_code, equipment_status, experimental)
        body = self._bodies.get(key)
        if body is None:
            result = avp(AVP_EXPERIMENTAL_RESULT, unsigned(AVP_VENDOR_ID, VENDOR_3GPP)
                         + unsigned(AVP_EXPERIMENTAL_RESULT_CODE, result_code)) \
                if experimental else unsigned(AVP_RESULT_CODE, result_code)
            status = b"" if equipment_status is None \
                else unsigned(AVP_EQUIPMENT_STATUS, equipment_status, VENDOR_3GPP)
            body = self._bodies[key] = self._application + result + self._rest + status
        return body

    def answer(self, request: Micr, body: bytes, failed: bytes = b"") -> bytes:
        """The answer to `request` with `body` (from `body`), and a Failed-AVP holding the
        AVPs `failed` (already coded) when given."""
        parts = [avp(AVP_SESSION_ID, request.session_id)] if request.session_id is not None \
            else []
        parts.append(body)
        if failed:  # an AVP as received comes without its padding
            parts.append(avp(AVP_FAILED_AVP, failed + bytes(-len(failed) % 4)))
        parts.extend(avp(AVP_PROXY_INFO, p) for p in request.proxy_infos)
        avps = b"".join(parts)
        head = request.header
        return header_bytes(HEADER_BYTES + len(avps), answer_flags(head), head.command_code,
                            head.application_id, head.identifiers) + avps


def salvage(data: bytes, header: Header) -> Micr:
    """What its answer echoes of a request whose AVPs cannot all be read (5014, or refused
    as a whole): its first Session-Id and its Proxy-Info, as far as they can be read."""
    session_id = None
    proxy_infos: list[bytes] = []
    try:
        for code, vendor, start, end in _avps(data, HEADER_BYTES, min(header.length,
                                                                       len(data))):
            if code == AVP_SESSION_ID and vendor == 0 and session_id is None:
                session_id = data[start:end]
            elif code == AVP_PROXY_INFO and vendor == 0:
                proxy_infos.append(data[start:end])
    except WireError:
        pass  # what was read before the fault is echoed; the rest cannot be
    return Micr(header, session_id, None, b"", None, b"", tuple(proxy_infos), None)


def refusal(data: bytes, header: Header, result_code: int, origin_host: bytes,
            origin_realm: bytes) -> bytes:
    """The answer to a request refused as a whole (RFC 6733 §7.2), of an application or a
    command this node does not serve: its Session-Id and Proxy-Info echoed (`salvage`),
    Result-Code, Origin-Host, Origin-Realm; the E bit for a protocol error (3xxx, §7.1.3)."""
    read = salvage(data, header)
    error = result_code in PROTOCOL_ERRORS
    avps = b"".join([*([] if read.session_id is None else [avp(AVP_SESSION_ID, read.session_id)]),
                     unsigned(AVP_RESULT_CODE, result_code),
                     avp(AVP_ORIGIN_HOST, origin_host), avp(AVP_ORIGIN_REALM, origin_realm),
                     *(avp(AVP_PROXY_INFO, p) for p in read.proxy_infos)])
    return header_bytes(HEADER_BYTES + len(avps), answer_flags(header, error),
                        header.command_code, header.application_id, header.identifiers) + avps
