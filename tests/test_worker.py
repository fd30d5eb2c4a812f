"""The worker against the real broker and the real database: events in, history rows,
dead letters and effect messages out, offsets committed only after the database commit,
restarts that neither lose nor double-count, and a SIGTERM that drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
import urllib.request

import msgspec
import psycopg
import pytest
from kafka import KafkaProducer

from consumers.kafka import CONFLUENT, KAFKA_PYTHON, producer, registry_consumer
from consumers.publish import NotAcknowledged, Publication, publish_all
from enforcer.config import FETCH_WAIT_MS, load_config
from enforcer.embedded.services import free_port
from tests.harness.faults import committed_offsets
from tests.kafkatools import committed, produce, read_all, wait_for
from tests.test_decide import BUYER, DUAL, OWNER, SINGLE, STOLEN, full, home_imsi

MINUTE_MS = 60_000
BACKLOG = 50
# Both Kafka clients pass the same end-to-end tests.
CLIENTS = [KAFKA_PYTHON, CONFLUENT]
PARTITIONS = 4  # what the broker gives an auto-created topic
# The rest of the topic, after the takeover, takes a few seconds of its own.
TAKEOVER_MARGIN_S = 15


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ending_within_a_month_ms(span_ms: int) -> int:
    """Now; or, when the `span_ms` before now would cross this month's start, the month's
    last millisecond before it. Slot usage is kept by month: a pair seen on both sides of a
    month's start is a row in each, which a test counting rows would not expect."""
    now = now_ms()
    day = datetime.fromtimestamp(now / 1000, timezone.utc)
    month_start = int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                      .timestamp() * 1000)
    return now if now - span_ms >= month_start else month_start - 1


def attach(imei: str | int, msisdn: int, ts: int, **extra: object) -> dict[str, object]:
    return {"imei": str(imei), "imsi": home_imsi(msisdn), "msisdn": str(msisdn), "ts": ts,
            **extra}


def history(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT imei_key, imsi, msisdn, slot, first_seen, last_seen, days"
                            " FROM slot_usage ORDER BY imei_key, imsi").fetchall()


@pytest.mark.parametrize("client", CLIENTS)
def test_events_in_history_rows_and_effects_out(env, worker, dsn, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], [
        attach(full(DUAL[0]), OWNER, t), attach(DUAL[1], BUYER, t + 1),
        attach(SINGLE, BUYER, t + 2), attach(full(STOLEN), OWNER, t + 3),
        attach(SINGLE, BUYER, t + 4)])
    worker()
    wait_for(lambda: len(history(dsn)) == 4)
    rows = {(r[0], r[2]): r for r in history(dsn)}
    assert rows[(DUAL[0], OWNER)][3] == 0 and rows[(DUAL[1], BUYER)][3] == 1
    # SINGLE seen twice with the buyer's SIM: one notice, one warning.
    wait_for(lambda: len(read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                                  env["EIR_KAFKA__NOTIFICATIONS_TOPIC"])) == 2)
    notices = read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__NOTIFICATIONS_TOPIC"])
    warned = sorted((b["imei"], b["msisdn"], b["step"], b["kind"])
                    for b in (msgspec.json.decode(m.value) for m in notices))
    assert warned == [(f"{DUAL[1]:014d}", str(BUYER), "warning", "ownership_transfer"),
                      (f"{SINGLE:014d}", str(BUYER), "warning", "ownership_transfer")]
    assert all(dict(m.headers)["idempotency-key"].decode().endswith("-warning")
               for m in notices)
    wait_for(lambda: read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                              env["EIR_KAFKA__COMMANDS_TOPIC"]))
    commands = read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__COMMANDS_TOPIC"])
    assert [dict(m.headers)["idempotency-key"].decode() for m in commands] == [
        f"cutoff:imei:{STOLEN}:*"]
    wait_for(lambda: committed(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"]) == 5)


@pytest.mark.parametrize("client", CLIENTS)
def test_bad_messages_go_to_the_dead_letter_topic_with_reasons(env, worker, dsn, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    t = now_ms()
    bad = [b"not json", b"[1, 2]", attach(SINGLE, OWNER, t) | {"imsi": "12"},
           attach(SINGLE, OWNER, t) | {"msisdn": None}, attach(SINGLE, OWNER, 1),
           attach(SINGLE, OWNER, "yesterday"), b"\xff\xfe", b"x" * 5000]
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            bad + [attach(SINGLE, OWNER, t)])
    worker()
    wait_for(lambda: len(history(dsn)) == 1)
    wait_for(lambda: len(read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                                  env["EIR_KAFKA__ATTACH_DLQ_TOPIC"])) >= len(bad))
    dlq = read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_DLQ_TOPIC"])
    reasons = [dict(m.headers)["dlq-reason"].decode() for m in dlq]
    assert reasons == ["not_json", "not_an_object", "bad_imsi", "missing_field", "absurd_ts",
                       "bad_ts", "not_json", "too_large"]
    first = dict(dlq[0].headers)
    assert dlq[0].value == b"not json"
    assert (first["dlq-source-topic"].decode(), first["dlq-source-offset"]) == (
        env["EIR_KAFKA__ATTACH_TOPIC"], b"0")


def test_offsets_are_committed_only_after_the_database_commit(env, worker, dsn) -> None:
    with psycopg.connect(dsn) as conn:  # the history table goes missing: writes fail
        conn.execute("ALTER TABLE slot_usage RENAME TO slot_usage_away")
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, OWNER, t), attach(DUAL[0], OWNER, t)])
    running = worker()
    wait_for(lambda: running.worker.metrics.batch_failures.labels("database")._value.get() >= 2)
    assert committed(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                     env["EIR_KAFKA__ATTACH_TOPIC"]) == 0
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE slot_usage_away RENAME TO slot_usage")
    wait_for(lambda: len(history(dsn)) == 2)
    wait_for(lambda: committed(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"]) == 2)


def lag(running, topic: str) -> float:
    """eir_consumer_lag over the topic's partitions, as a scrape reads it."""
    return sum(sample.value for metric in running.worker.metrics.collectors.collect()
               if metric.name == "eir_consumer_lag" for sample in metric.samples
               if sample.labels["topic"] == topic)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_lag_gauge_shows_a_known_backlog_until_it_is_consumed(env, worker, dsn,
                                                                  client) -> None:
    env |= {"EIR_KAFKA__CLIENT": client, "EIR_WORKER__RETRY_MAX_S": "1"}
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    with psycopg.connect(dsn) as conn:  # the history table goes missing: the backlog stays
        conn.execute("ALTER TABLE slot_usage RENAME TO slot_usage_away")
    # One batch: the embedded broker's ListOffsets answers 1 for its end, the fetch 50.
    t = now_ms()
    one_batch = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=MINUTE_MS)
    for i in range(BACKLOG):
        one_batch.send(topic, key=b"k", value=msgspec.json.encode(attach(SINGLE, OWNER, t + i)))
    one_batch.flush()
    one_batch.close()
    running = worker()
    wait_for(lambda: lag(running, topic) == BACKLOG)
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE slot_usage_away RENAME TO slot_usage")
    wait_for(lambda: committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic) == BACKLOG)
    wait_for(lambda: lag(running, topic) == 0)


def test_two_forms_of_one_imei_land_on_one_key(env, worker, dsn) -> None:
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], [
        attach(f"imei-{full(SINGLE)}", OWNER, t), attach(f"imeisv-{SINGLE}42", OWNER, t + 1),
        attach(f" {SINGLE} ", OWNER, t + 2)])
    worker()
    wait_for(lambda: committed(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"]) == 3)
    assert [(r[0], r[2]) for r in history(dsn)] == [(SINGLE, OWNER)]


def spawn(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "enforcer.app.cli", "run"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stream(count: int) -> list[dict[str, object]]:
    """count attaches of 50 SIMs on SINGLE, a minute apart, ending now (or before this
    month's start, if they would cross it): 50 pairs over days."""
    start = ending_within_a_month_ms(count * MINUTE_MS) - count * MINUTE_MS
    return [attach(SINGLE, 989120000000 + i % 50, start + i * MINUTE_MS) for i in range(count)]


def expected_history(events: list[dict[str, object]]) -> dict[int, tuple[int, int]]:
    """msisdn -> (first_seen ms, last_seen ms) from the events themselves."""
    out: dict[int, tuple[int, int]] = {}
    for e in events:
        msisdn, ts = int(e["msisdn"]), int(e["ts"])
        first, last = out.get(msisdn, (ts, ts))
        out[msisdn] = (min(first, ts), max(last, ts))
    return out


@pytest.mark.parametrize("client", CLIENTS)
def test_a_killed_worker_resumes_without_losing_or_double_counting(env, dsn, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    events = stream(3000)
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], events)
    small_batches = {**env, "EIR_WORKER__BATCH_MAX_EVENTS": "200"}
    first = spawn(small_batches)
    bootstrap, group, topic = (env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"])
    wait_for(lambda: committed(bootstrap, group, topic) >= 400, every_s=0.05)
    first.kill()
    first.wait()
    assert committed(bootstrap, group, topic) < len(events)
    second = spawn(small_batches)
    try:
        wait_for(lambda: committed(bootstrap, group, topic) == len(events))
    finally:
        second.terminate()
        second.wait()
    assert_history_is(dsn, events)


def assert_history_is(dsn: str, events: list[dict[str, object]]) -> None:
    """Every pair of the events in the history, first seen exactly, last seen to the hour."""
    rows = history(dsn)
    expected = expected_history(events)
    assert len(rows) == len(expected)
    for _, _, msisdn, _, first_seen, last_seen, _ in rows:
        first_ms, last_ms = expected[msisdn]
        assert int(first_seen.timestamp() * 1000) == first_ms
        assert int(last_seen.timestamp() * 1000) // 3_600_000 == last_ms // 3_600_000


def test_a_dead_workers_partitions_move_to_the_other_and_nothing_is_lost(env, dsn) -> None:
    """Two worker processes in one group share four partitions; one is SIGKILLed; within
    the session timeout the other holds them all and finishes the topic."""
    events = stream(4000)
    bootstrap, group, topic = (env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"])
    produce(bootstrap, topic, events, partitions=PARTITIONS)
    small_batches = {**env, "EIR_WORKER__BATCH_MAX_EVENTS": "50"}
    doomed, survivor = spawn(small_batches), spawn(small_batches)
    try:
        wait_for(lambda: len(committed_offsets(bootstrap, group, topic)) == PARTITIONS
                 and sum(committed_offsets(bootstrap, group, topic).values()) >= 1000,
                 every_s=0.05)
        doomed.kill()
        doomed.wait()
        killed_at = time.monotonic()
        assert sum(committed_offsets(bootstrap, group, topic).values()) < len(events)
        wait_for(lambda: sum(committed_offsets(bootstrap, group, topic).values()) == len(events),
                 timeout_s=90)
        took_s = time.monotonic() - killed_at
    finally:
        survivor.terminate()
        survivor.wait()
    session_s = int(env["EIR_KAFKA__SESSION_TIMEOUT_MS"]) / 1000
    assert took_s < session_s + TAKEOVER_MARGIN_S
    assert_history_is(dsn, events)


def test_sigterm_finishes_the_batch_commits_and_exits_0(env, dsn) -> None:
    events = stream(2000)
    bootstrap, group, topic = (env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"])
    produce(bootstrap, topic, events)
    process = spawn({**env, "EIR_WORKER__BATCH_MAX_EVENTS": "100"})
    wait_for(lambda: committed(bootstrap, group, topic) >= 100, every_s=0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, process.stderr.read().decode()
    done = committed(bootstrap, group, topic)
    assert done % 100 == 0 or done == len(events)
    seen = {r[2] for r in history(dsn)}
    assert seen == {int(e["msisdn"]) for e in events[:done]}


def test_metrics_are_served_while_the_worker_runs(env, dsn) -> None:
    port = free_port()
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], [
        attach(SINGLE, OWNER, t), attach(SINGLE, BUYER, t + 1), b"junk"])
    process = spawn({**env, "EIR_HTTP__PORT": str(port)})
    try:
        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                    return response.read().decode()
            except OSError:
                return ""

        wait_for(lambda: 'eir_dlq_messages_total{reason="not_json"} 1.0' in scrape())
        text = scrape()
    finally:
        process.terminate()
        process.wait()
    assert 'eir_events_consumed_total{rule="owner",verdict="WHITELISTED"} 1.0' in text
    assert 'eir_events_consumed_total{rule="other_cartable",verdict="GREYLISTED"} 1.0' in text
    assert "eir_history_rows_written_total 2.0" in text
    assert 'eir_list_size{list="white"} 7.0' in text
    assert "eir_lists_generation 1.0" in text
    assert "eir_batch_duration_seconds_count" in text and "eir_event_age_seconds_count" in text


def test_every_verdict_can_be_published(env, worker) -> None:
    env["EIR_KAFKA__PUBLISH_VERDICTS"] = "true"
    env["EIR_KAFKA__VERDICTS_TOPIC"] = f"{env['EIR_KAFKA__ATTACH_TOPIC']}.verdicts"
    t = now_ms()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, OWNER, t), attach(full(STOLEN), BUYER, t + 1)])
    worker()
    wait_for(lambda: committed(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__GROUP_ID"],
                               env["EIR_KAFKA__ATTACH_TOPIC"]) == 2)
    verdicts = [msgspec.json.decode(m.value) for m in read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                                                               env["EIR_KAFKA__VERDICTS_TOPIC"])]
    # Keyed by IMEI over several partitions: the order between two devices is not kept.
    assert sorted((v["imei"], v["verdict"], v["rule"]) for v in verdicts) == sorted([
        (f"{SINGLE:014d}", "WHITELISTED", "owner"), (f"{STOLEN:014d}", "BLACKLISTED",
                                                     "blacklisted")])


def test_a_worker_passes_the_interpreter_lock_between_its_threads_as_configured(
        env, worker) -> None:
    """A thread that computes keeps the lock at most worker.switch_interval_ms while the
    registry thread waits for it."""
    before = sys.getswitchinterval()
    env["EIR_WORKER__SWITCH_INTERVAL_MS"] = "2.5"
    try:
        worker()
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("client", [KAFKA_PYTHON, CONFLUENT])
def test_either_client_reads_the_registry_with_the_longest_fetch_wait_allowed(env,
                                                                             client) -> None:
    """kafka-python refuses a fetch wait as long as its request timeout: the configuration
    allows none that a client refuses."""
    config = load_config(environ={**env, "EIR_KAFKA__CLIENT": client,
                                  "EIR_KAFKA__REGISTRY_FETCH_WAIT_MS": str(FETCH_WAIT_MS.highest)})
    registry_consumer(config.kafka).close()


def test_history_lists_the_sims_of_each_slot_masked_unless_revealed(env, worker, dsn) -> None:
    t = ending_within_a_month_ms(3 * 86_400_000)
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"], [
        attach(DUAL[0], OWNER, t - 3 * 86_400_000), attach(DUAL[0], OWNER, t),
        attach(DUAL[1], BUYER, t)])
    worker()
    wait_for(lambda: len(history(dsn)) == 2)

    def show(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "enforcer.app.cli", "history", str(DUAL[1]),
                              *extra], env={**os.environ, **env}, capture_output=True,
                             text=True, check=True)
        return msgspec.json.decode(out.stdout)

    masked, revealed = show(), show("--reveal")
    assert [s["slot"] for s in masked["slots"]] == [0, 1]
    (owner_use,) = revealed["slots"][0]["sims"]
    assert (owner_use["msisdn"], owner_use["days_seen"]) == (str(OWNER), 2)
    assert revealed["slots"][1]["sims"][0]["imsi"] == home_imsi(BUYER)
    assert masked["slots"][1]["sims"][0]["msisdn"] == "98912*****22"
    assert str(OWNER) not in msgspec.json.encode(masked).decode()


def test_a_message_the_broker_never_acknowledged_is_reported_not_sent(env) -> None:
    """librdkafka, like kafka-python, does not raise when a message fails: publish asks each
    message's delivery report, and publish_all turns a missing one into an error."""
    env = env | {"EIR_KAFKA__CLIENT": CONFLUENT,
                 "EIR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    nowhere = producer(load_config(environ=env).kafka)
    message = Publication("eir.commands", b"1", b"{}", (("idempotency-key", b"k"),))
    assert nowhere.publish([message], 1.0) == [None]
    with pytest.raises(NotAcknowledged):
        publish_all(nowhere, [message], 1.0)
    del nowhere  # not close(): that would wait for the queued message
