"""The HTTP side of `eir-enforcer serve`: HTTP/1.1 parsed by httptools (llhttp, in C) and
HTTP/2 with prior knowledge (h2c, as SBI peers speak it: TS 29.500 §5.2) framed by h2, on
one uvloop event loop.

Why not an ASGI or RSGI server: each hands every request to Python as its own coroutine,
and on one core that alone cost more than the decision (a trivial granian application
answered 25,800 requests/s here, this transport 70,900/s). Here the requests that arrived
in one turn of the loop, on every connection and stream, go to the application as one list,
are decided in one call, and each connection's answers leave in one write."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from typing import Callable, NamedTuple, Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools

log = logging.getLogger("eir.eic.http")

H2_PREFACE_START = b"PRI "  # RFC 9113 §3.4: no HTTP/1.1 request starts so
MAX_TARGET_BYTES = 8192  # longer request targets get a 414
HIGH_WATER_BYTES = 1 << 20  # unsent answers above this stop reading from the connection


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    extra_headers: tuple[tuple[str, str], ...] = ()

    @cached_property
    def http1(self) -> bytes:
        """The whole HTTP/1.1 response; encoded once for the answers that are constants."""
        head = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}",
                f"content-type: {self.content_type}", f"content-length: {len(self.body)}",
                *(f"{name}: {value}" for name, value in self.extra_headers)]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body

    @cached_property
    def h2_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b":status", str(self.status).encode()),
                (b"content-type", self.content_type.encode()),
                (b"content-length", str(len(self.body)).encode()),
                *((n.encode(), v.encode()) for n, v in self.extra_headers)]


class Request(NamedTuple):
    """A NamedTuple: one is built per request, at a third of a frozen dataclass's cost."""

    method: str
    target: str  # path and query, as sent


class Application(Protocol):
    def answer(self, requests: list[Request]) -> list[Response]:
        """One response per request, in order; never raises for a request's content."""


BAD_REQUEST = Response(400, "text/plain", b"malformed HTTP request\n")
TOO_LONG = Response(414, "text/plain", b"request target too long\n")


@dataclass(eq=False)
class _Pending:
    """The requests that arrived since the last flush, with where each answer goes."""

    requests: list[Request] = field(default_factory=list)
    replies: list[Callable[[Response], None]] = field(default_factory=list)
    touched: dict[int, _Connection] = field(default_factory=dict)


class Batcher:
    """Collects requests from every connection and answers them once per loop turn."""

    def __init__(self, app: Application, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        self._loop = loop
        self._pending = _Pending()

    def add(self, connection: _Connection, request: Request,
            reply: Callable[[Response], None]) -> None:
        pending = self._pending
        if not pending.requests:
            self._loop.call_soon(self._flush)
        pending.requests.append(request)
        pending.replies.append(reply)
        pending.touched[id(connection)] = connection

    def _flush(self) -> None:
        pending, self._pending = self._pending, _Pending()
        for reply, response in zip(pending.replies, self._app.answer(pending.requests)):
            reply(response)
        for connection in pending.touched.values():
            connection.send()


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 until its first bytes are HTTP/2's preface."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._close_after = False
        self._undecided = b""  # the first bytes, until they say which protocol
        self._http1: httptools.HttpRequestParser | None = None
        self._target = bytearray()
        self._h2: h2.connection.H2Connection | None = None
        self._streams: dict[int, Request] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=HIGH_WATER_BYTES)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._http1 is not None:
            self._feed_http1(data)
        elif self._h2 is not None:
            self._feed_h2(data)
        else:
            self._undecided += data
            if len(self._undecided) < len(H2_PREFACE_START):
                return
            data, self._undecided = self._undecided, b""
            if data.startswith(H2_PREFACE_START):
                self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(
                    client_side=False, header_encoding=None))
                self._h2.initiate_connection()
                self._feed_h2(data)
            else:
                self._http1 = httptools.HttpRequestParser(self)
                self._feed_http1(data)

    def send(self) -> None:
        """Write what the last flush answered, in one write."""
        if self._transport is None:
            return
        if self._h2 is not None:
            self._out.append(self._h2.data_to_send())
        if self._out:
            self._transport.write(b"".join(self._out))
            self._out.clear()
        if self._close_after:
            self._transport.close()

    # HTTP/1.1: llhttp calls these back from feed_data.

    def _feed_http1(self, data: bytes) -> None:
        try:
            self._http1.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserUpgrade:
            self._close_after = True  # answered as HTTP/1.1; the upgrade is not taken
        except httptools.HttpParserError:
            self._answer_and_close(BAD_REQUEST)

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_message_complete(self) -> None:
        parser = self._http1
        if not parser.should_keep_alive():  # type: ignore[union-attr]
            self._close_after = True
        if len(self._target) > MAX_TARGET_BYTES:
            self._answer_and_close(TOO_LONG)
            return
        request = Request(parser.get_method().decode("latin-1"),  # type: ignore[union-attr]
                          self._target.decode("latin-1"))
        self._target.clear()  # for the next request on this connection
        self._batcher.add(self, request, self._out_http1)

    def _out_http1(self, response: Response) -> None:
        self._out.append(response.http1)

    def _answer_and_close(self, response: Response) -> None:
        if self._transport is not None:
            self._transport.write(response.http1)
            self._transport.close()
            self._transport = None

    # HTTP/2: h2 turns bytes into events and answers into bytes.

    def _feed_h2(self, data: bytes) -> None:
        conn = self._h2
        try:
            events = conn.receive_data(data)  # type: ignore[union-attr]
        except h2.exceptions.ProtocolError as exc:
            log.info("HTTP/2 connection closed", extra={"error": type(exc).__name__})
            self._close_after = True
            self.send()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                self._streams[event.stream_id] = Request(
                    headers.get(b":method", b"").decode("latin-1"),
                    headers.get(b":path", b"").decode("latin-1"))
                if event.stream_ended is not None:
                    self._h2_request(event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._h2_request(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(  # type: ignore[union-attr]
                    event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close_after = True
        self.send()  # settings, pings and window updates go at once

    def _h2_request(self, stream_id: int) -> None:
        request = self._streams.pop(stream_id, None)
        if request is None:
            return
        if len(request.target) > MAX_TARGET_BYTES:
            self._out_h2(stream_id, TOO_LONG)
            return
        self._batcher.add(self, request, lambda response: self._out_h2(stream_id, response))

    def _out_h2(self, stream_id: int, response: Response) -> None:
        conn = self._h2
        try:
            conn.send_headers(stream_id, response.h2_headers)  # type: ignore[union-attr]
            conn.send_data(stream_id, response.body, end_stream=True)  # type: ignore[union-attr]
        except (h2.exceptions.StreamClosedError, h2.exceptions.FlowControlError):
            pass  # the client reset the stream, or will not take more: nobody to answer


async def serve_checks(app: Application, host: str, port: int, backlog: int,
                       stop: asyncio.Event, sock: socket.socket | None = None,
                       listening: Callable[[int], None] = lambda port: None) -> None:
    """Answer on host:port (or on `sock`, already listening) until `stop` is set;
    `listening` is told the port once bound."""
    loop = asyncio.get_running_loop()
    batcher = Batcher(app, loop)
    if sock is not None:
        server = await loop.create_server(lambda: _Connection(batcher), sock=sock)
    else:
        server = await loop.create_server(lambda: _Connection(batcher), host, port,
                                          backlog=backlog, reuse_address=True)
    listening(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
