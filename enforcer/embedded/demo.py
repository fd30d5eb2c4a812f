"""`eir-enforcer demo`: the worker on the embedded broker and database, fed a synthetic
country and steady attach traffic, with its progress shown live (enforcer/embedded/demoview.py) and
/metrics. Its clock runs fast:
--days pass in --duration seconds, so a notice's whole month (warning, reminders, cutoff)
and the registry's transfers that restore cut pairs are seen in a minute. Stops on Ctrl-C
or after --duration."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
import numpy as np
import psycopg

from consumers.kafka import PRODUCER_LINGER_MS, rdkafka_security
from consumers.publish import ConfluentProducer, Publication
from enforcer.clock import MS_PER_DAY, MS_PER_S, NS_PER_MS, AcceleratedClock, Clock
from enforcer.config import Config
from enforcer.db.history import latest_first_slot, usage_totals
from enforcer.db.migrate import migrate
from enforcer.db.notices import find
from enforcer.embedded.demoview import (FUNNEL, Display, Figures, columns, open_display, try_next,
                                        verdict_share)
from enforcer.engine.effects import FLUSH_TIMEOUT_S, Stream
from enforcer.engine.events import NO_KEY, AttachBatch
from enforcer.logs import logging_to
from enforcer.engine.lifecycle import NoticeState, Step
from enforcer.embedded.services import EmbeddedServices, ServicePorts, ServiceStatus
from enforcer.embedded.synth import Country, TrafficMix, attach_traffic
from enforcer.embedded.tour import command, run_tour, say, say_command
from enforcer.app.worker import Worker, build_worker
from metrics.worker import WorkerMetrics
from rules.policy import VERDICTS, Scope

# How a malformed IMEI arrives in the demo's traffic: a placeholder burnt into basebands.
MALFORMED_IMEI = "004999010640000"
BAD_MESSAGE = b'{"imei": "35209900176148", "imsi": "not-an-imsi"}'
# The producer sends a second's attaches at once, every TICK_S.
TICK_S = 1.0
# The display reads the worker's metrics this often: more than once a simulated day.
SAMPLE_S = 0.25
POOL_SECONDS = 10
TOUR_EVENTS = 1_000_000


@dataclass(frozen=True)
class DemoOptions:
    devices: int
    rate: int  # attach events per second
    duration_s: float
    bad_share: float
    keep_services: bool
    days: float = 40.0  # simulated days over duration_s


# The demo's sweeps: often enough that a simulated day shows its steps.
DEMO_SWEEP_S = 0.5
DEMO_COUNT_S = 1.0
# The day from which the registry transfers some cut pairs to their users (restores).
TRANSFER_DAY = 33
TRANSFERS = 100
# The demo's services, as `eir-enforcer services status` names them.
SERVICE_NAMES = {"kafka": "broker", "postgres": "PostgreSQL"}
# Where the worker's log lines go while the panel is shown (under services.dir).
DEMO_LOG = "demo.log"


def _encode(pool: AttachBatch, count: int, seed: int, now_ms: int, bad_share: float,
            topic: str) -> list[Publication]:
    """count attaches drawn from the pool, stamped now: devices attach again and again."""
    rng = np.random.default_rng(seed)
    batch = pool.take(rng.integers(0, len(pool), count))
    bad = rng.random(count) < bad_share
    out = []
    for i, (key, imsi, msisdn) in enumerate(zip(
            batch.imei_key.tolist(), batch.imsi.tolist(), batch.msisdn.tolist())):
        imei = MALFORMED_IMEI if key == NO_KEY else f"{key:014d}"
        value = BAD_MESSAGE if bad[i] else msgspec.json.encode(
            {"imei": imei, "imsi": str(imsi), "msisdn": str(msisdn), "ts": now_ms})
        out.append(Publication(topic, imei.encode(), value))
    return out


def _producer(config: Config) -> ConfluentProducer:
    """The demo's own producer: librdkafka, whatever kafka.client says. It shares this
    process, and its GIL, with the worker's Kafka clients; kafka-python would build and
    partition each message in Python, most of the process's GIL time at the demo's rate."""
    return ConfluentProducer({"linger.ms": PRODUCER_LINGER_MS,
                              **rdkafka_security(config.kafka)})


def _produce(config: Config, country: Country, options: DemoOptions, clock: Clock,
             stop: threading.Event, sent: list[int]) -> None:
    """Attach traffic at a steady rate, keyed by IMEI so a device stays in one partition.
    `sent` counts each message before the producer has it, so the worker can never have
    decided more than it says."""
    producer = _producer(config)
    # The SIMs active in the demo's hour: each attaches about every POOL_SECONDS seconds.
    pool = attach_traffic(country, options.rate * POOL_SECONDS, TrafficMix(), seed=0,
                          start_ms=0)
    second = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            messages = _encode(pool, options.rate, second, clock.now_ms(), options.bad_share,
                               config.kafka.attach_topic)
            sent[0] += len(messages)
            producer.publish(messages, FLUSH_TIMEOUT_S)
            second += 1
            stop.wait(max(TICK_S - (time.monotonic() - started), 0))
    finally:
        producer.close()


def _figures(metrics: WorkerMetrics, sent: list[int], elapsed_s: float, day: float) -> Figures:
    """The worker's own counters, read once from its metrics registry, and then what the
    demo sent: read in that order, every event decided was counted sent before."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in metrics.collectors.collect():
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))

    def total(name: str, **labels: str) -> int:
        return round(sum(value for have, value in samples[name]
                         if all(have.get(k) == v for k, v in labels.items())))

    def step(name: str) -> int:
        return total("eir_notice_steps_total", step=name)

    def sent_on(stream: str) -> int:
        return (total("eir_effects_sent_total", stream=stream)
                + total("eir_outbox_published_total", stream=stream))

    dead = defaultdict(int)
    for labels, value in samples["eir_dlq_messages_total"]:
        dead[labels["reason"]] += round(value)
    return Figures(
        elapsed_s=elapsed_s, day=day, sent=sent[0],
        verdicts=tuple(total("eir_events_consumed_total", verdict=v) for v in VERDICTS),
        dead_letters=dict(dead), lag=total("eir_consumer_lag"),
        upserts=total("eir_history_rows_written_total"),
        commands=sent_on(Stream.COMMANDS), sms=sent_on(Stream.NOTIFICATIONS),
        outbox_backlog=total("eir_outbox_backlog"),
        funnel=(total("eir_notices_opened_total"), step(Step.WARNING), step(Step.REMINDER),
                step(Step.CUTOFF), step(Step.RESOLVED),
                total("eir_notices_closed_total", state=NoticeState.LAPSED)),
        cut_now=total("eir_cutoffs"))


def _transfer_cut_pairs(config: Config, clock: Clock) -> int:
    """The registry's answer to some cutoffs: the device transferred to the SIM using it."""
    with psycopg.connect(config.postgres.dsn) as conn:
        cut = [row.notice for row in find(conn, state=NoticeState.CUT, scope=Scope.PAIR,
                                          limit=TRANSFERS)]
    producer = _producer(config)
    try:
        producer.publish([Publication(
            config.kafka.registry_topic, f"{n.imei_key:014d}".encode(), msgspec.json.encode({
                "event_id": f"demo-transfer-{n.imei_key:014d}-{n.msisdn}",
                "type": "ownership_set", "time": clock.now_ms(),
                "imeis": [f"{n.imei_key:014d}"], "owner_msisdn": str(n.msisdn),
                "via": "transfer_direct"})) for n in cut], FLUSH_TIMEOUT_S)
    finally:
        producer.close()
    return len(cut)


def _watch(display: Display, worker: Worker, sent: list[int], clock: Clock, start_ms: int,
           started: float, options: DemoOptions, config: Config) -> None:
    """Show the worker's metrics every SAMPLE_S until the duration is over (from
    `started`, monotonic seconds)."""
    transferred = False
    while time.monotonic() - started < options.duration_s:
        time.sleep(SAMPLE_S)
        day = (clock.now_ms() - start_ms) / MS_PER_DAY
        display.show(_figures(worker.metrics, sent, time.monotonic() - started, day))
        if day >= TRANSFER_DAY and not transferred:
            display.note(f"  day {day:.0f}: the registry transfers "
                         f"{_transfer_cut_pairs(config, clock)} cut devices to the SIMs "
                         "using them")
            transferred = True


def _up(statuses: list[ServiceStatus]) -> set[str]:
    return {s.name for s in statuses if s.up}


def run_demo(config: Config, options: DemoOptions) -> int:
    country = run_tour(config, size=options.devices,
                       events=min(options.devices, TOUR_EVENTS))
    services = EmbeddedServices.at(
        Path(config.services.dir),
        ServicePorts(config.services.kafka_port, config.services.postgres_port),
        config.postgres.dsn.rsplit("/", 1)[-1])
    # What was up before is left up after: someone else started it.
    was_up = _up(services.status())
    say(f"5. Starting the embedded broker and PostgreSQL under {config.services.dir}/ ..."
        if not was_up else
        f"5. The embedded {' and '.join(SERVICE_NAMES[n] for n in sorted(was_up))} under "
        f"{config.services.dir}/ already up: used, and left up after ...")
    services.up()
    migrate(config.postgres.dsn)
    with psycopg.connect(config.postgres.dsn) as conn:
        rows_before, _ = usage_totals(conn)
    speed = options.days * MS_PER_DAY / (options.duration_s * MS_PER_S)
    start_ms = time.time_ns() // NS_PER_MS
    clock = AcceleratedClock(start_ms, speed)
    config = replace(config, notices=replace(config.notices, sweep_every_s=DEMO_SWEEP_S,
                                             count_every_s=DEMO_COUNT_S))
    log_file = Path(config.services.dir) / DEMO_LOG
    with logging_to(log_file):
        figures = _run_worker(config, country, options, clock, start_ms, speed)
    steps = _summary(config, figures, rows_before, log_file)
    if not options.keep_services:
        # The broker first, as `services down` does.
        for service in (services.broker, services.postgres):
            if service.status().name not in was_up:
                service.stop()
    _try_next(steps, _up(services.status()), options.keep_services)
    return 0



def _run_worker(config: Config, country: Country, options: DemoOptions, clock: Clock,
                start_ms: int, speed: float) -> Figures:
    """The worker and the traffic until the duration is over or Ctrl-C; the worker's
    figures read after it stopped, so that they hold every step it took."""
    worker = build_worker(config, clock)
    # The transfers come only in a run of that many days (`--days`).
    transfers = (f" From day {TRANSFER_DAY} the registry transfers some cut devices to their "
                 "users." if options.days >= TRANSFER_DAY else "")
    say(f"6. The worker consumes '{config.kafka.attach_topic}' ({options.rate:,} attaches/s, "
        f"{options.bad_share:.1%} of them broken); metrics on "
        f"http://127.0.0.1:{config.http.port}/metrics. Its clock runs {speed:,.0f} times "
        f"fast: {options.days:g} days in {options.duration_s:g} s.{transfers} Ctrl-C stops.")
    stop, sent = threading.Event(), [0]
    producer = threading.Thread(target=_produce,
                                args=(config, country, options, clock, stop, sent))
    consumer = threading.Thread(target=worker.run, args=(stop,))
    # Open before the threads start and closed after they end: at a terminal, what they
    # write to stderr themselves (a thread's traceback) goes above the panel, not across it.
    display = open_display(say, options.duration_s, options.days)
    started = time.monotonic()
    producer.start()
    consumer.start()
    try:
        _watch(display, worker, sent, clock, start_ms, started, options, config)
    except KeyboardInterrupt:
        display.note("  stopping ...")
    finally:
        stop.set()
        elapsed_s, day = time.monotonic() - started, (clock.now_ms() - start_ms) / MS_PER_DAY
        producer.join()
        consumer.join()
        worker.close()
        figures = _figures(worker.metrics, sent, elapsed_s, day)
        display.show(figures)
        display.close()
    return figures


def _summary(config: Config, figures: Figures, rows_before: int,
             log_file: Path) -> list[tuple[list[str], str]]:
    """What the run did, in the words of the display; the commands to try next on what the
    database holds now. `rows_before`: slot_usage's rows from earlier runs on the same
    database."""
    with psycopg.connect(config.postgres.dsn) as conn:
        rows, pairs = usage_totals(conn)
        imei = latest_first_slot(conn)
        shown = find(conn, state=NoticeState.CUT, limit=1) or find(conn, limit=1)
    say(f"7. In {figures.elapsed_s:.0f} s and {figures.day:.0f} simulated days the worker "
        f"decided {figures.decided:,} attach events ({verdict_share(figures, ', ')}) and "
        f"sent {sum(figures.dead_letters.values()):,} to a dead-letter topic.")
    say("   Notices: " + ", ".join(f"{n:,} {s}" for s, n in zip(FUNNEL, figures.funnel))
        + f"; {figures.cut_now:,} subjects still cut off.")
    say(f"   slot_usage holds {rows:,} rows (one per IMEI, IMSI and month) for {pairs:,} "
        f"(IMEI, IMSI) pairs: {rows - rows_before:,} new from this run's "
        f"{figures.upserts:,} upserts (a batch upserts the row of each pair it saw)"
        + (f", {rows_before:,} from earlier runs." if rows_before else "."))
    say("   The worker's log lines:")
    say_command([str(log_file)], indent="      ")  # a path to copy: whole, however long
    steps = []
    if imei is not None:
        steps.append((["history", f"{imei:014d}"], "who used that device, slot by slot"))
    steps.append((["notices", "list", "--state", "cut"], "the subjects cut off, as JSON lines"))
    if shown:
        steps.append((["notices", "show", str(shown[0].notice.id)],
                      "one notice, its steps and its messages"))
    steps.append((["clones", "list"], "IMEIs flagged misused, and why"))
    return steps


def _try_next(steps: list[tuple[list[str], str]], up: set[str], keep_services: bool) -> None:
    """`steps`, after `services up` if the demo stopped a service (`up`: those still up),
    and `services down` last."""
    if up == set(SERVICE_NAMES):
        say("   The broker and PostgreSQL are still up"
            + (" (--keep-services)." if keep_services else ", as they were before the demo."))
    else:
        # tansu keeps its topics in memory: only PostgreSQL's rows outlive a restart.
        steps = [(["services", "up"], "the services again: PostgreSQL with what the demo "
                  "stored, the broker empty"), *steps]
    steps.append((["services", "down"], "stop the broker and PostgreSQL"))
    say("8. Try next:")
    for line in try_next([([command(), *words], why) for words, why in steps], columns()):
        print(line, flush=True)
