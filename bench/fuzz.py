"""A fuzz run: 100 k malformed attach messages (and 10 k registry changes) through a real
worker on the embedded broker and database.

    python bench/fuzz.py [--attaches 100000] [--registry 10000] [--seed 1]

The messages come from tests/harness/fuzz.py: random bytes, wrong types, huge numbers and
strings, Persian and Arabic-Indic digits, deep and enormous JSON, repeated keys, cut-off
messages, missing fields. Counts what was decided, what was dead-lettered (by reason),
what got another reason than the one it must get, what was lost, and whether the worker
was still running at the end. The last line is JSON.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from measure import counter, embedded_services, emit, say

from enforcer.config import load_config
from enforcer.db.migrate import migrate
from tests.harness.fuzz import fuzzed_attaches, fuzzed_registry_events
from enforcer.engine.state import EnforcementState
from enforcer.files.snapshots import save_snapshot
from enforcer.embedded.synth import CountrySpec, build_country
from enforcer.app.worker import build_worker
from rules.policy import load_policy

TOPIC = "attach-fuzz"
READ_IDLE_MS = 5000
MAX_REQUEST_BYTES = 1 << 21  # the enormous ones are tens of kB
POLL_S = 0.2


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                             max_request_size=MAX_REQUEST_BYTES)
    for value in values:
        producer.send(topic, key=b"fuzz", value=value)  # one partition: offset = position
    producer.flush()
    producer.close()


def dead_letters(bootstrap: str, topic: str) -> dict[int, str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=READ_IDLE_MS)
    found = {int(dict(m.headers)["dlq-source-offset"]): dict(m.headers)["dlq-reason"].decode()
             for m in consumer}
    consumer.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attaches", type=int, default=100_000)
    parser.add_argument("--registry", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with embedded_services("eir-fuzz-") as (services, scratch):
        config = load_config(environ={
            "EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
            "EIR_KAFKA__ATTACH_TOPIC": TOPIC, "EIR_KAFKA__ATTACH_DLQ_TOPIC": f"{TOPIC}.dlq",
            "EIR_KAFKA__REGISTRY_TOPIC": f"{TOPIC}.registry",
            "EIR_KAFKA__REGISTRY_DLQ_TOPIC": f"{TOPIC}.registry.dlq",
            "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000", "EIR_POSTGRES__DSN": services.postgres.dsn,
            "EIR_STATE__DIR": str(scratch / "state"), "EIR_HTTP__PORT": "0"})
        migrate(config.postgres.dsn)
        country = build_country(CountrySpec(devices=100_000))
        save_snapshot(EnforcementState(country.lists, country.devices, load_policy()),
                      Path(config.state.dir))
        now_ms = int(time.time() * 1000)
        attaches = fuzzed_attaches(args.seed, args.attaches, now_ms)
        changes = fuzzed_registry_events(args.seed + 1, args.devices, now_ms)
        say(f"producing {len(attaches):,} fuzzed attaches and {len(changes):,} registry changes")
        produce(config.kafka.bootstrap_servers, TOPIC, [f.value for f in attaches])
        produce(config.kafka.bootstrap_servers, config.kafka.registry_topic,
                [f.value for f in changes])

        worker = build_worker(config)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        started = time.perf_counter()
        thread.start()
        # The dead-letter counter holds the registry's too: wait for both streams.
        while (counter(worker, "eir_events_consumed_total")
               + counter(worker, "eir_dlq_messages_total") < len(attaches) + len(changes)
               and thread.is_alive()):
            time.sleep(POLL_S)
        took = time.perf_counter() - started
        alive = thread.is_alive()
        decided = int(counter(worker, "eir_events_consumed_total"))
        stop.set()
        thread.join()
        worker.close()
        attach_dead = dead_letters(config.kafka.bootstrap_servers, f"{TOPIC}.dlq")
        registry_dead = dead_letters(config.kafka.bootstrap_servers,
                                     config.kafka.registry_dlq_topic)

        wrong = sum(1 for i, f in enumerate(attaches)
                    if f.reason is not None and attach_dead.get(i) != f.reason)
        wrong += sum(1 for i, f in enumerate(changes)
                     if f.reason is not None and registry_dead.get(i) != f.reason)
        lost = len(attaches) - decided - len(attach_dead)
        by_category = Counter(f.category for f in attaches)
        for category, n in sorted(by_category.items()):
            say(f"  {category:>15}: {n:,}")
        say(f"{len(attaches):,} attaches and {len(changes):,} registry changes handled in"
            f" {took:.1f} s: {decided:,} decided, "
            f"{len(attach_dead):,} dead-lettered; registry: {len(registry_dead):,} "
            f"dead-lettered; wrong reason {wrong}, lost {lost}, "
            f"worker alive {alive}")
        emit({"attaches": len(attaches), "registry_changes": len(changes),
              "decided": decided, "attach_dead_letters": len(attach_dead),
              "registry_dead_letters": len(registry_dead),
              "attach_reasons": dict(Counter(attach_dead.values())),
              "wrong_reason": wrong, "lost": lost, "crashes": 0 if alive else 1,
              "seconds": round(took, 1)})


if __name__ == "__main__":
    main()
