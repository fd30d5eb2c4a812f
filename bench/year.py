"""A compressed year: real `eir-enforcer run` processes on the embedded services with a fast
clock, a national registry's changes and steady attach traffic, folds and retention on their
schedules, and a SIGKILL and restart at each month's end.

    python bench/year.py [--devices 1000000] [--months 12] [--changes-per-day 100000]
                         [--day-s 10.0] [--attaches-per-s 300] [--fold-every-s 0]
                         [--keep-days 30] [--clones-per-day 20] [--seed 7] [--keep-broker]
                         [--timeline DIR]

The worker's clock file moves a simulated day every --day-s wall seconds, in ticks of TICK_S;
each tick the bench produces the day's share of --changes-per-day registry changes (one
partition, so that "applied" can be counted: registrations of new devices, deregistrations of
the oldest the bench registered, black-listings and their lifting, cartable links, operator
SIMs, transfers by IMEI; the mix keeps the registry's size about level) and of the attach
traffic (the synthetic country's usual mix: SIMs of another cartable and unregistered
devices open notices, which the sweep carries to their cutoff), and at each day's start
--clones-per-day owned IMEIs seen with enough SIMs at once to be flagged misused (their misuse
notices among the rest). APScheduler runs the jobs on wall time, so the worker's crons are
set to wall-time periods that match the simulated ones: the fold every --day-s /
FOLDS_PER_DAY seconds (the product's six hours; at least one second, or --fold-every-s),
retention every --day-s (daily), half a fold's period after a fold (the product's defaults
keep the two apart: folds at 25 past every sixth hour, retention at 03:40). Jobs read the
time from the clock file, as everything else, and every row carries the clock file's time,
so retention comes as it would in a year. Every retention in days (history.keep_days, closed
notices, job runs, the subscribers' numbers, at least 60, the life of a clone flag, the
policy's clones.flag_days, at least the clone window, and the wait before a cut notice
unseen is released) is set to --keep-days, so that a year shows the level each table
keeps: with the product's (400 days of slot usage, a year of closed notices) a first year
only grows, and the level comes in the second.

A change's latency is from the moment before it is produced to the first scrape of /metrics
(every SCRAPE_S) whose `eir_registry_events_total{outcome="applied"}` counts it. At each
month's end the registry changes are let drain and the worker is SIGKILLed and started
again; restart-to-ready is from the start to /readyz 200. While the worker is down the
embedded broker is restarted empty and the topics made again (unless --keep-broker): tansu
keeps every message in memory and has no retention (nor DeleteRecords), so its cost grows
with what it holds, where a production Kafka's follows its retention. Emptied monthly, it
holds at most a month of messages in every month, as a broker with a month's retention
would, and the worker meets a recreated registry topic at each restart (a new incarnation:
docs/operations.md). RSS is the median of the month's
scrapes (and their most): a single reading lands anywhere in a fold's adoption, when the
old generation and the new are both held, and moved by a third from month to month. Each
month also says how many cores the worker took (its folds' processes apart) and how many
the embedded broker took, and the broker's memory: it shares the two cores with the
worker.
Rows are counted ROW_PHASES times a day in each of the month's last ROW_DAYS days, each day
at points shifted by a fifth of the interval, and the most of each table kept: a table that a
daily job prunes (registry_events: below the generation before the current) rises and falls
every day, and the retention cron runs on wall time, so one count a day at the day's start
read a different point of that cycle in every month and gave the phase, not the growth; 20
points spread over the cycle read its peak in every month. Each month also gives its slowest
change (when in the month it was produced, and how many folds and retentions ended while it
waited) and the share of its changes that took over a second: where a p99 comes from. With
--timeline DIR, each month's timeline (every tick's changes produced, every scrape's count of
changes applied and of jobs ended) is saved as DIR/month-NN.npz for a closer look. One line
per month; the last line is JSON.
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import psycopg
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from measure import cpu_seconds, embedded_services, emit, process_rss_kib, say, wait_ready

from consumers.publish import ConfluentProducer, Publication
from enforcer.clock import MS_PER_DAY, MS_PER_S
from enforcer.db.migrate import migrate
from enforcer.embedded.services import EmbeddedBroker, free_port
from enforcer.embedded.synth import (Country, CountrySpec, TrafficMix, attach_traffic,
                                     build_country, home_imsi, owned_rows,
                                     unowned_device_rows)
from enforcer.engine.events import NO_KEY
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from rules.policy import DEFAULT_POLICY, default_clones, load_policy
from tests.harness.faults import MALFORMED_IMEI, WorkerProcess

START_MS = 1_790_000_000_000  # 2026-09-21, a fixed day: the run repeats with its seed
MONTH_DAYS = 30
ATTACH_TOPIC, REGISTRY_TOPIC = "attach-year", "registry-year"
PARTITIONS = 4
TICK_S = 0.1
SCRAPE_S = 0.1  # a change's latency to 0.1 s; each scrape names the few samples it reads
FOLDS_PER_DAY = 4  # jobs.fold_cron's default: every six hours
READY_TIMEOUT_S = 600
DRAIN_TIMEOUT_S = 600
FLUSH_S = 30.0
HTTP_TIMEOUT_S = 5
MSISDN_BASE = 989_120_000_000
MSISDNS = 50_000_000
LINKED_MSISDN_BASE = MSISDN_BASE + MSISDNS  # numbers the bench links, one each
NEW_KEY_BASE = 99_000_000_000_000  # IMEIs no snapshot holds: registered or listed by changes
CARTABLES = 10_000_000
UNOWNED_TARGETS = 100_000  # devices without an owner that transfers and operator SIMs name
KINDS = 12  # of registry change, drawn in turn (Changes)
CLONE_SEED = 31  # the clones' own stream: the usual mix is drawn as without them
DAYS_SEEDED = 100_000  # a run's days are fewer: each (seed, day) draws its own clones
KIB_PER_MIB = 1024
SUBSCRIBER_DAYS_MIN = 60  # retention.subscriber_days' least (a SIM's time moves on monthly)
APPLIED = 'eir_registry_events_total{outcome="applied"}'
CONSUMED = "eir_events_consumed_total"
RSS = "process_resident_memory_bytes"
CPU = "process_cpu_seconds_total"
FOLD_RUNS = 'eir_job_duration_seconds_count{job_name="fold"}'
FOLD_SECONDS = 'eir_job_duration_seconds_sum{job_name="fold"}'
RETENTION_RUNS = 'eir_job_duration_seconds_count{job_name="retention"}'
SLOW_S = 1.0  # a change slower than the goal's p99
P50, P99 = 50, 99
MINUTE_S = 60
ROW_DAYS = 5
ROW_PHASES = 4  # row counts a day in the last ROW_DAYS days


class Changes:
    """Registry changes as the registry sends them, drawn twelve kinds in turn; registrations,
    black-listings, cartable links and operator SIMs are matched by deregistrations,
    liftings, unlinks and removals of the oldest the bench made, so that the state holds
    about as much in month 12 as in month 1 (unmatched, links and operator SIMs added 1.4 M
    entries in a year at 20,000 changes a day, and the folds' time grew with them)."""

    def __init__(self, country: Country, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        # Transfers and operator SIMs name devices without an owner, which the attach
        # traffic (drawn from the first snapshot's owned devices) never uses: otherwise a
        # year of transfers would turn its owners' attaches into another SIM's, and the
        # notices would grow with the year's transfers, not with the traffic.
        self._unowned = country.lists.white_index.keys_at(
            unowned_device_rows(country.devices, UNOWNED_TARGETS))
        self._registered: deque[str] = deque()
        self._black: deque[int] = deque()
        self._linked: deque[tuple[int, int]] = deque()  # (cartable, MSISDN)
        self._operator_sims: deque[tuple[int, int]] = deque()  # (IMEI key, MSISDN)
        self._next = 0

    def take(self, count: int, now_ms: int) -> list[bytes]:
        rng, out = self._rng, []
        owned = rng.choice(self._unowned, count).tolist()
        msisdns = (MSISDN_BASE + rng.integers(0, MSISDNS, count)).tolist()
        cartables = rng.integers(1, CARTABLES, count).tolist()
        for i in range(count):
            n = self._next
            self._next += 1
            key = NEW_KEY_BASE + 10 * n
            event: dict[str, object] = {"event_id": f"year-{n}", "time": now_ms}
            kind = n % KINDS
            if kind in (2, 3) and self._registered:
                event |= {"type": "device_deregistered", "device_id": self._registered.popleft()}
            elif kind in (0, 1):
                self._registered.append(f"Y{n}")
                event |= {"type": "device_registered", "device_id": f"Y{n}",
                          "imeis": [f"{key:014d}", f"{key + 1:014d}"], "source": "passenger"}
            elif kind == 4:
                self._black.append(key)
                event |= {"type": "blacklisted", "imeis": [f"{key:014d}"], "reason": "stolen"}
            elif kind == 5 and self._black:
                event |= {"type": "unblacklisted", "imeis": [f"{self._black.popleft():014d}"]}
            elif kind == 7 and self._linked:
                cartable, msisdn = self._linked.popleft()
                event |= {"type": "cartable_unlinked", "cartable_id": cartable,
                          "msisdns": [str(msisdn)]}
            elif kind in (6, 7):
                # A number of its own, so that its unlink finds it where it was linked.
                linked = LINKED_MSISDN_BASE + n
                self._linked.append((cartables[i], linked))
                event |= {"type": "cartable_linked", "cartable_id": cartables[i],
                          "msisdns": [str(linked)]}
            elif kind == 9 and self._operator_sims:
                imei, msisdn = self._operator_sims.popleft()
                event |= {"type": "operator_sim_removed", "imei": f"{imei:014d}",
                          "msisdn": str(msisdn)}
            elif kind in (8, 9):
                self._operator_sims.append((owned[i], msisdns[i]))
                event |= {"type": "operator_sim_set", "imei": f"{owned[i]:014d}",
                          "msisdn": str(msisdns[i])}
            else:
                event |= {"type": "ownership_set", "imeis": [f"{owned[i]:014d}"],
                          "owner_msisdn": str(msisdns[i]), "via": "transfer_direct"}
            out.append(msgspec.json.encode(event))
        return out


class Scraper(threading.Thread):
    """The worker's applied-changes counter every SCRAPE_S, as (monotonic s, count) of the
    current life (the counter starts again at each start), its folds and retentions ended
    so far, as (monotonic s, folds, retentions), and its resident memory."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        # Only what it reads, not every family ten times a second (some 0.3 ms of the
        # worker's interpreter lock each, taken from the threads it measures).
        self._url = f"http://127.0.0.1:{port}/metrics?" + "&".join(
            f"name[]={name.split('{')[0]}" for name in (APPLIED, RSS, FOLD_RUNS, RETENTION_RUNS))
        self.samples: list[tuple[float, float]] = []
        self.jobs: list[tuple[float, float, float]] = []
        self.rss: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while True:  # a first scrape at once: the jobs' counts before the month's first tick
            at, figures = time.monotonic(), scrape(self._url)
            if figures:
                self.jobs.append((at, figures.get(FOLD_RUNS, 0.0),
                                  figures.get(RETENTION_RUNS, 0.0)))
            if APPLIED in figures:
                self.samples.append((at, figures[APPLIED]))
            if RSS in figures:
                self.rss.append(figures[RSS])
            if self.halt.wait(SCRAPE_S):
                return

    def applied(self) -> float:
        return self.samples[-1][1] if self.samples else 0.0


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics, labels as written, values summed by name for CONSUMED."""
    figures: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310
            text = answer.read().decode()
    except OSError:  # the worker is starting again: no sample
        return figures
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            figures[name] = float(value)
            if name.startswith(CONSUMED + "{"):
                figures[CONSUMED] = figures.get(CONSUMED, 0.0) + float(value)
    return figures


def latencies(produced: list[tuple[float, int, int]],
              samples: list[tuple[float, float]]) -> np.ndarray:
    """Seconds from each tick's changes produced (monotonic s, count this life after them,
    how many) to the first scrape counting them, one value per change."""
    times = np.array([t for t, _ in samples])
    counts = np.array([c for _, c in samples])
    out = []
    for at, target, n in produced:
        if not n:  # no change this tick (fewer a day than ticks): no scrape need follow it
            continue
        seen = np.flatnonzero((counts >= target) & (times >= at))
        out.append(np.full(n, times[seen[0]] - at))
    return np.concatenate(out) if out else np.zeros(1)


@dataclass(frozen=True)
class Slowest:
    """A month's slowest change: its seconds, when it was produced (days into the month),
    the folds and retentions that ended while it waited (to a scrape: from the last one
    before it was produced to the one that counted it applied), and the share of the
    month's changes slower than SLOW_S."""

    latency_s: float
    at_day: float
    folds: int
    retentions: int
    slow_share: float


def slowest(produced: list[tuple[float, int, int]], waited: np.ndarray,
            jobs: list[tuple[float, float, float]], started: float,
            day_s: float) -> Slowest:
    """`waited` is `latencies(produced, ...)`: one value per change, in `produced`'s order;
    `jobs` begins before the month's first tick (`Scraper`)."""
    if not produced or not len(waited):
        return Slowest(0.0, 0.0, 0, 0, 0.0)
    ends = np.cumsum([n for _, _, n in produced]) - 1
    at = np.array([t for t, _, _ in produced])
    tick = int(np.searchsorted(ends, int(np.argmax(waited))))
    worst = float(waited.max())
    done = np.array(jobs, dtype=np.float64).reshape(-1, 3)
    before = done[done[:, 0] < at[tick]]
    until = done[done[:, 0] <= at[tick] + worst]
    ended = (until[-1, 1:] - before[-1, 1:]) if len(before) else np.zeros(2)
    return Slowest(round(worst, 3), round(float(at[tick] - started) / day_s, 2),
                   int(ended[0]), int(ended[1]), round(float(np.mean(waited > SLOW_S)), 4))


def save_timeline(path: Path, produced: list[tuple[float, int, int]],
                  samples: list[tuple[float, float]],
                  jobs: list[tuple[float, float, float]], started: float) -> None:
    """A month's timeline, seconds from its start: `produced` (s, changes produced this life
    so far, this tick's), `applied` (s, applied this life so far), `jobs` (s, folds ended,
    retentions ended: counters of this life)."""
    def since(rows: list) -> np.ndarray:
        out = np.array(rows, dtype=np.float64)
        if len(out):
            out[:, 0] -= started
        return out

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, produced=since(produced), applied=since(samples), jobs=since(jobs))


def table_rows(dsn: str) -> dict[str, int]:
    """Rows of every table (a partitioned one counted through its parent)."""
    with psycopg.connect(dsn) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " ORDER BY 1")]
        return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]  # noqa: S608
                for name in names}


def attach_messages(country: Country, topic: str, count: int, seed: int,
                    now_ms: int) -> list[Publication]:
    """count attaches of the country's usual mix, stamped now_ms, keyed by IMEI."""
    batch = attach_traffic(country, count, TrafficMix(), seed, now_ms, step_ms=0)
    out = []
    for key, imsi, msisdn in zip(batch.imei_key.tolist(), batch.imsi.tolist(),
                                 batch.msisdn.tolist()):
        imei = MALFORMED_IMEI if key == NO_KEY else f"{key:014d}"
        out.append(Publication(topic, imei.encode(), msgspec.json.encode(
            {"imei": imei, "imsi": str(imsi), "msisdn": str(msisdn), "ts": now_ms})))
    return out


def clone_messages(country: Country, topic: str, count: int, seed: int,
                   now_ms: int) -> list[Publication]:
    """count owned IMEIs each seen at once with as many subscribers' SIMs as flag an IMEI
    (clones.distinct_imsis): a steady stream of flags, whose rows the flags' life bounds."""
    rng = np.random.default_rng([seed, CLONE_SEED])  # seed: the run's and the day's
    keys = country.lists.white_index.keys_at(owned_rows(rng, country.devices, count))
    sims = default_clones().distinct_imsis
    msisdns = country.subscribers[rng.integers(0, len(country.subscribers), count * sims)]
    out = []
    for key, msisdn, imsi in zip(np.repeat(keys, sims).tolist(), msisdns.tolist(),
                                 home_imsi(msisdns).tolist()):
        out.append(Publication(topic, f"{key:014d}".encode(), msgspec.json.encode(
            {"imei": f"{key:014d}", "imsi": str(imsi), "msisdn": str(msisdn), "ts": now_ms})))
    return out


@dataclass
class Month:
    month: int
    latency_p50_s: float
    latency_p99_s: float
    changes: int
    attaches_per_s: float
    rss_mb: float  # the median over the month: one sample falls anywhere in a fold's
    rss_max_mb: float  # adoption, when two generations are held for a moment
    rows: dict[str, int]
    restart_s: float
    folds: int  # fold runs in the month, and their mean seconds: the CPU they take
    fold_s_mean: float  # from the registry thread in this compressed year
    worker_cores: float  # the worker's CPU seconds a wall second (its folds' children apart)
    # The embedded broker keeps every message in memory, without retention: its cost grows
    # with what it holds (emptied at each month's end unless --keep-broker).
    broker_cores: float  # its CPU seconds a wall second over the month's traffic
    broker_rss_mb: float
    slowest: Slowest


def flags_lasting(days: int, path: Path) -> Path:
    """The default policy with clone flags lasting `days`."""
    text = DEFAULT_POLICY.read_text()
    default = f"\nflag_days = {default_clones().flag_days}\n"
    if default not in text:
        raise SystemExit(f"{DEFAULT_POLICY}: no '{default.strip()}' to change")
    path.write_text(text.replace(default, f"\nflag_days = {days}\n"))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--changes-per-day", type=int, default=100_000)
    parser.add_argument("--day-s", type=float, default=10.0, help="wall seconds a day lasts")
    parser.add_argument("--attaches-per-s", type=int, default=300, help="wall seconds")
    parser.add_argument("--fold-every-s", type=int, default=0,
                        help="wall seconds between folds; 0: the product's six simulated hours")
    # A notice lives its grace (30 days) and then this long closed: at 30 its table is level
    # from month 3, the month the ratio is taken against.
    parser.add_argument("--keep-days", type=int, default=30,
                        help="every retention in days (slot usage, closed notices, cut "
                             "notices unseen, clone flags, job runs; subscribers' numbers at "
                             "least 60)")
    parser.add_argument("--clones-per-day", type=int, default=20,
                        help="registered IMEIs a day seen with enough SIMs to be flagged")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-broker", action="store_true",
                        help="keep the embedded broker's messages all year (it has no "
                             "retention) instead of restarting it empty at each month's end")
    parser.add_argument("--timeline", type=Path,
                        help="save each month's timeline as DIR/month-NN.npz")
    args = parser.parse_args()
    fold_s = args.fold_every_s or max(1, round(args.day_s / FOLDS_PER_DAY))
    retention_s = max(1, round(args.day_s))
    # A cron's seconds step from a first second, within the minute.
    retention_at = min(fold_s // 2, MINUTE_S - 1 - retention_s)
    if retention_at < 0:
        raise SystemExit(f"--day-s {args.day_s:g}: a day's retention must come at most "
                         f"every {MINUTE_S - 1} s (cron's seconds)")
    flag_days = max(args.keep_days, default_clones().window_days)
    with embedded_services("eir-year-") as (services, scratch):
        port = free_port()
        env = {"EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
               "EIR_KAFKA__CLIENT": "confluent", "EIR_KAFKA__ATTACH_TOPIC": ATTACH_TOPIC,
               "EIR_KAFKA__REGISTRY_TOPIC": REGISTRY_TOPIC,
               "EIR_KAFKA__GROUP_ID": "year", "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
               "EIR_POSTGRES__DSN": services.postgres.dsn,
               "EIR_STATE__DIR": str(scratch / "state"), "EIR_HTTP__PORT": str(port),
               "EIR_JOBS__RECONCILE_CRON": "", "EIR_JOBS__CONSISTENCY_CRON": "",
               "EIR_JOBS__FOLD_CRON": f"*/{fold_s} * * * * *",
               # Half a fold's period after a fold, as the product's defaults keep them apart.
               "EIR_JOBS__RETENTION_CRON": f"{retention_at}/{retention_s} * * * * *",
               "EIR_NOTICES__SWEEP_EVERY_S": "1",
               "EIR_NOTICES__QUIET_START": "00:00", "EIR_NOTICES__QUIET_END": "00:00",
               "EIR_HISTORY__KEEP_DAYS": str(args.keep_days),
               "EIR_RETENTION__CLOSED_NOTICE_DAYS": str(args.keep_days),
               "EIR_RETENTION__JOB_RUN_DAYS": str(args.keep_days),
               "EIR_RETENTION__REGISTRY_INCARNATION_DAYS": str(args.keep_days),
               "EIR_NOTICES__CUT_IDLE_DAYS": str(args.keep_days),
               "EIR_RETENTION__SUBSCRIBER_DAYS": str(max(args.keep_days, SUBSCRIBER_DAYS_MIN)),
               "EIR_POLICY__FILE": str(flags_lasting(flag_days, scratch / "policy.toml")),
               # The bench's attaches are stamped now: none is late. A worker refuses flags
               # that a late attach could outlive.
               "EIR_WORKER__MAX_EVENT_AGE_DAYS": str(flag_days - 1)}
        migrate(services.postgres.dsn)
        feed = Feed(services.broker)
        country = build_country(CountrySpec(devices=args.devices))
        save_snapshot(EnforcementState(country.lists, country.devices,
                                       load_policy(env["EIR_POLICY__FILE"])),
                      Path(env["EIR_STATE__DIR"]))
        changes = Changes(country, args.seed)
        worker = WorkerProcess(env, scratch / "clock")
        worker.set_time(START_MS)
        worker.start()
        first_ready = wait_ready(port, READY_TIMEOUT_S, SCRAPE_S)
        say(f"{args.devices:,} devices; {args.changes_per_day:,} changes and "
            f"{args.attaches_per_s * args.day_s:,.0f} attaches a simulated day of "
            f"{args.day_s:g} s; fold every {fold_s} s; first start ready in {first_ready:.1f} s")
        months = []
        try:
            for month in range(1, args.months + 1):
                months.append(run_month(month, args, worker, feed, changes, country, env,
                                        port))
                say(line(months[-1]))
        finally:
            feed.producer.close()
            if worker.alive():
                worker.kill()
        emit(summary(months, args, first_ready))


class Feed:
    """The embedded broker with the bench's topics on it, and the bench's producer."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self._topics()
        self.producer = self._producer()

    def empty(self) -> None:
        """The broker restarted with nothing in it, the topics made again: what a broker
        with retention would hold of a month gone by."""
        self.producer.close()
        self.broker.stop()
        self.broker.start()
        self._topics()
        self.producer = self._producer()

    def _topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        admin.create_topics([NewTopic(REGISTRY_TOPIC, num_partitions=1, replication_factor=1),
                             NewTopic(ATTACH_TOPIC, num_partitions=PARTITIONS,
                                      replication_factor=1)])
        admin.close()

    def _producer(self) -> ConfluentProducer:
        return ConfluentProducer({"bootstrap.servers": self.broker.bootstrap, "linger.ms": 5})


def run_month(month: int, args, worker: WorkerProcess, feed: Feed, changes: Changes,
              country: Country, env: dict[str, str], port: int) -> Month:
    broker_pid = feed.broker.pid()
    producer = feed.producer
    scraper = Scraper(port)
    scraper.start()
    broker_cpu_before = cpu_seconds(broker_pid)
    before = scrape(f"http://127.0.0.1:{port}/metrics")
    consumed_before, worker_cpu_before = before.get(CONSUMED, 0.0), before.get(CPU, 0.0)
    ticks_per_day = max(1, round(args.day_s / TICK_S))
    per_tick_changes = args.changes_per_day / ticks_per_day
    per_tick_attaches = round(args.attaches_per_s * TICK_S)
    produced: list[tuple[float, int, int]] = []
    sent, owed = 0, 0.0
    started = time.monotonic()
    rows: dict[str, int] = {}
    row_step = max(1, ticks_per_day // ROW_PHASES)
    for day in range((month - 1) * MONTH_DAYS, month * MONTH_DAYS):
        row_tick = (day % ROW_DAYS) * row_step // ROW_DAYS
        for tick in range(ticks_per_day):
            if day >= month * MONTH_DAYS - ROW_DAYS and tick % row_step == row_tick:
                rows = {name: max(n, rows.get(name, 0))
                        for name, n in table_rows(env["EIR_POSTGRES__DSN"]).items()}
            due = started + ((day - (month - 1) * MONTH_DAYS) * ticks_per_day + tick) * TICK_S
            time.sleep(max(0.0, due - time.monotonic()))
            now_ms = START_MS + day * MS_PER_DAY + tick * MS_PER_DAY // ticks_per_day
            worker.set_time(now_ms)
            owed += per_tick_changes
            count, owed = int(owed), owed - int(owed)
            events = changes.take(count, now_ms)
            at = time.monotonic()
            producer.publish([Publication(env["EIR_KAFKA__REGISTRY_TOPIC"], None, e)
                              for e in events], FLUSH_S)
            sent += count
            produced.append((at, sent, count))
            attaches = attach_messages(country, env["EIR_KAFKA__ATTACH_TOPIC"],
                                       per_tick_attaches, day * ticks_per_day + tick, now_ms)
            if tick == 0:
                attaches += clone_messages(country, env["EIR_KAFKA__ATTACH_TOPIC"],
                                           args.clones_per_day, args.seed * DAYS_SEEDED + day,
                                           now_ms)
            producer.publish(attaches, FLUSH_S)
    wall_s = time.monotonic() - started
    broker_cpu = (cpu_seconds(broker_pid) - broker_cpu_before) / wall_s
    worker_cpu = (scrape(f"http://127.0.0.1:{port}/metrics").get(CPU, 0.0)
                  - worker_cpu_before) / wall_s
    drain = time.monotonic() + DRAIN_TIMEOUT_S
    while scraper.applied() < sent:
        if time.monotonic() > drain:
            raise TimeoutError(f"{scraper.applied():,.0f} of {sent:,} changes applied")
        time.sleep(SCRAPE_S)
    scraper.halt.set()
    scraper.join()
    if not scraper.rss:
        raise RuntimeError(f"the worker's /metrics never gave {RSS}")
    figures = scrape(f"http://127.0.0.1:{port}/metrics")
    waited = latencies(produced, scraper.samples)
    worst = slowest(produced, waited, scraper.jobs, started, args.day_s)
    if args.timeline is not None:
        save_timeline(args.timeline / f"month-{month:02d}.npz", produced, scraper.samples,
                      scraper.jobs, started)
    broker_rss_mb = round(process_rss_kib(broker_pid) / KIB_PER_MIB)
    worker.kill()
    if not args.keep_broker:
        feed.empty()
    worker.start()
    restart_s = wait_ready(port, READY_TIMEOUT_S, SCRAPE_S)
    return Month(month, round(float(np.percentile(waited, P50)), 3),
                 round(float(np.percentile(waited, P99)), 3), sent,
                 round((figures.get(CONSUMED, 0.0) - consumed_before) / wall_s),
                 round(float(np.median(scraper.rss)) / (1 << 20)),
                 round(max(scraper.rss) / (1 << 20)), rows, round(restart_s, 1),
                 round(figures.get(FOLD_RUNS, 0.0)),
                 round(figures.get(FOLD_SECONDS, 0.0) / max(figures.get(FOLD_RUNS, 0.0), 1), 2),
                 round(worker_cpu, 2), round(broker_cpu, 2), broker_rss_mb, worst)


def line(m: Month) -> str:
    rows = " ".join(f"{name}={n:,}" for name, n in m.rows.items())
    return (f"month {m.month:2d}: latency p50 {m.latency_p50_s * MS_PER_S:.0f} ms p99 "
            f"{m.latency_p99_s * MS_PER_S:.0f} ms ({m.changes:,} changes), "
            f"{m.attaches_per_s:,.0f} attaches/s, RSS {m.rss_mb:,.0f} MB "
            f"(max {m.rss_max_mb:,.0f}), "
            f"{m.folds} folds of {m.fold_s_mean:.1f} s, restart {m.restart_s:.1f} s, "
            f"worker {m.worker_cores:.2f} cores, broker {m.broker_cores:.2f} cores "
            f"{m.broker_rss_mb:,.0f} MB; slowest {m.slowest.latency_s:.1f} s, produced on day "
            f"{m.slowest.at_day:.1f}, while {plural(m.slowest.folds, 'fold')} and "
            f"{plural(m.slowest.retentions, 'retention')} ended; "
            f"{m.slowest.slow_share:.2%} of changes over {SLOW_S:g} s; rows {rows}")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary(months: list[Month], args, first_ready: float) -> dict[str, object]:
    first, last = months[0], months[-1]
    base = months[min(3, len(months)) - 1]
    ratios = {name: round(n / max(base.rows.get(name, 0), 1), 2)
              for name, n in last.rows.items() if n or base.rows.get(name)}
    return {"devices": args.devices, "months": len(months), "fold_every_s": args.fold_every_s,
            "broker_emptied_monthly": not args.keep_broker,
            "keep_days": args.keep_days, "clones_per_day": args.clones_per_day,
            "changes_per_day": args.changes_per_day, "day_s": args.day_s,
            "attaches_per_s": args.attaches_per_s, "first_ready_s": round(first_ready, 1),
            "latency_p99_s_max": max(m.latency_p99_s for m in months),
            "latency_p99_ratio_m12_m1": round(last.latency_p99_s / max(first.latency_p99_s,
                                                                       SCRAPE_S), 2),
            "rss_growth": round(last.rss_mb / first.rss_mb - 1, 3),
            "table_rows_ratio_max": max(ratios.values(), default=0.0),
            "table_rows_ratio": ratios, "restart_s_max": max(m.restart_s for m in months),
            "months_detail": [{**m.__dict__, "slowest": m.slowest.__dict__}
                              for m in months]}


if __name__ == "__main__":
    main()
