"""Faults on purpose: real worker processes killed at random moments, the broker and the
database stopped under them, while attach traffic that opens notices is replayed; then an
audit of what came out. Shared by tests/test_faults.py and bench/faults.py.

The traffic is a synthetic country's attaches with more notice-opening uses than the usual
mix. The notices are carried through their month with the worker's clock file: their
subjects attach again on day SEEN_AGAIN_DAY (so nothing lapses) and the clock then passes
the deadline, so every notice's subject must end cut, under that notice or the one that
superseded it (a pair on an IMEI flagged misused is cut under its `misuse` notice), each
step's message on its topic once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import msgspec
import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from enforcer.clock import MS_PER_DAY, MS_PER_HOUR, MS_PER_S
from enforcer.engine.effects import IDEMPOTENCY_HEADER
from enforcer.engine.events import NO_KEY
from enforcer.embedded.synth import Country, TrafficMix, attach_traffic

# More uses that open notices than the usual mix: there is something to kill the sweep in.
FAULT_MIX = TrafficMix(owner=0.90, other_cartable=0.05, unregistered=0.03, malformed=0.01,
                       blacklisted=0.005, roamer=0.005)
SEEN_AGAIN_DAY = 20  # within the lapse period before a 30-day deadline
PAST_DEADLINE_DAY = 31
MALFORMED_IMEI = "004999010640000"
PARTITIONS = 4
POLL_S = 0.2
MARKS = (0.05, 0.95)  # kills fall between these shares of a piece of work


@dataclass(frozen=True)
class KillPlan:
    replay_kills: int  # while the attaches are consumed
    sweep_kills: int  # while the notices past their deadline are cut and sent
    jitter_s: float  # a kill comes this long at most after its mark is passed
    timeout_s: float  # for each piece of work

READ_IDLE_MS = 3000
LIVE = "('open', 'warned', 'reminded')"
HTTP_TIMEOUT_S = 5
HTTP_OK = 200
HTTP_UNAVAILABLE = 503


@dataclass(frozen=True)
class Traffic:
    messages: list[tuple[bytes, bytes]]  # (key, value) as produced
    first_seen: dict[tuple[int, int], int]  # (IMEI key, IMSI) -> first ts, valid IMEIs only


def traffic(country: Country, events: int, seed: int, start_ms: int) -> Traffic:
    batch = attach_traffic(country, events, FAULT_MIX, seed, start_ms)
    messages, first_seen = [], {}
    for key, imsi, msisdn, ts in zip(batch.imei_key.tolist(), batch.imsi.tolist(),
                                     batch.msisdn.tolist(), batch.ts_ms.tolist()):
        imei = MALFORMED_IMEI if key == NO_KEY else f"{key:014d}"
        messages.append((imei.encode(), msgspec.json.encode(
            {"imei": imei, "imsi": str(imsi), "msisdn": str(msisdn), "ts": ts})))
        if key != NO_KEY:
            first_seen.setdefault((key, imsi), ts)
    return Traffic(messages, first_seen)


def seen_again(dsn: str, ts: int) -> list[tuple[bytes, bytes]]:
    """The live notices' subjects attach again at ts."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT imei_key, imsi, msisdn FROM notices"  # noqa: S608
                            f" WHERE state IN {LIVE}").fetchall()
    return [(f"{k:014d}".encode(), msgspec.json.encode(
        {"imei": f"{k:014d}", "imsi": str(i), "msisdn": str(m), "ts": ts})) for k, i, m in rows]


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset on each partition of topic that has one."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: o.offset for tp, o in offsets.items()
            if tp.topic == topic and o.offset >= 0}


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets on topic, summed over its partitions."""
    return sum(committed_offsets(bootstrap, group, topic).values())


class WorkerProcess:
    """`eir-enforcer run` on a clock file, killed without warning when asked."""

    def __init__(self, env: dict[str, str], clock_file: Path) -> None:
        self.env = {**os.environ, **env, "EIR_CLOCK__FILE": str(clock_file)}
        self.clock_file = clock_file
        self.log = clock_file.with_name("worker.log")  # its lines, every life, appended
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def set_time(self, ms: int) -> None:
        scratch = self.clock_file.with_suffix(".partial")
        scratch.write_text(str(ms))
        scratch.replace(self.clock_file)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "enforcer.app.cli", "run"], env=self.env,
                stdout=subprocess.DEVNULL, stderr=log)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.alive():
            self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is None:
            raise RuntimeError("the worker was never started")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM, as an operator stops it; its exit code."""
        if self.proc is None:
            raise RuntimeError("the worker was never started")
        self.proc.terminate()
        return self.proc.wait()


def kill_at_marks(worker: WorkerProcess, progress: Callable[[], float], kills: int,
                  rng: random.Random, plan: KillPlan) -> None:
    """Through one piece of work (progress() from 0 to 1): `kills` random marks; as the
    progress passes each, the worker is killed a random moment later (up to plan.jitter_s)
    and started again at once. Returns when the work is done."""
    marks = sorted(rng.uniform(*MARKS) for _ in range(kills))
    deadline = time.monotonic() + plan.timeout_s
    while marks or progress() < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {plan.timeout_s:.0f} s ({worker.kills} kills)")
        if not worker.alive():
            raise RuntimeError(f"the worker exited by itself: {worker.proc.returncode}")
        if marks and progress() >= marks[0]:
            marks.pop(0)
            time.sleep(rng.uniform(0, plan.jitter_s))
            worker.restart()
        time.sleep(POLL_S)


def unsettled(dsn: str, now_ms: int) -> int:
    """Notices past their deadline not yet cut, and outbox messages not yet sent."""
    with psycopg.connect(dsn) as conn:
        (due,) = conn.execute(f"SELECT count(*) FROM notices WHERE state IN {LIVE}"  # noqa: S608
                              " AND deadline <= to_timestamp(%s / 1e3)", (now_ms,)).fetchone()
        (unsent,) = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
    return due + unsent


def keys_on(bootstrap: str, topic: str) -> Counter[str]:
    """How often each idempotency key is on the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=READ_IDLE_MS)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    counts = Counter(dict(m.headers).get(IDEMPOTENCY_HEADER, b"").decode() for m in consumer)
    consumer.close()
    return counts


@dataclass(frozen=True)
class Audit:
    events_in: int
    pairs_in: int
    pairs_recorded: int
    pairs_missing: int
    first_seen_wrong: int
    notices: int
    notices_cut: int
    notices_superseded: int  # closed for another kind's notice on their subject
    cut_under: dict[str, int]  # subjects past their deadline, by the kind of notice that cut them
    cutoffs_missing: int  # subjects past their deadline cut under no notice
    steps_recorded: int  # outbox messages: each a step's SMS or command
    steps_sent: int  # of those, on their topic
    steps_missing: int
    duplicates: int  # extra copies of a step's message on its topic

    def clean(self) -> bool:
        return not (self.pairs_missing or self.first_seen_wrong or self.cutoffs_missing
                    or self.steps_missing or self.duplicates)


def history_gaps(dsn: str, sent: Traffic) -> tuple[int, int]:
    """(pairs sent that are not in the history, pairs whose first sighting is wrong)."""
    with psycopg.connect(dsn) as conn:
        recorded = {(k, i): int(f.timestamp() * MS_PER_S) for k, i, f in conn.execute(
            "SELECT imei_key, imsi, min(first_seen) FROM slot_usage GROUP BY 1, 2")}
    missing = sum(1 for pair in sent.first_seen if pair not in recorded)
    wrong = sum(1 for pair, ts in sent.first_seen.items()
                if pair in recorded and recorded[pair] != ts)
    return missing, wrong


class NoticeSeen(NamedTuple):
    """A notice as the audit reads it."""

    id: int
    kind: str
    state: str
    imei_key: int
    subject_imsi: int  # 0: the whole IMEI
    deadline_ms: int
    superseded_by: int | None


def cut_under(notices: list[NoticeSeen], now_ms: int) -> tuple[dict[str, int], int]:
    """Every subject (pair, or IMEI) with a notice due by now_ms, counted by the kind of
    notice it is cut under (its own, the one that superseded it, or another on the same
    subject or its whole IMEI), and how many are cut under none. A superseded notice is due
    when the last of its chain is. The traffic changes nothing in the registry, so nothing
    is excused: a notice cancelled or lapsed leaves its subject owed."""
    by_id = {n.id: n for n in notices}
    cut = {(n.imei_key, n.subject_imsi): n.kind for n in notices if n.state == "cut"}
    under: dict[tuple[int, int], str | None] = {}
    for n in notices:
        last = n
        while last.superseded_by is not None:
            last = by_id[last.superseded_by]
        if last.deadline_ms > now_ms:
            continue
        subject = (n.imei_key, n.subject_imsi)
        kind = (cut.get(subject) or cut.get((n.imei_key, 0))
                or (last.kind if last.state == "cut" else None))
        under[subject] = under.get(subject) or kind
    counted = Counter(kind for kind in under.values() if kind is not None)
    return dict(sorted(counted.items())), sum(1 for kind in under.values() if kind is None)


def audit(dsn: str, bootstrap: str, topics: dict[str, str], sent: Traffic, events_in: int,
          now_ms: int) -> Audit:
    """What the database and the topics hold against what went in."""
    missing, wrong = history_gaps(dsn, sent)
    with psycopg.connect(dsn) as conn:
        notices = [NoticeSeen(*row) for row in conn.execute(
            "SELECT id, kind, state, imei_key, subject_imsi,"
            " floor(extract(epoch FROM deadline) * 1000)::bigint, superseded_by"
            " FROM notices")]
        outbox = conn.execute("SELECT stream, idempotency_key FROM outbox").fetchall()
    on_topics = {stream: keys_on(bootstrap, topic) for stream, topic in topics.items()}
    counts = [on_topics[stream][key] for stream, key in outbox]
    states = Counter(n.state for n in notices)
    under, not_cut = cut_under(notices, now_ms)
    return Audit(events_in=events_in, pairs_in=len(sent.first_seen),
                 pairs_recorded=len(sent.first_seen) - missing, pairs_missing=missing,
                 first_seen_wrong=wrong, notices=len(notices), notices_cut=states["cut"],
                 notices_superseded=states["superseded"], cut_under=under,
                 cutoffs_missing=not_cut, steps_recorded=len(outbox),
                 steps_sent=sum(1 for c in counts if c), steps_missing=counts.count(0),
                 duplicates=sum(c - 1 for c in counts if c > 1))




def month_under_kills(worker: WorkerProcess, env: dict[str, str], sent: Traffic,
                      start_ms: int, plan: KillPlan, rng: random.Random) -> Audit:
    """The traffic, then its notices' month, with the worker killed along the way; the
    audit."""
    bootstrap, group, topic, dsn = (env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                                    env["EIR_KAFKA__GROUP_ID"], env["EIR_KAFKA__ATTACH_TOPIC"],
                                    env["EIR_POSTGRES__DSN"])
    last_event = start_ms + len(sent.messages)
    worker.set_time(last_event + MS_PER_HOUR)
    produce(bootstrap, topic, sent.messages)
    events_in = len(sent.messages)
    worker.start()

    def consumed() -> float:
        return committed(bootstrap, group, topic) / events_in

    kill_at_marks(worker, consumed, plan.replay_kills, rng, plan)
    again_at = start_ms + SEEN_AGAIN_DAY * MS_PER_DAY
    worker.set_time(again_at + MS_PER_HOUR)
    again = seen_again(dsn, again_at)
    produce(bootstrap, topic, again)
    events_in += len(again)
    kill_at_marks(worker, consumed, 0, rng, plan)
    end = start_ms + PAST_DEADLINE_DAY * MS_PER_DAY
    due = unsettled(dsn, end)
    worker.set_time(end)
    kill_at_marks(worker, lambda: 1 - unsettled(dsn, end) / max(due, 1), plan.sweep_kills,
                  rng, plan)
    worker.stop()
    topics = {"notifications": env["EIR_KAFKA__NOTIFICATIONS_TOPIC"],
              "commands": env["EIR_KAFKA__COMMANDS_TOPIC"]}
    return audit(dsn, bootstrap, topics, sent, events_in, end)



@dataclass(frozen=True)
class Outage:
    service: str
    events_in: int
    worker_alive: bool  # through the outage and after it
    committed_while_down: int  # offsets committed with the database away (must be 0)
    not_ready_seen: bool  # /readyz answered 503 while the database was away
    retries_while_down: float  # eir_batch_failures_total grew by this much meanwhile
    recovered_s: float  # from the service back to every event committed
    pairs_missing: int
    first_seen_wrong: int


def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(POLL_S)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def ready(port: int) -> int:
    """/readyz's status (0 when nothing answers)."""
    return _get(f"http://127.0.0.1:{port}/readyz")[0]


def batch_failures(port: int) -> float:
    _, text = _get(f"http://127.0.0.1:{port}/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("eir_batch_failures_total{"))


def through_broker_outage(worker: WorkerProcess, broker, env: dict[str, str], sent: Traffic,
                          outage_s: float, timeout_s: float) -> Outage:
    """Half the traffic consumed, the broker stopped for outage_s and started again; tansu
    keeps nothing over a restart, so all of it is produced again (the worker is not told)."""
    bootstrap, group, topic = (broker.bootstrap, env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"])
    half = len(sent.messages) // 2
    produce(bootstrap, topic, sent.messages[:half])
    worker.start()
    wait_until(lambda: committed(bootstrap, group, topic) >= half // 2, timeout_s)
    broker.stop()
    time.sleep(outage_s)
    alive = worker.alive()
    broker.start()
    back = time.monotonic()
    produce(bootstrap, topic, sent.messages)
    wait_until(lambda: committed(bootstrap, group, topic) == len(sent.messages), timeout_s)
    recovered = round(time.monotonic() - back, 1)
    missing, wrong = history_gaps(env["EIR_POSTGRES__DSN"], sent)
    return Outage("kafka", half + len(sent.messages), alive and worker.alive(), 0, False, 0,
                  recovered, missing, wrong)


def through_database_outage(worker: WorkerProcess, postgres, env: dict[str, str],
                            sent: Traffic, outage_s: float, timeout_s: float) -> Outage:
    """Half the traffic consumed, PostgreSQL stopped, the other half produced, PostgreSQL
    started again after outage_s."""
    bootstrap, group, topic = (env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"])
    port = int(env["EIR_HTTP__PORT"])
    half = len(sent.messages) // 2
    produce(bootstrap, topic, sent.messages[:half])
    worker.start()
    wait_until(lambda: committed(bootstrap, group, topic) == half, timeout_s)
    failures = batch_failures(port)
    postgres.stop()
    down = time.monotonic()
    produce(bootstrap, topic, sent.messages[half:])
    not_ready = False
    while time.monotonic() - down < outage_s:
        not_ready = not_ready or ready(port) == HTTP_UNAVAILABLE
        time.sleep(POLL_S)
    held = committed(bootstrap, group, topic) - half
    retries = batch_failures(port) - failures
    alive = worker.alive()
    postgres.start()
    back = time.monotonic()
    wait_until(lambda: committed(bootstrap, group, topic) == len(sent.messages), timeout_s)
    recovered = round(time.monotonic() - back, 1)
    wait_until(lambda: ready(port) == HTTP_OK, timeout_s)
    missing, wrong = history_gaps(env["EIR_POSTGRES__DSN"], sent)
    return Outage("postgres", len(sent.messages), alive and worker.alive(), held, not_ready,
                  retries, recovered, missing, wrong)
