"""The S13 Diameter node: python-diameter's peer state machine (RFC 6733: CER/CEA, DWR/DWA,
DPR/DPA, the peer table, TCP or SCTP) carrying ME-Identity-Check, whose requests a thread of
ours answers in batches (`answers.S13Answers`).

The node reads every connection on one thread and hands each request to the application
there; the application only queues it, and the answering thread takes whatever has queued
since its last turn and decides it in one call, as the N5g-eir server decides a loop turn's
requests. So a slow decision never holds the node's watchdogs, and under load a batch costs
little more than one check."""

from __future__ import annotations

import logging
import queue
import socket
import threading

from diameter.message import Message
from diameter.message.avp.grouped import VendorSpecificApplicationId
from diameter.message.commands import CapabilitiesExchangeAnswer, MeIdentityCheckRequest
from diameter.message.constants import (E_RESULT_CODE_DIAMETER_COMMAND_UNSUPPORTED,
                                        E_RESULT_CODE_DIAMETER_SUCCESS)
from diameter.node import Node
from diameter.node.application import Application
from diameter.node.peer import (DISCONNECT_REASON_DWA_TIMEOUT, DISCONNECT_REASON_UNKNOWN,
                                PEER_READY_STATES, PeerConnection)

from enforcer.config import MIN_WATCHDOG_S, S13Config
from enforcer.frontends.s13.answers import S13Answers
from enforcer.frontends.s13.check import S13_APPLICATION_ID, VENDOR_3GPP
from enforcer.logs import describe
from metrics.s13 import S13Metrics

log = logging.getLogger("eir.s13")

PRODUCT_NAME = "eir-enforcer"
MESSAGE_DUMPS = "diameter.peer.msg"
# Requests decided together at most: a decision's cost grows with it, and the first answer
# of a batch waits for the last.
MAX_BATCH = 256
# How often the answering thread looks whether it is asked to stop.
STOP_POLL_S = 0.5
# python-diameter checks peer timers (the watchdog among them) at this period at the least,
# so no watchdog shorter than it can be kept.
WAKEUP_S = MIN_WATCHDOG_S
# At a stop, each peer is sent a Disconnect-Peer-Request (RFC 6733 §5.4) and its answer waited
# for this long at most.
DPA_WAIT_S = 2


# RFC 6733 §7.1.3: protocol errors, the answers whose E bit must be set.
PROTOCOL_ERRORS = range(3000, 4000)


class S13Node(Node):
    """python-diameter's node, advertising S13 as 3GPP's application in its CEA
    (Vendor-Specific-Application-Id, TS 29.272 §7.1.8), setting the E bit of the protocol
    errors it answers (0.9.0 leaves it clear), and counting watchdog failures."""

    def __init__(self, config: S13Config, metrics: S13Metrics) -> None:
        tcp = config.transport == "tcp"
        super().__init__(config.origin_host, config.origin_realm, ip_addresses=[config.bind],
                         tcp_port=config.port if tcp else None,
                         sctp_port=None if tcp else config.port, vendor_ids=[VENDOR_3GPP])
        self.product_name = PRODUCT_NAME
        self.vendor_id = VENDOR_3GPP
        self.idle_timeout = config.watchdog_s
        self.dwa_timeout = config.watchdog_s
        self.wakeup_interval = WAKEUP_S
        self._metrics = metrics

    def send_message(self, conn: PeerConnection, message: Message) -> None:
        if not message.header.is_request and \
                getattr(message, "result_code", None) in PROTOCOL_ERRORS:
            message.header.is_error = True
        if isinstance(message, CapabilitiesExchangeAnswer):
            # The node names its listening address, 0.0.0.0 when it listens on every one:
            # RFC 6733 §5.3.2 wants an address of this host.
            with socket.fromfd(conn.socket_fileno, socket.AF_INET, socket.SOCK_STREAM) as own:
                message.host_ip_address = [own.getsockname()[0]]
            if message.result_code == E_RESULT_CODE_DIAMETER_SUCCESS:
                message.vendor_specific_application_id = [VendorSpecificApplicationId(
                    vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)]
        super().send_message(conn, message)

    def close_connection_socket(self, conn: PeerConnection,
                                disconnect_reason: int = DISCONNECT_REASON_UNKNOWN) -> None:
        if disconnect_reason == DISCONNECT_REASON_DWA_TIMEOUT:
            self._metrics.watchdog_failures.inc()
        super().close_connection_socket(conn, disconnect_reason)

    def peers_connected(self) -> int:
        return sum(1 for conn in list(self.connections.values())
                   if conn.state in PEER_READY_STATES)


class S13Application(Application):
    """ME-Identity-Check for the node: requests queued by the node's thread, answered by
    `answering` in batches."""

    def __init__(self, answers: S13Answers, metrics: S13Metrics) -> None:
        super().__init__(S13_APPLICATION_ID, is_auth_application=True)
        self._answers = answers
        self._metrics = metrics
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def handle_request(self, message: Message) -> None:
        self._queue.put(message)

    def answering(self, stop: threading.Event) -> None:
        """Answer what is queued until `stop`. No fault of one batch ends it."""
        while not stop.is_set():
            try:
                first = self._queue.get(timeout=STOP_POLL_S)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._answer(batch)

    def _answer(self, batch: list[Message]) -> None:
        checks = [m for m in batch if isinstance(m, MeIdentityCheckRequest)]
        answers = []
        try:
            answers = self._answers.answer(checks)
        except Exception as exc:  # noqa: BLE001 - the next batch is answered all the same
            log.error("ME-Identity-Check batch failed", extra={"error": describe(exc),
                                                               "checks": len(checks)})
        # S13 has no other request: any other command of the application (RFC 6733 §7.1.3).
        others = [self.generate_answer(m, E_RESULT_CODE_DIAMETER_COMMAND_UNSUPPORTED)
                  for m in batch if not isinstance(m, MeIdentityCheckRequest)]
        for answer in answers + others:
            try:
                self.send_answer(answer)
            except Exception as exc:  # noqa: BLE001 - its peer went away: the others are sent
                self._metrics.unsent.inc()
                log.warning("ME-Identity-Check answer not sent", extra={"error": describe(exc)})


class S13Server:
    """The node, its application and the answering thread, started and stopped together."""

    def __init__(self, config: S13Config, answers: S13Answers, metrics: S13Metrics) -> None:
        self.node = S13Node(config, metrics)
        self._application = S13Application(answers, metrics)
        # Only the peers configured may connect (RFC 6733 §5.3: a CER from another is
        # answered DIAMETER_UNKNOWN_PEER); they dial in, this node dials nobody.
        # The node looks a CER's Origin-Host up in lower case.
        peers = [self.node.add_peer(uri.lower(), config.origin_realm) for uri in config.peers]
        self.node.add_application(self._application, peers, realms=[config.origin_realm])
        metrics.watch_peers(self.node.peers_connected)
        # At DEBUG python-diameter dumps every message whole, User-Name (the IMSI) unmasked.
        logging.getLogger(MESSAGE_DUMPS).setLevel(max(logging.INFO,
                                                      logging.getLogger().getEffectiveLevel()))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._application.answering, args=(self._stop,),
                                        name="eir-s13-answer", daemon=True)

    def start(self) -> None:
        """Listen and answer. Raises OSError when the address cannot be had."""
        self.node.start()
        self._thread.start()

    def alive(self) -> bool:
        """Whether requests are still answered."""
        return self._thread.is_alive()

    def stop(self) -> None:
        self.node.stop(wait_timeout=DPA_WAIT_S)
        self._stop.set()
        self._thread.join()
