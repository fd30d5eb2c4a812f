"""S13 ME-Identity-Check: serve's S13 node on one core, against a trivial answerer on the same
Diameter stack on the same core.

    python bench/s13.py [--devices 10000000] [--connections 4] [--window 16] [--seconds 15]
                        [--rate 20000]

Saves a synthetic country of --devices as the snapshot and starts, pinned to the first core,
the S13 node serve runs (enforcer/frontends/s13: the uvloop node, requests read and answers
written by hand, a loop turn's checks decided together by the N5g-eir decision) over that
state; then, on the same core, the same node with an answerer that reads each request and
answers WHITELISTED without deciding. The load runs on the second
core, here: --connections Diameter connections, each past its capabilities exchange, each
keeping --window ME-Identity-Check-Requests in flight (IMEI and IMSI from attach traffic in
the decision benchmark's mix; a malformed IMEI sent as "123": 5004), for --seconds on each
server after a warm-up: what the server can answer (answers_per_s, baseline_answers_per_s,
ratio). Kept that deep, a request waits behind the whole window, so its latency says how deep
the window is, not how fast an answer comes. Then, as an MME sends its checks (as its
attaches come, answered or not), --rate requests a second for --seconds over the same
connections: the latency of an answer at that load is p99_ms. An answer's latency is from its
request's write to its read. The last line is JSON: answers_per_s, p99_ms,
baseline_answers_per_s, ratio, and the detail.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from measure import emit, say

from diameter.message import Message
from diameter.message.avp.grouped import TerminalInformation, VendorSpecificApplicationId
from diameter.message.commands import CapabilitiesExchangeRequest, MeIdentityCheckRequest
from enforcer.clock import SystemClock
from enforcer.config import load_config
from enforcer.embedded.services import LOOPBACK, free_port
from enforcer.embedded.synth import CountrySpec, TrafficMix, attach_traffic, build_country
from enforcer.engine.events import NO_KEY
from enforcer.engine.imei import imei_rules
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.files.snapshots import load_snapshot, save_snapshot
from enforcer.frontends.s13.answers import S13Answers
from enforcer.frontends.s13.check import (S13_APPLICATION_ID, VENDOR_3GPP, EquipmentStatus,
                                          S13Answer, DIAMETER_SUCCESS)
from enforcer.frontends.s13.node import S13Server
from enforcer.frontends.s13.wire import (AVP_EQUIPMENT_STATUS, AVP_EXPERIMENTAL_RESULT,
                                         AVP_RESULT_CODE)
from metrics.s13 import S13Metrics
from prometheus_client import CollectorRegistry
from rules.policy import load_policy

START_MS = 1_790_000_000_000
EIR_HOST, REALM = "eir.bench.example", "bench.example"
MALFORMED_IMEI = "123"  # what a malformed attach is sent as: 5004
HEADER_BYTES = 20
HOP_BY_HOP = slice(12, 16)
WARMUP_S = 3
READY_TIMEOUT_S = 600.0
POLL_S = 0.2
GOAL_ANSWERS_PER_S = 20_000
GOAL_P99_MS = 5.0
PACE_S = 0.0005  # the paced load's look for answers between its sends
DRAIN_S = 1.0
WHITELISTED = S13Answer(EquipmentStatus.WHITELISTED, DIAMETER_SUCCESS, experimental=False)


class Constant(S13Answers):
    """The trivial answerer: every request read as serve reads it, answered WHITELISTED
    without a decision."""

    def _decide(self, checks, received):
        return [self._write(WHITELISTED)] * len(checks)


def peer_host(n: int) -> str:
    return f"mme{n}.{REALM}"


def run_server(kind: str, state_dir: str, port: int, peers: int) -> None:
    """The child: one S13 node on this process's core until SIGTERM."""
    config = load_config(environ={
        "EIR_S13__ENABLED": "true", "EIR_S13__BIND": LOOPBACK, "EIR_S13__PORT": str(port),
        "EIR_S13__ORIGIN_HOST": EIR_HOST, "EIR_S13__ORIGIN_REALM": REALM,
        "EIR_S13__PEERS": ",".join(f"aaa://{peer_host(n)}" for n in range(peers))})
    holder = StateHolder(load_snapshot(Path(state_dir), load_policy()))
    metrics = S13Metrics(CollectorRegistry())
    kind_of = Constant if kind == "baseline" else S13Answers
    answers = kind_of(holder, imei_rules(config), SystemClock(), metrics,
                      config.s13.origin_host, config.s13.origin_realm)
    server = S13Server(config.s13, answers, metrics)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop()


@contextmanager
def server(kind: str, state_dir: Path, port: int, peers: int, core: int,
           log: Path) -> Iterator[subprocess.Popen]:
    command = ["taskset", "-c", str(core), sys.executable, __file__, "--child", kind,
               "--state", str(state_dir), "--port", str(port), "--peers", str(peers)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out,  # noqa: S603
                                   text=True)
        try:
            line = process.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"bench/s13.py: the {kind} server did not start: "
                                 f"{log.read_text()[-2000:]}")
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


def requests_of(country, n: int, seed: int) -> list[bytes]:
    """n ME-Identity-Check-Requests, encoded, from attach traffic in the default mix."""
    batch = attach_traffic(country, n, TrafficMix(), seed, START_MS)
    out = []
    for i, (key, imsi) in enumerate(zip(batch.imei_key.tolist(), batch.imsi.tolist())):
        request = MeIdentityCheckRequest()
        request.header.application_id = S13_APPLICATION_ID
        request.header.end_to_end_identifier = i
        request.session_id = f"{peer_host(0)};1;{i}"
        request.auth_session_state = 1
        request.origin_host = peer_host(0).encode()
        request.origin_realm = request.destination_realm = REALM.encode()
        request.terminal_information = TerminalInformation(
            imei=MALFORMED_IMEI if key == int(NO_KEY) else f"{key:014d}",
            software_version="01")
        request.user_name = str(imsi)
        out.append(request.as_bytes())
    return out


def connect(port: int, n: int) -> socket.socket:
    cer = CapabilitiesExchangeRequest()
    cer.header.hop_by_hop_identifier = cer.header.end_to_end_identifier = 1
    cer.origin_host, cer.origin_realm = peer_host(n).encode(), REALM.encode()
    cer.host_ip_address = [LOOPBACK]
    cer.vendor_id = VENDOR_3GPP
    cer.product_name = "bench-mme"
    cer.auth_application_id = [S13_APPLICATION_ID]
    cer.vendor_specific_application_id = [VendorSpecificApplicationId(
        vendor_id=VENDOR_3GPP, auth_application_id=S13_APPLICATION_ID)]
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(cer.as_bytes())
    header = sock.recv(HEADER_BYTES, socket.MSG_WAITALL)
    length = struct.unpack("!I", header[:4])[0] & 0xFFFFFF
    cea = Message.from_bytes(header + sock.recv(length - HEADER_BYTES, socket.MSG_WAITALL))
    if cea.result_code != DIAMETER_SUCCESS:
        raise SystemExit(f"bench/s13.py: CER refused with {cea.result_code}")
    sock.setblocking(False)
    return sock


class _Load:
    """The load's side of the connections: requests written with their hop-by-hop
    identifiers, answers read back with their latencies and results."""

    def __init__(self, port: int, requests: list[bytes], connections: int) -> None:
        self.socks = [connect(port, n) for n in range(connections)]
        self.selector = selectors.DefaultSelector()
        for sock in self.socks:
            self.selector.register(sock, selectors.EVENT_READ)
        self.requests = requests
        self.sent_at: dict[int, float] = {}
        self.buffers = {s: b"" for s in self.socks}
        self.latencies: list[float] = []
        self.results: Counter = Counter()
        self.hop = 1000
        self.at = 0

    def send(self, sock: socket.socket, k: int) -> None:
        data = bytearray()
        for _ in range(k):
            self.hop += 1
            message = bytearray(self.requests[self.at % len(self.requests)])
            self.at += 1
            message[HOP_BY_HOP] = struct.pack("!I", self.hop)
            self.sent_at[self.hop] = time.perf_counter()
            data += message
        sock.setblocking(True)
        sock.sendall(bytes(data))
        sock.setblocking(False)

    def read(self, timeout: float) -> list[tuple[socket.socket, int]]:
        """(connection, answers read) for each connection that had some within `timeout`."""
        out = []
        for key, _ in self.selector.select(timeout=timeout):
            sock = key.fileobj
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise SystemExit("bench/s13.py: the server closed a connection")
            data = self.buffers[sock] + chunk
            answered = 0
            while len(data) >= HEADER_BYTES:
                length = struct.unpack("!I", data[:4])[0] & 0xFFFFFF
                if len(data) < length:
                    break
                now = time.perf_counter()
                (hop_id,) = struct.unpack("!I", data[HOP_BY_HOP])
                self.latencies.append(now - self.sent_at.pop(hop_id))
                self.results[_result(data[:length])] += 1
                data = data[length:]
                answered += 1
            self.buffers[sock] = data
            out.append((sock, answered))
        return out

    def figures(self, elapsed: float) -> dict[str, object]:
        for sock in self.socks:
            sock.close()
        latencies = sorted(self.latencies)
        return {"answers": len(latencies), "answers_per_s": len(latencies) / elapsed,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
                "unanswered": len(self.sent_at), "results": dict(self.results)}


def load(port: int, requests: list[bytes], connections: int, window: int,
         seconds: float) -> dict[str, object]:
    """Every connection kept `window` requests deep for `seconds`: what the server can
    answer, its latency that of a queue `window` deep."""
    run = _Load(port, requests, connections)
    for sock in run.socks:
        run.send(sock, window)
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for sock, answered in run.read(timeout=1.0):
            if answered and time.perf_counter() < deadline:
                run.send(sock, answered)
    return run.figures(time.perf_counter() - began)


def paced(port: int, requests: list[bytes], connections: int, rate: float,
          seconds: float) -> dict[str, object]:
    """Requests sent at `rate` a second for `seconds`, over the connections in turn, whether
    answered or not, as an MME's checks come with its attaches: the latency of an answer at
    that load. Answers still owed at the end are waited for DRAIN_S, then counted."""
    run = _Load(port, requests, connections)
    began = time.perf_counter()
    deadline = began + seconds
    sent = 0
    while (now := time.perf_counter()) < deadline:
        due = int((now - began) * rate) - sent
        for n in range(min(due, len(run.socks))):
            run.send(run.socks[(sent + n) % len(run.socks)],
                     due // len(run.socks) + (n < due % len(run.socks)))
        sent += max(due, 0)
        run.read(timeout=PACE_S)
    drained = time.perf_counter() + DRAIN_S
    while run.sent_at and time.perf_counter() < drained:
        run.read(timeout=PACE_S)
    return run.figures(seconds)


def _result(answer: bytes) -> str:
    """An answer's Equipment-Status, or its result code, read off its top-level AVPs by hand:
    python-diameter's decoder would cost the load more than the server's answer."""
    at, code = HEADER_BYTES, None
    while at < len(answer):
        avp_code, flags_length = struct.unpack_from("!II", answer, at)
        length = flags_length & 0xFFFFFF
        data = at + (12 if flags_length >> 31 else 8)
        if avp_code == AVP_EQUIPMENT_STATUS:
            return EquipmentStatus(struct.unpack_from("!I", answer, data)[0]).name
        if avp_code == AVP_RESULT_CODE:
            code = struct.unpack_from("!I", answer, data)[0]
        elif avp_code == AVP_EXPERIMENTAL_RESULT:  # Vendor-Id, then Experimental-Result-Code
            code = struct.unpack_from("!I", answer, data + 20)[0]
        at += (length + 3) & ~3
    return str(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--window", type=int, default=16,
                        help="requests in flight on each connection")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=GOAL_ANSWERS_PER_S,
                        help="requests a second of the paced run, whose p99 is p99_ms")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--child", choices=["s13", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_server(args.child, args.state, args.port, args.peers)
        return
    if shutil.which("taskset") is None:
        raise SystemExit("bench/s13.py needs `taskset`: apt-get install util-linux")
    allowed = sorted(os.sched_getaffinity(0))
    server_core, load_core = allowed[0], allowed[-1]
    os.sched_setaffinity(0, {load_core})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="eir-s13-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        started = time.perf_counter()
        country = build_country(CountrySpec(devices=args.devices))
        state_dir = scratch / "state"
        save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                      state_dir)
        requests = requests_of(country, args.requests, args.seed)
        del country
        say(f"country of {args.devices:,} devices built and saved, {len(requests):,} "
            f"requests encoded in {time.perf_counter() - started:.1f} s")
        rows, at_rate = {}, {}
        for kind in ("s13", "baseline"):
            port = free_port()
            started = time.perf_counter()
            with server(kind, state_dir, port, args.connections, server_core,
                        scratch / f"{kind}.log"):
                say(f"{kind} ready on core {server_core} in "
                    f"{time.perf_counter() - started:.1f} s; load on core {load_core}")
                load(port, requests, args.connections, args.window, WARMUP_S)
                rows[kind] = load(port, requests, args.connections, args.window, args.seconds)
                at_rate[kind] = paced(port, requests, args.connections, args.rate,
                                      args.seconds)
            say(f"{kind}: {rows[kind]['answers_per_s']:,.0f} answers/s with "
                f"{args.connections} x {args.window} in flight (p99 "
                f"{rows[kind]['p99_ms']:.2f} ms); at {args.rate:,.0f} a second paced, "
                f"{at_rate[kind]['answers_per_s']:,.0f} answered, p50 "
                f"{at_rate[kind]['p50_ms']:.2f} ms p99 {at_rate[kind]['p99_ms']:.2f} ms, "
                f"{at_rate[kind]['unanswered']} unanswered; {rows[kind]['results']}")
    s13, baseline = rows["s13"], rows["baseline"]
    s13_paced = at_rate["s13"]
    emit({"devices": args.devices, "connections": args.connections, "window": args.window,
          "seconds": args.seconds, "server_core": server_core, "load_core": load_core,
          "results": s13["results"],
          "in_flight": {"p50_ms": round(s13["p50_ms"], 3), "p99_ms": round(s13["p99_ms"], 3),
                        "baseline_p99_ms": round(baseline["p99_ms"], 3)},
          "paced": {"rate": args.rate,
                    "answers_per_s": round(s13_paced["answers_per_s"]),
                    "p50_ms": round(s13_paced["p50_ms"], 3),
                    "unanswered": s13_paced["unanswered"],
                    "baseline_p99_ms": round(at_rate["baseline"]["p99_ms"], 3)},
          "goal": {"answers_per_s": GOAL_ANSWERS_PER_S, "p99_ms": GOAL_P99_MS,
                   "met": s13["answers_per_s"] >= GOAL_ANSWERS_PER_S
                   and args.rate >= GOAL_ANSWERS_PER_S and not s13_paced["unanswered"]
                   and s13_paced["p99_ms"] <= GOAL_P99_MS},
          "answers_per_s": round(s13["answers_per_s"]),
          "p99_ms": round(s13_paced["p99_ms"], 3),
          "baseline_answers_per_s": round(baseline["answers_per_s"]),
          "ratio": round(s13["answers_per_s"] / baseline["answers_per_s"], 3)})


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("bench/s13.py: interrupted; everything it started is stopped") from None
