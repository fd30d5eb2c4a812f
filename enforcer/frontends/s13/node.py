"""The S13 Diameter node: connections from MMEs and DRAs on a uvloop event loop of its own
thread, with the peer procedures RFC 6733 asks of a server that dials nobody, and
ME-Identity-Check answered in batches (`answers.S13Answers`).

- Capabilities exchange (§5.3): a connection's first message must be a CER from a peer of
  `s13.peers` (else 3010 DIAMETER_UNKNOWN_PEER, with the E bit, and the connection closed)
  that names S13 or the relay application (else 5010 DIAMETER_NO_COMMON_APPLICATION, closed);
  the CEA advertises S13 as Vendor-Specific-Application-Id (Vendor-Id 10415, TS 29.272
  §7.1.8) and as Auth-Application-Id. A second connection of a peer replaces its first
  when it comes from the same address (the peer restarted), and is refused 4003
  DIAMETER_ELECTION_LOST (the open one kept, as §5.6.4's election does) from another. A
  connection whose CER has not come `s13.watchdog_s` after it opened is closed, whatever
  bytes it sends meanwhile. Past `s13.max_connections` open, a connection is closed as it
  opens, counted and logged.
- Watchdog (§5.5, RFC 3539 §3.4.1, Tw = `s13.watchdog_s`, no jitter): every message
  received sets the timer again; Tw without one sends a DWR, Tw more without one makes the
  peer suspect (logged), and Tw more closes the connection, counted. A DWA clears the DWR;
  a DWR is answered.
- Disconnection (§5.4): a DPR is answered and the connection closed; at a stop each peer is
  sent a DPR and its DPA waited for DPA_WAIT_S at most. A connection closed for any reason
  but a fault is first sent the answers to what it asked: the turn's batch is answered at
  once when it holds one of its requests.
- Requests (§6-7): ME-Identity-Check-Requests of one loop turn, from every connection, are
  read by hand (`wire.read_micr`) and decided in one call, as the N5g-eir transport decides a
  turn's requests; another S13 command is answered 3001 DIAMETER_COMMAND_UNSUPPORTED,
  another application 3007 DIAMETER_APPLICATION_UNSUPPORTED (both with the E bit), an AVP
  whose length cannot be 5014 DIAMETER_INVALID_AVP_LENGTH in a ME-Identity-Check-Answer
  with the AVP in Failed-AVP; a header that cannot be (version, length) closes the
  connection, whose framing is lost.
- Transport: TCP only. uvloop makes every accepted socket a TCP transport (TCP_NODELAY set,
  which an SCTP socket refuses, and libuv closes it unsaid), so `s13.transport = "sctp"`
  is refused at start.

The rare messages (CER/CEA, DWR/DWA, DPR/DPA) are coded with python-diameter; the checks
never are."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from typing import Callable

import uvloop
from diameter.message import Message
from diameter.message.avp.grouped import VendorSpecificApplicationId
from diameter.message.commands import (CapabilitiesExchangeAnswer, CapabilitiesExchangeRequest,
                                       DeviceWatchdogAnswer, DeviceWatchdogRequest,
                                       DisconnectPeerAnswer, DisconnectPeerRequest)

from enforcer.config import S13Config, config_error
from enforcer.frontends.s13.answers import S13Answers
from enforcer.frontends.s13.check import (DIAMETER_SUCCESS, ME_IDENTITY_CHECK,
                                          S13_APPLICATION_ID, VENDOR_3GPP)
from enforcer.frontends.s13.wire import (FLAG_REQUEST, HEADER_BYTES, Header, Micr, WireError,
                                         read_header, read_micr, refusal)
from enforcer.logs import describe
from metrics.s13 import S13Metrics

log = logging.getLogger("eir.s13")

PRODUCT_NAME = "eir-enforcer"
# RFC 6733 §2.4 and §3.1: the base protocol's application and commands.
BASE_APPLICATION = 0
RELAY_APPLICATION = 0xFFFFFFFF
CAPABILITIES_EXCHANGE = 257
DEVICE_WATCHDOG = 280
DISCONNECT_PEER = 282
# RFC 6733 §7.1.3-5.
DIAMETER_COMMAND_UNSUPPORTED = 3001
DIAMETER_APPLICATION_UNSUPPORTED = 3007
DIAMETER_UNKNOWN_PEER = 3010
DIAMETER_ELECTION_LOST = 4003
DIAMETER_NO_COMMON_APPLICATION = 5010
# RFC 6733 §7.3: the Error-Message of a CER refused for its peer's connection open elsewhere.
ELECTION_LOST_MESSAGE = "this peer is connected from another address"
# RFC 6733 §5.4.3: Disconnect-Cause.
REBOOTING = 0
# At a stop, each peer is sent a Disconnect-Peer-Request and its answer waited for this long
# at most.
DPA_WAIT_S = 2
# The watchdog looks at every connection this many times a watchdog_s: each of its steps
# (the CER's deadline, a DWR, suspect, closed) comes watchdog_s to 1.25 watchdog_s after
# the one before.
WATCHDOG_LOOKS = 4
# The only transport the node serves (see the module's docstring).
TRANSPORT = "tcp"
# No peer message of S13 comes near this (a MICR is some 200 bytes, a CER a few hundred): a
# header saying more is not believed, and its connection closed.
MAX_MESSAGE_BYTES = 1 << 16
# As the N5g-eir transport: past this much unsent, a connection is not read until it drains.
HIGH_WATER_BYTES = 1 << 20
# RFC 6733 §3: End-to-End identifiers start with the low 12 bits of the time in seconds.
END_TO_END_TIME_SHIFT = 20


def peer_host(uri: str) -> str:
    """The DiameterIdentity of a DiameterURI (aaa://host[:port][;params], RFC 6733 §4.3.1),
    lower case: a CER's Origin-Host is compared with it so."""
    return uri.split("://", 1)[1].split(";", 1)[0].split(":", 1)[0].lower()


class _Batch:
    """The ME-Identity-Check-Requests of one loop turn, with the connection of each."""

    def __init__(self) -> None:
        self.requests: list[Micr] = []
        self.connections: list[_Connection] = []


class _Node:
    """What the connections share: the configuration, the answers, the open peers, the
    turn's batch and the identifiers of the requests this node sends."""

    def __init__(self, config: S13Config, answers: S13Answers, metrics: S13Metrics,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.answers = answers
        self.metrics = metrics
        self.loop = loop
        self.origin_host = config.origin_host.encode()
        self.origin_realm = config.origin_realm.encode()
        self.peers = {peer_host(uri) for uri in config.peers}
        self.connections: set[_Connection] = set()
        self.open: dict[str, _Connection] = {}  # by peer, past the capabilities exchange
        self._batch = _Batch()
        self._hop_by_hop = itertools.count(1)
        self._end_to_end = itertools.count(
            (int(time.time()) & 0xFFF) << END_TO_END_TIME_SHIFT)

    def identifiers(self, message: Message) -> Message:
        """`message`, a request of this node's, with its own Hop-by-Hop and End-to-End
        identifiers (RFC 6733 §3)."""
        message.header.hop_by_hop_identifier = next(self._hop_by_hop) & 0xFFFFFFFF
        message.header.end_to_end_identifier = next(self._end_to_end) & 0xFFFFFFFF
        return message

    def add(self, connection: _Connection, request: Micr) -> None:
        batch = self._batch
        if not batch.requests:
            self.loop.call_soon(self._flush)
        batch.requests.append(request)
        batch.connections.append(connection)

    def answer_now(self, connection: _Connection) -> None:
        """The turn's batch answered at once when it holds a request of `connection`, which
        is about to close: what it asked is answered before (a rare path, scanned)."""
        if any(c is connection for c in self._batch.connections):
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not batch.requests:  # answered already, by answer_now
            return
        try:
            answers = self.answers.answer(batch.requests)
        except Exception as exc:  # noqa: BLE001 - each request still gets its answer
            log.error("ME-Identity-Check batch failed", extra={
                "error": describe(exc), "checks": len(batch.requests)})
            answers = [self.answers.failed(r) for r in batch.requests]
        touched: dict[int, _Connection] = {}
        for connection, answer in zip(batch.connections, answers):
            connection.out.append(answer)
            touched[id(connection)] = connection
        for connection in touched.values():
            connection.send()

    def watch(self) -> None:
        """The next look scheduled, and this one at every connection: a connection whose
        look fails is closed, the others are still watched."""
        self.loop.call_later(self.config.watchdog_s / WATCHDOG_LOOKS, self.watch)
        now = self.loop.time()
        for connection in list(self.connections):
            try:
                connection.watch(now)
            except Exception as exc:  # noqa: BLE001 - the other connections are still watched
                log.error("Diameter watchdog failed", extra={
                    "peer": connection.peer, "error": describe(exc)})
                connection.abort(f"its watchdog failed: {describe(exc)}")

    def peers_connected(self) -> int:
        return len(self.open)


class _Connection(asyncio.Protocol):
    """One peer's connection: waiting for its CER, then open; its watchdog."""

    def __init__(self, node: _Node) -> None:
        self._node = node
        # None once it is closed or aborted: what is written after is counted unsent.
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self.out: list[bytes] = []
        self.peer: str | None = None  # its Origin-Host, once its CER is taken
        self.address = ""  # the peer's IP address
        # The watchdog (RFC 3539 §3.4.1): a message came since its last look; since when
        # none came (its timer); a DWR unanswered; the peer suspect.
        self._heard = False
        self._opened_at = 0.0  # the CER's deadline counts from here
        self._quiet_since = 0.0
        self._dwr_pending = False
        self._suspect = False
        self._leaving = False  # a DPR was sent: the DPA closes it

    # asyncio's callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        node = self._node
        peername = transport.get_extra_info("peername")
        if peername is not None:  # None for a socket the peer reset before it was taken
            self.address = peername[0]
        limit = node.config.max_connections
        if len(node.connections) >= limit:
            # Before anything is read or held: a host that opens connections without end
            # costs a count and a line each, and takes nothing from the peers connected.
            node.metrics.refused_connections.inc()
            log.warning("Diameter connection refused: s13.max_connections are open", extra={
                "address": self.address, "max_connections": limit})
            transport.abort()
            return
        # uvloop sets TCP_NODELAY on every TCP transport it makes.
        self._transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=HIGH_WATER_BYTES)  # type: ignore[attr-defined]
        self._opened_at = self._quiet_since = node.loop.time()
        node.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._node.connections.discard(self)
        self._no_longer_open()

    def _no_longer_open(self) -> None:
        """Its peer no longer counted connected by this connection."""
        if self.peer is not None and self._node.open.get(self.peer) is self:
            del self._node.open[self.peer]
            log.info("Diameter peer disconnected", extra={"peer": self.peer})

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while len(buffer) - at >= HEADER_BYTES and self._transport is not None:
            try:
                header = read_header(buffer, at)
            except WireError as exc:
                self.abort(str(exc))
                return
            if header.length > MAX_MESSAGE_BYTES:
                self.abort(f"a message of {header.length} bytes")
                return
            if len(buffer) - at < header.length:
                break
            message = buffer[at:at + header.length]
            at += header.length
            self._receive(header, message)
        self._buffer = buffer[at:]
        if at:  # a whole message came: bytes alone do not set the watchdog again
            self._heard = True
        self.send()

    # Messages.

    def _receive(self, header: Header, data: bytes) -> None:
        node = self._node
        request = bool(header.flags & FLAG_REQUEST)
        if header.command_code == ME_IDENTITY_CHECK and request and self.peer is not None \
                and header.application_id == S13_APPLICATION_ID:
            try:
                node.add(self, read_micr(data, header))
            except WireError as exc:
                if exc.result_code is None:  # its framing, which data_received checked
                    self.abort(str(exc))
                    return
                # An AVP whose length cannot be (5014): the rest of the message cannot be
                # read, the next one can.
                log.warning("ME-Identity-Check unreadable", extra={
                    "peer": self.peer, "error": str(exc)})
                self.out.append(node.answers.unreadable(data, header, exc))
            return
        if header.command_code == CAPABILITIES_EXCHANGE and request:
            self._capabilities(data)
        elif self.peer is None:
            # RFC 6733 §5.6 (Wait-CER): nothing but a CER is taken before one.
            self.abort(f"command {header.command_code} before a CER")
        elif header.command_code == DEVICE_WATCHDOG:
            if request:
                self._base_answer(data, DeviceWatchdogAnswer)
            else:
                self._dwr_pending = False
        elif header.command_code == DISCONNECT_PEER:
            if request:
                node.answer_now(self)  # what it asked before its DPR is answered before
                self._base_answer(data, DisconnectPeerAnswer)
                self._close_after_send()
            elif self._leaving:
                self._close_after_send()
        elif request:
            # RFC 6733 §7.1.3: a command this node does not serve, in an application it
            # serves (S13, the base protocol), or an application it does not.
            code = DIAMETER_COMMAND_UNSUPPORTED if header.application_id in (
                S13_APPLICATION_ID, BASE_APPLICATION) else DIAMETER_APPLICATION_UNSUPPORTED
            self.out.append(refusal(data, header, code, node.origin_host, node.origin_realm))
        # An answer to nothing this node asked is dropped (RFC 6733 §6.2.1).

    def _decode(self, data: bytes) -> Message | None:
        try:
            return Message.from_bytes(data)
        except Exception as exc:  # noqa: BLE001 - python-diameter's faults have no one class
            self.abort(f"unreadable base protocol message: {describe(exc)}")
            return None

    def _capabilities(self, data: bytes) -> None:
        node = self._node
        cer = self._decode(data)
        if not isinstance(cer, CapabilitiesExchangeRequest):
            return
        host = (cer.origin_host or b"").decode("utf-8", "replace").lower()
        applications = set(cer.auth_application_id or []) | {
            v.auth_application_id for v in cer.vendor_specific_application_id or []
            if getattr(v, "auth_application_id", None) is not None}
        cea = self._answer_to(cer, CapabilitiesExchangeAnswer)
        sockname = self._transport.get_extra_info("sockname")  # type: ignore[union-attr]
        # RFC 6733 §5.3.2: an address of this host, the one the peer reached.
        cea.host_ip_address = [sockname[0]]
        cea.vendor_id = VENDOR_3GPP
        cea.product_name = PRODUCT_NAME
        cea.supported_vendor_id = [VENDOR_3GPP]
        cea.auth_application_id = [S13_APPLICATION_ID]
        replaced = node.open.get(host)
        if replaced is self:
            replaced = None
        if host not in node.peers:
            cea.result_code = DIAMETER_UNKNOWN_PEER
            cea.header.is_error = True
            log.warning("CER from an unknown peer refused", extra={"peer": host})
        elif not applications & {S13_APPLICATION_ID, RELAY_APPLICATION}:
            cea.result_code = DIAMETER_NO_COMMON_APPLICATION
            log.warning("CER without S13 refused", extra={"peer": host})
        elif replaced is not None and replaced.address != self.address:
            # RFC 6733 §5.6.4 keeps one connection a peer, the one open: naming a peer is
            # not enough to take its place from another address (a peer that moved is
            # taken once the watchdog closed its old connection).
            cea.result_code = DIAMETER_ELECTION_LOST
            cea.error_message = ELECTION_LOST_MESSAGE
            log.warning("CER refused: its peer is connected from another address", extra={
                "peer": host, "address": self.address, "connected_from": replaced.address})
        else:
            cea.result_code = DIAMETER_SUCCESS
            cea.vendor_specific_application_id = [VendorSpecificApplicationId(
                vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)]
            if replaced is not None:  # from the same address: the peer connected again
                log.info("Diameter peer connected again: its earlier connection closed",
                         extra={"peer": host})
                replaced.peer = None
                replaced.close()
            if self.peer is None:
                log.info("Diameter peer connected", extra={"peer": host})
            elif self.peer != host:  # a CER again, naming another host: now that host's
                self._no_longer_open()
            self.peer = host
            node.open[host] = self
        self.out.append(cea.as_bytes())
        if cea.result_code != DIAMETER_SUCCESS:
            self._close_after_send()

    def _answer_to(self, request: Message, kind: type[Message]) -> Message:
        answer = kind()
        answer.header.hop_by_hop_identifier = request.header.hop_by_hop_identifier
        answer.header.end_to_end_identifier = request.header.end_to_end_identifier
        answer.origin_host = self._node.origin_host
        answer.origin_realm = self._node.origin_realm
        return answer

    def _base_answer(self, data: bytes, kind: type[Message]) -> None:
        request = self._decode(data)
        if request is not None:
            answer = self._answer_to(request, kind)
            answer.result_code = DIAMETER_SUCCESS
            self.out.append(answer.as_bytes())

    def _request(self, message: Message) -> None:
        message.origin_host = self._node.origin_host
        message.origin_realm = self._node.origin_realm
        self.out.append(self._node.identifiers(message).as_bytes())
        self.send()

    # Writing and closing.

    def send(self) -> None:
        """Write what is waiting, in one write; counted unsent when the connection is closed
        or closing (the peer went away, or this node closed it)."""
        if not self.out:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            self._node.metrics.unsent.inc(len(self.out))
        else:
            transport.write(b"".join(self.out))
        self.out.clear()

    def _close_after_send(self) -> None:
        """Closed once the answers to what it asked, and what waits, are written and sent."""
        self._node.answer_now(self)
        self.send()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()  # once what was written is sent

    def close(self) -> None:
        self._close_after_send()

    def abort(self, why: str) -> None:
        """Closed at once, what it was not sent dropped: the answers waiting counted unsent,
        the bytes written and not sent logged."""
        transport, self._transport = self._transport, None
        if transport is None:
            return
        log.warning("Diameter connection closed", extra={
            "peer": self.peer, "error": why, "unsent_bytes": transport.get_write_buffer_size()})
        self.send()  # counted unsent, the transport being gone
        transport.abort()

    def watch(self, now: float) -> None:
        """The watchdog's look (RFC 6733 §5.5.3; RFC 3539 §3.4.1 with Tw = watchdog_s): a
        connection without its CER watchdog_s after it opened is closed; past it, the timer
        is set again by every message received, and watchdog_s without one sends a DWR, as
        long again makes the peer suspect, and as long again closes the connection."""
        if self._transport is None:  # closed, waiting for asyncio to say it is lost
            return
        watchdog_s = self._node.config.watchdog_s
        if self.peer is None:
            if now - self._opened_at >= watchdog_s:
                self.abort("no CER in s13.watchdog_s")
            return
        if self._heard:
            self._heard = False
            self._quiet_since = now
            if self._suspect:
                self._suspect = False
                log.info("Diameter peer heard again", extra={"peer": self.peer})
            return
        if now - self._quiet_since < watchdog_s:
            return
        self._quiet_since = now  # the timer set again
        if self._suspect:
            self._node.metrics.watchdog_failures.inc()
            self.abort("watchdog: a DWR unanswered, nothing received in two s13.watchdog_s")
        elif self._dwr_pending:
            self._suspect = True
            log.warning("Diameter peer suspect: a DWR unanswered, nothing received in "
                        "s13.watchdog_s", extra={"peer": self.peer})
        else:
            self._dwr_pending = True
            self._request(DeviceWatchdogRequest())

    def disconnect(self) -> None:
        """A DPR (RFC 6733 §5.4): the peer's DPA closes the connection."""
        if self._transport is None:  # closed already
            return
        if self.peer is None:
            self.close()
            return
        self._leaving = True
        dpr = DisconnectPeerRequest()
        dpr.disconnect_cause = REBOOTING
        self._request(dpr)


def _listening(config: S13Config) -> socket.socket:
    """The listening TCP socket. Raises OSError when the address cannot be had."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.bind, config.port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class S13Server:
    """The node on its thread, started and stopped with serve."""

    def __init__(self, config: S13Config, answers: S13Answers, metrics: S13Metrics) -> None:
        self._config = config
        self._loop = uvloop.new_event_loop()
        self._node = _Node(config, answers, metrics, self._loop)
        metrics.watch_peers(self._node.peers_connected)
        self._stopped = asyncio.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen and answer. Raises ConfigError naming s13.transport for another transport
        than TCP, OSError when the address cannot be had."""
        if self._config.transport != TRANSPORT:
            raise config_error("s13.transport", f"{self._config.transport} is not served: the "
                               "S13 node (uvloop) serves TCP only; set "
                               f"s13.transport = \"{TRANSPORT}\"")
        sock = _listening(self._config)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, started),
                                        name="eir-s13", daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, sock: socket.socket, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(sock, started.set))
        finally:
            started.set()
            self._loop.close()

    async def _serve(self, sock: socket.socket, started: Callable[[], None]) -> None:
        node = self._node
        server = await self._loop.create_server(lambda: _Connection(node), sock=sock)
        node.watch()
        started()
        await self._stopped.wait()
        server.close()
        for connection in list(node.connections):
            connection.disconnect()
        deadline = self._loop.time() + DPA_WAIT_S
        while node.connections and self._loop.time() < deadline:
            await asyncio.sleep(DPA_WAIT_S / WATCHDOG_LOOKS / 2)
        for connection in list(node.connections):
            connection.close()

    def alive(self) -> bool:
        """Whether requests are still answered."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._thread is None:
            return
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()

