"""The processes an operator runs, at national scale: a real `eir-enforcer run` and a real
`eir-enforcer serve` over the national state, with every feature on, after the country's
attaches: resident memory, ready seconds, attach throughput.

    python bench/national.py [--imeis 300000000] [--attaches 10000000] [--dir DIR]

Stages:
  build  (a fresh process, its memory apart) builds a synthetic country of --imeis IMEIs on
         --imeis / 2 devices (every one dual-SIM, as `bench/country.py`), with its owners,
         national-ID cartables, operator SIMs and black list, adds --cut-pairs cut (IMEI,
         IMSI) pairs, saves the snapshot, and writes --attaches attaches of the decision
         benchmark's mix (94 % owners, 3 % another cartable's SIM, 1 % unregistered, 1 %
         malformed, 0.5 % black-listed, 0.5 % roamers) with CLONE_SHARE of the IMEIs they
         name each seen with as many subscribers' SIMs as flag an IMEI;
  run    (this process) starts the embedded broker and PostgreSQL, starts `eir-enforcer run`
         on the snapshot with the product's defaults (clone detection on, the sighting cache
         at history.dedupe_pairs, notices opened and swept), produces the attaches to its
         four-partition topic as fast as the broker takes them, waits until the worker has
         decided them all (its rate from the first decided to the last, read from its
         /metrics while the bench produces), SIGKILLs it and starts it again; then starts
         `eir-enforcer serve` on the same snapshot and asks it for CHECKS equipment
         statuses;
  next   (a fresh process) saves the snapshot again as the next generation (the same lists
         and registry in new files, as a fold or an import leaves them, in the page cache as
         their save wrote them): after the attaches the worker adopts one (its reconcile
         job, every five seconds here) and decides ADOPT_ATTACHES
         more (the first of them moves its clone window to the new generation); `serve`,
         after its checks, adopts another (its follower) and answers the checks again. Each
         process's resident memory is read every RSS_EVERY_S meanwhile: `*_adopt_peak_rss_gb`
         (issue 21 part 1: an adoption used to load the new generation beside the old one).
The jobs that make a new generation themselves (fold, imports) are off: a fold's and an
import's memory at this scale are `bench/importing.py`'s. The registry's year of changes
is not replayed: the state a fold leaves has the snapshot's shape, which the build makes.
`clone_window_gb` is the worker's anonymous resident growth over the attaches: the clone
window as the attaches fill it, with what else they grow (the sighting cache, the broker
client's buffers); the rest of its growth is the snapshot's pages the decisions map
(`worker_rss_file_gb` after them). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import msgspec
import numpy as np
from confluent_kafka import Producer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from measure import (embedded_services, emit, peak_rss_mb, process_peak_kib,
                     process_rss_kib, run_stage, say, status_kib, wait_ready)

from enforcer.db.migrate import migrate
from enforcer.embedded.services import free_port
from enforcer.frontends.server import CHECK_PATH
from enforcer.embedded.synth import (CountrySpec, TrafficMix, attach_traffic, build_country,
                                     home_imsi, owned_rows)
from enforcer.engine.imei import luhn_digit
from enforcer.engine.events import NO_KEY
from enforcer.engine.keyindex import ABSENT
from enforcer.engine.pairset import PairSet
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import load_snapshot, save_snapshot
from rules.policy import default_clones, load_policy
from tests.harness.faults import MALFORMED_IMEI, WorkerProcess

START_MS = 1_790_000_000_000  # the attaches' time and the worker's clock: a fixed day
ATTACH_TOPIC = "attach-national"
PARTITIONS = 4
CLONE_SHARE = 0.001  # of the IMEIs the attaches name: bench/clones.py's mix
CUT_SEED, CLONE_SEED = 11, 31
TRAFFIC = "attaches.npz"
PRODUCE_CHUNK = 100_000
READY_TIMEOUT_S = 900
DRAIN_TIMEOUT_S = 3600
ADOPT_TIMEOUT_S = 900
ADOPT_ATTACHES = 200_000
RSS_EVERY_S = 0.1
# The worker's reconcile job every five seconds (wall time, as APScheduler runs it): it finds
# the next generation soon after its save.
RECONCILE_CRON = "*/5 * * * * *"
WORKER_GENERATION, SERVE_GENERATION = "eir_lists_generation", "eir_eic_state_generation"
POLL_S = 0.5
CHECKS = 1_000
INVALID_PEI = "imei-123"  # what a malformed attach is asked as
CONSUMED = "eir_events_consumed_total"
FLAGS = "eir_clone_flags_total"
KIB_PER_GIB = 1024 ** 2


def stage_build(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    country = build_country(CountrySpec(devices=args.imeis // 2, imeis=args.imeis))
    rng = np.random.default_rng(CUT_SEED)
    lists = country.lists
    cut = lists.white_index.keys_at(owned_rows(rng, country.devices, args.cut_pairs))
    cut_imsis = home_imsi(country.subscribers[rng.integers(0, len(country.subscribers),
                                                           len(cut))])
    lists = replace(lists, cut_pairs=PairSet.from_pairs(cut, cut_imsis))
    build_s = time.perf_counter() - started
    batch = attach_traffic(country, args.attaches, TrafficMix(), args.seed, START_MS, step_ms=0)
    keys, imsis, msisdns = batch.imei_key, batch.imsi, batch.msisdn
    clones = _clones(country, keys, np.random.default_rng(CLONE_SEED))
    keys = np.concatenate([keys, clones[0]])
    imsis = np.concatenate([imsis, clones[1]])
    msisdns = np.concatenate([msisdns, clones[2]])
    order = np.random.default_rng(args.seed).permutation(len(keys))
    np.savez(args.dir / TRAFFIC, imei_key=keys[order], imsi=imsis[order],
             msisdn=msisdns[order])
    save_snapshot(EnforcementState(lists, country.devices, load_policy()), args.dir / "state")
    return {"build_s": round(build_s, 1), "attaches": len(keys), "clone_imeis": len(clones[0])
            // default_clones().distinct_imsis, "build_peak_rss_gb": round(peak_rss_mb() / 1024, 2)}


def _clones(country, keys: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CLONE_SHARE of the owned IMEIs in `keys`, each seen with clones.distinct_imsis
    subscribers' SIMs more: (IMEI keys, IMSIs, MSISDNs)."""
    named = np.unique(keys[keys != NO_KEY])
    owned = named[country.lists.white_index.rows(named) != ABSENT]
    picked = rng.choice(owned, int(len(owned) * CLONE_SHARE), replace=False)
    sims = default_clones().distinct_imsis
    msisdns = country.subscribers[rng.integers(0, len(country.subscribers), len(picked) * sims)]
    return np.repeat(picked, sims), home_imsi(msisdns), msisdns


def stage_next(args: argparse.Namespace) -> dict:
    """The snapshot saved again as the next generation, in files of its own."""
    started = time.perf_counter()
    state = load_snapshot(args.dir / "state", load_policy())
    lists = replace(state.lists, generation=state.generation + 1)
    save_snapshot(replace(state, lists=lists), args.dir / "state")
    return {"generation": lists.generation, "save_s": round(time.perf_counter() - started, 1)}


def produce(bootstrap: str, traffic: Path, limit: int | None = None) -> tuple[int, float]:
    """The traffic file's attaches (its first `limit`, or every one) on ATTACH_TOPIC, keyed
    by IMEI: (count, seconds)."""
    data = np.load(traffic)
    keys, imsis, msisdns = (data[name][:limit] for name in ("imei_key", "imsi", "msisdn"))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 1_000_000})
    started = time.perf_counter()
    encode = msgspec.json.encode
    for start in range(0, len(keys), PRODUCE_CHUNK):
        chunk = slice(start, start + PRODUCE_CHUNK)
        for key, imsi, msisdn in zip(keys[chunk].tolist(), imsis[chunk].tolist(),
                                     msisdns[chunk].tolist()):
            imei = MALFORMED_IMEI if key == NO_KEY else f"{key:014d}"
            value = encode({"imei": imei, "imsi": str(imsi), "msisdn": str(msisdn),
                            "ts": START_MS})
            while True:
                try:
                    producer.produce(ATTACH_TOPIC, value, imei.encode())
                    break
                except BufferError:  # the local queue is full: let the broker take some
                    producer.poll(POLL_S)
        producer.poll(0)
    producer.flush()
    return len(keys), time.perf_counter() - started


def counted(port: int, name: str = CONSUMED) -> float:
    """A counter of the worker's /metrics summed over its labels: by default the attaches
    decided so far (0 while it is starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",  # noqa: S310
                                    timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


class Decided(threading.Thread):
    """The worker's decided attaches, read every POLL_S from the moment it starts, also
    while the bench produces: (monotonic seconds, count) pairs."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.samples.append((time.monotonic(), counted(self.port)))

    def rate(self, count: int) -> float:
        """Attaches decided a second, from the first sample that counts any to the first
        that counts `count`, waiting for it. Raises TimeoutError after DRAIN_TIMEOUT_S."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not self.samples or self.samples[-1][1] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.samples[-1][1] if self.samples else 0:,.0f} of "
                                   f"{count:,} attaches decided after {DRAIN_TIMEOUT_S} s")
            time.sleep(POLL_S)
        self.stop.set()
        began, first = next((at, done) for at, done in self.samples if done)
        ended, last = self.samples[-1]
        return (last - first) / max(ended - began, POLL_S)


def gauge(port: int, name: str) -> float | None:
    """An unlabelled gauge of a process's /metrics; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",  # noqa: S310
                                    timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return next((float(line.split()[1]) for line in text.splitlines()
                 if line.startswith(name + " ")), None)


class Resident(threading.Thread):
    """A process's resident memory over a phase: its peak (the kernel's, VmHWM, reset as the
    phase begins: /proc/PID/clear_refs), and, read every RSS_EVERY_S, the part mapped from
    files (RssFile and RssShmem: a snapshot on tmpfs is shmem) at the most sampled; KiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.most_kib, self.file_kib, self.sampled_kib = pid, 0, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(RSS_EVERY_S):
            try:
                rss = status_kib(self.pid, "VmRSS")
                mapped = status_kib(self.pid, "RssFile") + status_kib(self.pid, "RssShmem")
            except (OSError, RuntimeError):
                return
            if rss > self.sampled_kib:
                self.sampled_kib, self.file_kib = rss, mapped

    def __enter__(self) -> Resident:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        self.join()
        self.most_kib = max(self.sampled_kib, process_peak_kib(self.pid))


def adopted(port: int, name: str, generation: int) -> float:
    """Seconds from the next generation's save until the process's gauge shows it in use
    (0 when it already was). Raises TimeoutError
    after ADOPT_TIMEOUT_S."""
    began = time.monotonic()
    while gauge(port, name) != generation:
        if time.monotonic() - began > ADOPT_TIMEOUT_S:
            raise TimeoutError(f"generation {generation} not adopted in {ADOPT_TIMEOUT_S} s")
        time.sleep(RSS_EVERY_S)
    return time.monotonic() - began


def checks(port: int, traffic: Path) -> dict[str, int]:
    """CHECKS equipment-status answers for the traffic's first attaches, counted by status
    (a malformed IMEI asked as an invalid PEI: 400)."""
    data = np.load(traffic)
    answers: dict[str, int] = {}
    for key, imsi, msisdn in zip(*(data[name][:CHECKS].tolist()
                                   for name in ("imei_key", "imsi", "msisdn"))):
        digits = f"{key:014d}"
        pei = INVALID_PEI if key == NO_KEY else f"imei-{digits}{luhn_digit(digits)}"
        query = urlencode({"pei": pei, "supi": f"imsi-{imsi}", "gpsi": f"msisdn-{msisdn}"})
        url = f"http://127.0.0.1:{port}{CHECK_PATH}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
                status = json.loads(answer.read())["status"]
        except urllib.error.HTTPError as error:
            status = str(error.code)
        answers[status] = answers.get(status, 0) + 1
    return answers


def gib(kib: int) -> float:
    return round(kib / KIB_PER_GIB, 2)


def stage_run(args: argparse.Namespace) -> dict:
    with embedded_services("eir-national-") as (services, scratch):
        port, eic_port = free_port(), free_port()
        env = {"EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
               "EIR_KAFKA__CLIENT": "confluent", "EIR_KAFKA__ATTACH_TOPIC": ATTACH_TOPIC,
               "EIR_KAFKA__GROUP_ID": "national", "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
               "EIR_POSTGRES__DSN": services.postgres.dsn,
               "EIR_STATE__DIR": str(args.dir / "state"), "EIR_HTTP__PORT": str(port),
               "EIR_EIC__PORT": str(eic_port), "EIR_EIC__BIND": "127.0.0.1",
               "EIR_JOBS__RECONCILE_CRON": RECONCILE_CRON, "EIR_JOBS__FOLD_CRON": "",
               "EIR_JOBS__CONSISTENCY_CRON": ""}
        migrate(services.postgres.dsn)
        admin = KafkaAdminClient(bootstrap_servers=services.broker.bootstrap)
        admin.create_topics([NewTopic(ATTACH_TOPIC, num_partitions=PARTITIONS,
                                      replication_factor=1)])
        admin.close()
        worker = WorkerProcess(env, scratch / "clock")
        worker.set_time(START_MS)
        worker.start()
        with worker:
            ready_s = wait_ready(port, READY_TIMEOUT_S, POLL_S)
            at_ready = process_rss_kib(worker.proc.pid)
            anon_at_ready = status_kib(worker.proc.pid, "RssAnon")  # the window's: private
            say(f"  worker ready in {ready_s:.1f} s, resident {gib(at_ready)} GiB")
            decided = Decided(port)
            decided.start()
            count, produce_s = produce(services.broker.bootstrap, args.dir / TRAFFIC)
            say(f"  {count:,} attaches produced in {produce_s:.0f} s")
            rate = decided.rate(count)
            after = process_rss_kib(worker.proc.pid)
            anon_after = status_kib(worker.proc.pid, "RssAnon")
            peak = process_peak_kib(worker.proc.pid)
            flags = round(counted(port, FLAGS))
            say(f"  decided at {rate:,.0f} a second, {flags:,} IMEIs flagged misused; "
                f"resident {gib(after)} GiB ({gib(after - anon_after)} mapped from files), "
                f"at most {gib(peak)} GiB")
            with Resident(worker.proc.pid) as adopting:
                generation = run_stage(__file__, "next", "--dir", str(args.dir))["generation"]
                worker_adopt_s = adopted(port, WORKER_GENERATION, generation)
                more = Decided(port)
                more.start()
                produce(services.broker.bootstrap, args.dir / TRAFFIC, ADOPT_ATTACHES)
                more.rate(count + ADOPT_ATTACHES)
            worker_adopted = process_rss_kib(worker.proc.pid)
            say(f"  generation {generation} adopted in {worker_adopt_s:.1f} s and "
                f"{ADOPT_ATTACHES:,} attaches decided on it: resident at most "
                f"{gib(adopting.most_kib)} GiB ({gib(adopting.file_kib)} mapped from files), "
                f"{gib(worker_adopted)} GiB after")
            worker.restart()
            restart_s = wait_ready(port, READY_TIMEOUT_S, POLL_S)
            say(f"  SIGKILLed and started again: ready in {restart_s:.1f} s")
            with serving(env, scratch / "serve.log") as serve_pid:
                serve_ready_s = wait_ready(eic_port, READY_TIMEOUT_S, POLL_S)
                answers = checks(eic_port, args.dir / TRAFFIC)
                serve_rss = process_rss_kib(serve_pid)
                serve_peak = process_peak_kib(serve_pid)
                say(f"  serve ready in {serve_ready_s:.1f} s, resident {gib(serve_rss)} GiB "
                    f"(at most {gib(serve_peak)}); {CHECKS:,} checks: {answers}")
                with Resident(serve_pid) as serve_adopting:
                    generation = run_stage(__file__, "next", "--dir",
                                           str(args.dir))["generation"]
                    serve_adopt_s = adopted(eic_port, SERVE_GENERATION, generation)
                    again = checks(eic_port, args.dir / TRAFFIC)
                serve_adopted = process_rss_kib(serve_pid)
            say(f"  serve adopted generation {generation} in {serve_adopt_s:.1f} s: resident at "
                f"most {gib(serve_adopting.most_kib)} GiB ({gib(serve_adopting.file_kib)} mapped"
                f" from files), {gib(serve_adopted)} GiB after; the checks again: {again}")
        return {"worker_ready_s": round(ready_s, 1), "worker_restart_s": round(restart_s, 1),
                "serve_ready_s": round(serve_ready_s, 1),
                "ready_s": round(max(ready_s, restart_s, serve_ready_s), 1),
                "worker_rss_gb": gib(after), "worker_peak_rss_gb": gib(peak),
                "worker_rss_at_ready_gb": gib(at_ready),
                "clone_window_gb": gib(anon_after - anon_at_ready),
                "worker_rss_file_gb": gib(after - anon_after),
                "serve_rss_gb": gib(serve_rss), "serve_peak_rss_gb": gib(serve_peak),
                "attaches_per_s": round(rate), "flags": flags, "produce_s": round(produce_s),
                "checks": answers, "worker_adopt_s": round(worker_adopt_s, 1),
                "worker_adopt_peak_rss_gb": gib(adopting.most_kib),
                "worker_adopt_peak_file_gb": gib(adopting.file_kib),
                "worker_rss_after_adopt_gb": gib(worker_adopted),
                "serve_adopt_s": round(serve_adopt_s, 1),
                "serve_adopt_peak_rss_gb": gib(serve_adopting.most_kib),
                "serve_adopt_peak_file_gb": gib(serve_adopting.file_kib),
                "serve_rss_after_adopt_gb": gib(serve_adopted), "checks_after_adopt": again}


class serving:
    """`eir-enforcer serve` on the worker's configuration, terminated afterwards: its pid."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log

    def __enter__(self) -> int:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "enforcer.app.cli", "serve"],
                env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=log)
        return self.process.pid

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait()


def run_build(args: argparse.Namespace) -> dict:
    return run_stage(__file__, "build", "--imeis", str(args.imeis), "--attaches",
                     str(args.attaches), "--cut-pairs", str(args.cut_pairs), "--seed",
                     str(args.seed), "--dir", str(args.dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imeis", type=int, default=300_000_000)
    parser.add_argument("--attaches", type=int, default=10_000_000)
    parser.add_argument("--cut-pairs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--stage", choices=("build", "next"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        emit((stage_build if args.stage == "build" else stage_next)(args))
        return
    scratch = args.dir is None
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="eir-national-"))
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        say(f"building {args.imeis // 2:,} devices with {args.imeis:,} IMEIs, "
            f"{args.cut_pairs:,} cut pairs and {args.attaches:,} attaches ...")
        built = run_build(args)
        say(f"  built in {built['build_s']} s (peak {built['build_peak_rss_gb']} GiB); "
            f"{built['attaches']:,} attaches with {built['clone_imeis']:,} cloned IMEIs")
        figures = stage_run(args)
        emit({"imeis": args.imeis, "devices": args.imeis // 2, "cut_pairs": args.cut_pairs,
              **built, **figures})
    finally:
        if scratch:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
