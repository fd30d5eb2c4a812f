"""N5g-eir equipment checks: `eir-enforcer serve` on one core under wrk, against a trivial
application on serve's own HTTP transport, on the same core.

    python bench/eic.py [--devices 10000000] [--connections 16 32 48 64] [--seconds 15]

Starts an embedded PostgreSQL (serve reads nothing else), migrates it, saves a synthetic
country of --devices as the snapshot, and starts `eir-enforcer serve` pinned to the first
core. The requests are --paths GET /n5g-eir-eic/v1/equipment-status paths made from attach
traffic in the decision benchmark's mix (94 % owners: WHITELISTED; 3 % another cartable's
SIM: GREYLISTED; 1 % unregistered devices; 0.5 % black-listed IMEIs: BLACKLISTED; 0.5 %
roamers; 1 % malformed, sent as the invalid PEI `imei-123`: 400), which a wrk Lua script
cycles through. wrk runs on the second core with one thread: a short warm-up, then
--seconds at each connection count on serve and at once on the baseline, --rounds times
(the best of each kept). The baseline: serve's HTTP transport (enforcer/frontends/transport.py)
answering `{"status":"WHITELISTED"}` to everything, on the same core (each server idle
while the other is loaded). The last line is JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

from measure import cpu_seconds, emit, say

from enforcer.engine.imei import imei_rules
from enforcer.config import load_config
from enforcer.db.migrate import migrate
from enforcer.frontends.eic import Problem, EirResponseData, answer_checks, read_check
from enforcer.frontends.server import CHECK_PATH
from enforcer.engine.events import NO_KEY
from enforcer.engine.imei import luhn_digit
from enforcer.embedded.services import LOOPBACK, EmbeddedPostgres, free_port
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.embedded.synth import CountrySpec, TrafficMix, attach_traffic, build_country
from rules.policy import load_policy

START_MS = 1_790_000_000_000
INVALID_PEI = "imei-123"  # what a malformed attach is sent as: a 400
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.2
WARMUP_S = 3
BACKLOG = 1024  # eic.backlog's default: the baseline gets serve's
GOAL_REQUESTS_PER_S = 20_000
GOAL_P99_MS = 5.0
WRK_TIMEOUT_S = 60  # wrk's own: answers slower than this would be counted as timeouts
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

# One wrk thread: `init` reads the paths once, `request` cycles through them.
WRK_SCRIPT = """
local paths = {}
local count = 0
local at = 0

init = function(args)
  for line in io.lines(%(paths)s) do
    count = count + 1
    paths[count] = line
  end
end

request = function()
  at = at + 1
  if at > count then at = 1 end
  return wrk.format("GET", paths[at])
end
"""

# The trivial application: serve's own HTTP transport answering a constant, so the ratio is
# what the checks cost on top of the HTTP.
BASELINE_APP = """
import asyncio
import sys

import uvloop

from enforcer.frontends.transport import Response, serve_checks

WHITE = Response(200, "application/json", b'{"status":"WHITELISTED"}')


class Constant:
    def answer(self, requests):
        return [WHITE] * len(requests)


uvloop.run(serve_checks(Constant(), sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                      asyncio.Event()))
"""


class BenchError(RuntimeError):
    pass


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"bench/eic.py needs `{name}`: apt-get install {package}")
    return path


def cores() -> tuple[int, int]:
    """The server's core and the load's: the first two this process may run on."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        say(f"only core {allowed[0]} available: server and wrk share it, figures are low")
        return allowed[0], allowed[0]
    return allowed[0], allowed[1]


def core_times() -> dict[int, tuple[int, int, int]]:
    """Each core's (idle, stolen by the hypervisor, total) clock ticks so far."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d", line):
            name, *ticks = line.split()
            values = [int(t) for t in ticks]
            times[int(name[3:])] = (values[3] + values[4], values[7], sum(values[:8]))
    return times


def busy_since(before: dict[int, tuple[int, int, int]], core: int) -> tuple[float, float]:
    """The shares of the time since `before` that `core` was busy, and stolen (the machine
    is a virtual one: the host may run something else on its core)."""
    after = core_times()
    idle, stolen, total = (after[core][i] - before[core][i] for i in (0, 1, 2))
    return (1 - idle / total, stolen / total) if total else (0.0, 0.0)


def busy(cores: tuple[int, int], seconds: float = 2.0) -> list[float]:
    """The share of each core something else kept busy over `seconds` (the machine is
    shared: another process on the cores makes every figure low)."""
    before = core_times()
    time.sleep(seconds)
    return [round(busy_since(before, core)[0], 2) for core in cores]


@contextmanager
def postgres(scratch: Path) -> Iterator[EmbeddedPostgres]:
    db = EmbeddedPostgres(scratch / "postgres", free_port(), "eir")
    try:
        db.start()
        yield db
    finally:
        db.stop()


def _get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def server(name: str, command: list[str], env: dict[str, str], log: Path, port: int,
           ready_path: str) -> Iterator[subprocess.Popen]:
    """A server process, until it answers 200 at `ready_path`; terminated afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - taskset and our own Python
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise BenchError(f"{name} exited ({process.returncode}):\n{_tail(log)}")
            try:
                if _get(port, ready_path)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not ready after {READY_TIMEOUT_S:.0f} s:\n{_tail(log)}")
            time.sleep(POLL_S)
        yield process
    finally:
        _end(process)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_paths(country, n: int, seed: int) -> tuple[list[str], Counter]:
    """n request paths from attach traffic in the default mix, and the answers they should
    get (decided here, as serve decides them)."""
    batch = attach_traffic(country, n, TrafficMix(), seed, START_MS)
    paths = []
    for key, imsi, msisdn in zip(batch.imei_key.tolist(), batch.imsi.tolist(),
                                 batch.msisdn.tolist()):
        if key == int(NO_KEY):
            pei = INVALID_PEI
        else:
            digits = f"{key:014d}"
            pei = f"imei-{digits}{luhn_digit(digits)}"
        query = urlencode({"pei": pei, "supi": f"imsi-{imsi}", "gpsi": f"msisdn-{msisdn}"})
        paths.append(f"{CHECK_PATH}?{query}")
    return paths, expected_answers(country, paths)


def expected_answers(country, paths: list[str]) -> Counter:
    rules = imei_rules(load_config(environ={}))
    state = EnforcementState(country.lists, country.devices, load_policy())
    read = [read_check(dict(parse_qsl(urlsplit(p).query)), rules) for p in paths]
    checks = [c for c in read if not isinstance(c, Problem)]
    answers = Counter("bad_request" for c in read if isinstance(c, Problem))
    for answer in answer_checks(checks, state, time.time_ns() // 1_000_000):
        answers["unknown" if not isinstance(answer, EirResponseData) else answer.status] += 1
    return answers


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-z]+)", value).groups()
    return float(number) * UNITS_MS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if rate is None:
        raise BenchError(f"no Requests/sec in wrk's output:\n{out}")
    figures = {"requests_per_s": float(rate.group(1))}
    for share in (50, 90, 99):
        found = re.search(rf"^\s+{share}%\s+([0-9.]+[a-z]+)\s*$", out, re.M)
        if found is None:
            raise BenchError(f"no {share}% latency in wrk's output:\n{out}")
        figures[f"p{share}_ms"] = _ms(found.group(1))
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    figures["requests"] = int(total.group(1)) if total else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    figures["socket_errors"] = sum(int(g) for g in errors.groups()) if errors else 0
    return figures


def run_wrk(wrk: list[str], script: Path, port: int, connections: int,
            seconds: int) -> dict[str, float]:
    """wrk's figures, and the share of its core wrk itself used."""
    rusage = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - taskset, wrk and our own arguments
        [*wrk, "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT_S}s",
         "--latency", "-s", str(script), f"http://{LOOPBACK}:{port}"],
        capture_output=True, text=True, timeout=seconds + 120, stdin=subprocess.DEVNULL)
    if result.returncode:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr}{result.stdout}")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime - rusage.ru_utime - rusage.ru_stime
    return {**parse_wrk(result.stdout), "wrk_cpu": cpu / (time.perf_counter() - wall)}


def metrics(port: int) -> dict[str, float]:
    status, body = _get(port, "/metrics")
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines() if line and not line.startswith("#")}


def answers_of(sample: dict[str, float]) -> dict[str, int]:
    found = (re.fullmatch(r'eir_eic_answers_total\{answer="([^"]+)"\}', k) for k in sample)
    return {m.group(1): int(sample[m.group(0)]) for m in found if m}


def load_once(name: str, wrk: list[str], script: Path, port: int, pid: int,
              cores: tuple[int, int], connections: int, seconds: int,
              sample=None) -> dict[str, float]:
    """wrk at one connection count, with the share of its core the server used and the
    share of each core that others took (0 unless the machine is shared); with `sample`,
    serve's batch figures over the run from its /metrics."""
    before = sample() if sample else None
    cpu, wall, ticks = cpu_seconds(pid), time.perf_counter(), core_times()
    row = {"connections": connections, **run_wrk(wrk, script, port, connections, seconds)}
    row["server_cpu"] = round((cpu_seconds(pid) - cpu) / (time.perf_counter() - wall), 2)
    if cores[0] != cores[1]:
        (server_busy, server_stolen), (load_busy, load_stolen) = (
            busy_since(ticks, core) for core in cores)
        row["stolen"] = [round(server_stolen, 2), round(load_stolen, 2)]
        # Busy neither with the server or wrk nor stolen: other processes, and the kernel's
        # network work for both (softirq time, charged to no process).
        row["others_busy"] = [
            round(max(server_busy - server_stolen - row["server_cpu"], 0), 2),
            round(max(load_busy - load_stolen - row["wrk_cpu"], 0), 2)]
    if sample:
        after = sample()
        checks = after["eir_eic_batch_checks_sum"] - before["eir_eic_batch_checks_sum"]
        batches = after["eir_eic_batch_checks_count"] - before["eir_eic_batch_checks_count"]
        spent = (after["eir_eic_batch_duration_seconds_sum"]
                 - before["eir_eic_batch_duration_seconds_sum"])
        row["mean_batch"] = round(checks / batches, 2) if batches else 0.0
        row["decide_us_per_check"] = round(spent / checks * 1e6, 2) if checks else 0.0
    say(f"{name}, {connections} connections: {row['requests_per_s']:,.0f} requests/s, "
        f"latency p50 {row['p50_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms, p99 "
        f"{row['p99_ms']:.2f} ms; non-2xx {row['non_2xx']:,} of {row['requests']:,}, socket "
        f"errors {row['socket_errors']}; server CPU {row['server_cpu']:.0%} of its core, wrk "
        f"{row['wrk_cpu']:.0%} of its; of the cores, stolen {row.get('stolen')}, others "
        f"{row.get('others_busy')}"
        + (f"; mean batch {row['mean_batch']}, deciding {row['decide_us_per_check']} µs "
           "a check" if sample else ""))
    return row


def goal(rows: list[dict[str, object]]) -> dict[str, object]:
    """The best row meeting both goals; failing that the fastest within the latency goal,
    failing that the fastest."""
    def fast(r):
        return r["requests_per_s"] >= GOAL_REQUESTS_PER_S

    def quick(r):
        return r["p99_ms"] <= GOAL_P99_MS

    best = max([r for r in rows if fast(r) and quick(r)] or [r for r in rows if quick(r)]
               or rows, key=lambda r: r["requests_per_s"])
    return {"connections": best["connections"], "requests_per_s_goal": GOAL_REQUESTS_PER_S,
            "p99_ms_goal": GOAL_P99_MS, "requests_per_s_met": fast(best),
            "p99_ms_met": quick(best), "met": fast(best) and quick(best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000_000)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 32, 48, 64])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--paths", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every connection count this many times, keep the best")
    args = parser.parse_args()
    wrk_bin, taskset = tool("wrk", "wrk"), tool("taskset", "util-linux")
    server_core, load_core = cores()
    pinned = [taskset, "-c", str(server_core)]
    wrk = [taskset, "-c", str(load_core), wrk_bin]
    machine_cores = len(os.sched_getaffinity(0))
    # This process (and the PostgreSQL it starts) keep off the server's core.
    os.sched_setaffinity(0, {load_core})
    quiet = busy((server_core, load_core))
    say(f"cores {server_core} and {load_core} busy before the run: "
        + ", ".join(f"{b:.0%}" for b in quiet))
    # SIGTERM unwinds like Ctrl-C: every process started here is ended on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="eir-eic-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        db = stack.enter_context(postgres(scratch))
        migrate(db.dsn)
        started = time.perf_counter()
        country = build_country(CountrySpec(devices=args.devices))
        state_dir = scratch / "state"
        save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                      state_dir)
        say(f"country of {args.devices:,} devices built and saved in "
            f"{time.perf_counter() - started:.1f} s")
        paths, expected = check_paths(country, args.paths, args.seed)
        del country
        paths_file = scratch / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        script = scratch / "cycle.lua"
        script.write_text(WRK_SCRIPT % {"paths": json.dumps(str(paths_file))})
        say(f"{len(paths):,} request paths, expected answers {dict(expected.most_common())}")

        port, trivial_port = free_port(), free_port()
        env = {**os.environ, "EIR_POSTGRES__DSN": db.dsn, "EIR_STATE__DIR": str(state_dir),
               "EIR_EIC__PORT": str(port), "EIR_EIC__BIND": LOOPBACK,
               "EIR_EIC__BACKLOG": str(BACKLOG)}
        app = scratch / "trivial_app.py"
        app.write_text(BASELINE_APP)
        started = time.perf_counter()
        serving = stack.enter_context(server(
            "serve", [*pinned, sys.executable, "-m", "enforcer.app.cli", "serve"], env,
            scratch / "serve.log", port, "/readyz"))
        say(f"serve ready on core {server_core} in {time.perf_counter() - started:.1f} s; "
            f"wrk on core {load_core}")
        trivial = stack.enter_context(server(
            "trivial app",
            [*pinned, sys.executable, str(app), LOOPBACK, str(trivial_port), str(BACKLOG)],
            {**os.environ}, scratch / "baseline.log", trivial_port, CHECK_PATH))
        on_cores = (server_core, load_core)
        for p in (port, trivial_port):
            run_wrk(wrk, script, p, max(args.connections), WARMUP_S)
        # Each connection count on serve and then at once on the trivial app (idle while the
        # other is loaded), so that both see the same machine; the best of --rounds each.
        served: dict[int, dict[str, float]] = {}
        baseline: dict[int, dict[str, float]] = {}
        for _ in range(args.rounds):
            for c in args.connections:
                row = load_once("serve", wrk, script, port, serving.pid, on_cores, c,
                                args.seconds, lambda: metrics(port))
                if c not in served or row["requests_per_s"] > served[c]["requests_per_s"]:
                    served[c] = row
                row = load_once("trivial app", wrk, script, trivial_port, trivial.pid,
                                on_cores, c, args.seconds)
                if c not in baseline or row["requests_per_s"] > baseline[c]["requests_per_s"]:
                    baseline[c] = row
        final = metrics(port)
        mean_batch = final["eir_eic_batch_checks_sum"] / final["eir_eic_batch_checks_count"]
        answers = answers_of(final)
        say(f"serve's answers (warm-up included): {answers}; mean batch {mean_batch:.2f} checks")

    rows = []
    for s, b in ((served[c], baseline[c]) for c in args.connections):
        ratio = s["requests_per_s"] / b["requests_per_s"]
        say(f"{s['connections']} connections: serve / trivial app = {ratio:.3f}")
        rows.append({"connections": s["connections"], "requests_per_s": round(s["requests_per_s"]),
                     "p50_ms": round(s["p50_ms"], 3), "p90_ms": round(s["p90_ms"], 3),
                     "p99_ms": round(s["p99_ms"], 3),
                     "baseline_requests_per_s": round(b["requests_per_s"]),
                     "baseline_p99_ms": round(b["p99_ms"], 3), "ratio": round(ratio, 3),
                     "mean_batch": s["mean_batch"],
                     "decide_us_per_check": s["decide_us_per_check"],
                     "server_cpu": s["server_cpu"], "baseline_server_cpu": b["server_cpu"],
                     "wrk_cpu": round(s["wrk_cpu"], 2),
                     "baseline_wrk_cpu": round(b["wrk_cpu"], 2),
                     "stolen": s.get("stolen"), "baseline_stolen": b.get("stolen"),
                     "others_busy": s.get("others_busy"),
                     "baseline_others_busy": b.get("others_busy"),
                     "requests": s["requests"], "non_2xx": s["non_2xx"],
                     "socket_errors": s["socket_errors"] + b["socket_errors"]})
    emit({"cores": machine_cores, "server_core": server_core,
          "load_core": load_core, "devices": args.devices, "paths": len(paths),
          "seconds": args.seconds, "rounds": args.rounds, "busy_before": quiet, "results": rows,
          "mean_batch": round(mean_batch, 2), "answers": answers,
          "expected_mix": dict(expected), "goal": goal(rows)})


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"bench/eic.py: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("bench/eic.py: interrupted; everything it started is stopped") from None
