"""`eir-enforcer demo`: the worker on the embedded broker and database, fed a synthetic
country and steady attach traffic, with live progress and /metrics. Its clock runs fast:
--days pass in --duration seconds, so a notice's whole month (warning, reminders, cutoff)
and the registry's transfers that restore cut pairs are seen in a minute. Stops on Ctrl-C
or after --duration."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
import numpy as np
import psycopg
from kafka import KafkaProducer

from consumers.kafka import security
from enforcer.clock import MS_PER_DAY, MS_PER_S, NS_PER_MS, AcceleratedClock, Clock
from enforcer.config import Config
from enforcer.db.migrate import migrate
from enforcer.events import NO_KEY, AttachBatch
from enforcer.services import EmbeddedServices, ServicePorts
from enforcer.synth import Country, TrafficMix, attach_traffic
from enforcer.tour import command, run_tour, say
from enforcer.worker import build_worker
from metrics.worker import WorkerMetrics

# How a malformed IMEI arrives in the demo's traffic: a placeholder burnt into basebands.
MALFORMED_IMEI = "004999010640000"
BAD_MESSAGE = b'{"imei": "35209900176148", "imsi": "not-an-imsi"}'
TICK_S = 1.0
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


def _encode(pool: AttachBatch, count: int, seed: int, now_ms: int,
            bad_share: float) -> list[tuple[bytes, bytes]]:
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
        out.append((imei.encode(), value))
    return out


def _produce(config: Config, country: Country, options: DemoOptions, clock: Clock,
             stop: threading.Event, sent: list[int]) -> None:
    """Attach traffic at a steady rate, keyed by IMEI so a device stays in one partition."""
    producer = KafkaProducer(**security(config.kafka))
    # The SIMs active in the demo's hour: each attaches about every POOL_SECONDS seconds.
    pool = attach_traffic(country, options.rate * POOL_SECONDS, TrafficMix(), seed=0,
                          start_ms=0)
    second = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            for key, value in _encode(pool, options.rate, second, clock.now_ms(),
                                      options.bad_share):
                producer.send(config.kafka.attach_topic, key=key, value=value)
            producer.flush()
            sent[0] += options.rate
            second += 1
            stop.wait(max(TICK_S - (time.monotonic() - started), 0))
    finally:
        producer.close()


def _total(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _notices_line(metrics: WorkerMetrics, day: float) -> str:
    def step(name: str) -> float:
        return _total(metrics, "eir_notice_steps_total", step=name)
    return (f"  day {day:4.1f}  notices opened {_total(metrics, 'eir_notices_opened_total'):>6,.0f}"
            f"  warnings {step('warning'):>6,.0f}  reminders {step('reminder'):>6,.0f}"
            f"  cutoffs {step('cutoff'):>5,.0f}  restores {step('resolved'):>4,.0f}"
            f"  lapsed {_total(metrics, 'eir_notices_closed_total', state='lapsed'):>5,.0f}"
            f"  cut now {_total(metrics, 'eir_cutoffs'):>5,.0f}"
            f"  outbox backlog {_total(metrics, 'eir_outbox_backlog'):>4,.0f}")


def _transfer_cut_pairs(config: Config, clock: Clock) -> int:
    """The registry's answer to some cutoffs: the device transferred to the SIM using it."""
    with psycopg.connect(config.postgres.dsn) as conn:
        cut = conn.execute("SELECT imei_key, msisdn FROM notices WHERE state = 'cut'"
                           " AND scope = 'pair' ORDER BY id LIMIT %s", (TRANSFERS,)).fetchall()
    producer = KafkaProducer(**security(config.kafka))
    for imei_key, msisdn in cut:
        producer.send(config.kafka.registry_topic, key=f"{imei_key:014d}".encode(),
                      value=msgspec.json.encode({
                          "event_id": f"demo-transfer-{imei_key}-{msisdn}",
                          "type": "ownership_set", "time": clock.now_ms(),
                          "imeis": [f"{imei_key:014d}"], "owner_msisdn": str(msisdn),
                          "via": "transfer_direct"}))
    producer.flush()
    producer.close()
    return len(cut)


def _progress(metrics: WorkerMetrics, sent: int, took_s: float,
              last: tuple[float, float]) -> tuple[str, tuple[float, float]]:
    """One progress line; per-second figures against `last` (events decided, rows written)."""
    decided = _total(metrics, "eir_events_consumed_total")
    writes = _total(metrics, "eir_history_rows_written_total")
    mix = {v: _total(metrics, "eir_events_consumed_total", verdict=v)
           for v in ("WHITELISTED", "GREYLISTED", "BLACKLISTED")}
    share = " ".join(f"{v[0]}{n / decided:.1%}" for v, n in mix.items()) if decided else "-"
    new_events, new_writes = decided - last[0], writes - last[1]
    line = (f"  {took_s:5.0f} s  sent {sent:>9,}  decided {decided:>9,.0f} "
            f"({new_events / TICK_S:>7,.0f}/s)  {share}  "
            f"DLQ {_total(metrics, 'eir_dlq_messages_total'):>6,.0f}  "
            f"lag {_total(metrics, 'eir_consumer_lag'):>7,.0f}  history rows {writes:>8,.0f}"
            f" ({new_writes / new_events if new_events else 0:.3f} writes/event now)  "
            f"effects {_total(metrics, 'eir_effects_sent_total'):>7,.0f}")
    return line, (decided, writes)


def run_demo(config: Config, options: DemoOptions) -> int:
    country = run_tour(config, devices=options.devices,
                       events=min(options.devices, TOUR_EVENTS))
    services = EmbeddedServices.at(
        Path(config.services.dir),
        ServicePorts(config.services.kafka_port, config.services.postgres_port),
        config.postgres.dsn.rsplit("/", 1)[-1])
    say(f"5. Starting the embedded broker and PostgreSQL under {config.services.dir}/ ...")
    services.up()
    migrate(config.postgres.dsn)
    speed = options.days * MS_PER_DAY / (options.duration_s * MS_PER_S)
    start_ms = time.time_ns() // NS_PER_MS
    clock = AcceleratedClock(start_ms, speed)
    config = replace(config, notices=replace(config.notices, sweep_every_s=DEMO_SWEEP_S,
                                             count_every_s=DEMO_COUNT_S))
    worker = build_worker(config, clock)
    say(f"6. The worker consumes '{config.kafka.attach_topic}' ({options.rate:,} attaches/s, "
        f"{options.bad_share:.1%} of them broken); metrics on "
        f"http://127.0.0.1:{config.http.port}/metrics. Its clock runs {speed:,.0f} times "
        f"fast: {options.days:g} days in {options.duration_s:g} s. From day {TRANSFER_DAY} "
        f"the registry transfers some cut devices to their users. Ctrl-C stops.")
    stop, sent = threading.Event(), [0]
    producer = threading.Thread(target=_produce,
                                args=(config, country, options, clock, stop, sent))
    consumer = threading.Thread(target=worker.run, args=(stop,))
    producer.start()
    consumer.start()
    started, last, transferred = time.monotonic(), (0.0, 0.0), False
    try:
        while time.monotonic() - started < options.duration_s:
            time.sleep(TICK_S)
            line, last = _progress(worker.metrics, sent[0], time.monotonic() - started, last)
            say(line)
            day = (clock.now_ms() - start_ms) / MS_PER_DAY
            say(_notices_line(worker.metrics, day))
            if day >= TRANSFER_DAY and not transferred:
                say(f"  the registry transfers {_transfer_cut_pairs(config, clock)} cut "
                    "devices to the SIMs using them ...")
                transferred = True
    except KeyboardInterrupt:
        say("  stopping ...")
    finally:
        stop.set()
        producer.join()
        consumer.join()
        worker.close()
    _summary(config)
    if options.keep_services:
        say(f"Services left running; stop them with: {command()} services down")
    else:
        services.down()
    return 0


def _summary(config: Config) -> None:
    with psycopg.connect(config.postgres.dsn) as conn:
        (rows, pairs) = conn.execute(
            "SELECT count(*), count(DISTINCT (imei_key, imsi)) FROM slot_usage").fetchone()
        (imei,) = conn.execute("SELECT imei_key FROM slot_usage WHERE slot = 1"
                               " ORDER BY last_seen DESC LIMIT 1").fetchone() or (None,)
    say(f"7. slot_usage holds {rows:,} rows for {pairs:,} (IMEI, IMSI) pairs.")
    if imei is not None:
        say(f"   who used that device: {command()} history {imei:014d}")
