"""Registry events end to end, on the real broker and database: an event on the topic, then
the next attach decided as the registry now says; a restart that keeps the state without the
topic; replayed, invalid and inapplicable events."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import psycopg
import pytest
from kafka.admin import KafkaAdminClient

from enforcer.config import load_config
from enforcer.db.jobs import Outcome, recent_runs
from enforcer.db.registry_events import EventRow, Position, store_all
from enforcer.engine.devices import Devices
from enforcer.files.snapshots import save_snapshot
from tests.kafkatools import committed, produce, read_all, unique, wait_for
from tests.test_decide import BUYER, OWNER, SINGLE, STRANGER, UNREGISTERED, make_state
from tests.conftest import Running
from tests.test_worker import CLIENTS, attach, now_ms

NEW_IMEIS = ("35777777000000", "35777777000010")


def registry_event(event_id: str, type_: str, **body: object) -> dict[str, object]:
    return {"event_id": event_id, "type": type_, "time": now_ms(), **body}


def applied(running: Running) -> float:
    return running.worker.metrics.registry_events.labels("applied")._value.get()


def verdicts_of(env: dict[str, str], attaches: list[dict[str, object]]) -> set[tuple]:
    """Send attaches, wait until they are decided; (imei, msisdn, rule) of each."""
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    before = committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic)
    produce(bootstrap, topic, attaches)
    wait_for(lambda: committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic)
             == before + len(attaches))
    out = set()
    for message in read_all(bootstrap, env["EIR_KAFKA__VERDICTS_TOPIC"]):
        v = msgspec.json.decode(message.value)
        out.add((v["imei"], v["msisdn"], v["rule"]))
    return out


def with_verdicts(env: dict[str, str]) -> dict[str, str]:
    env["EIR_KAFKA__PUBLISH_VERDICTS"] = "true"
    env["EIR_KAFKA__VERDICTS_TOPIC"] = f"{env['EIR_KAFKA__ATTACH_TOPIC']}.verdicts"
    return env


@pytest.mark.parametrize("client", CLIENTS)
def test_each_change_counts_at_the_next_attach(env, worker, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    with_verdicts(env)
    running = worker()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"], [
        registry_event("r1", "device_registered", device_id="D9", imeis=list(NEW_IMEIS),
                       source="import"),
        registry_event("r2", "ownership_set", device_id="D9", owner_msisdn=str(BUYER),
                       via="activation"),
        registry_event("r3", "blacklisted", imeis=[str(SINGLE)], reason="court_order"),
        registry_event("r4", "operator_sim_set", imei=NEW_IMEIS[1], msisdn=str(STRANGER))],
        key=b"D9")
    wait_for(lambda: applied(running) == 4)
    t = now_ms()
    got = verdicts_of(env, [attach(NEW_IMEIS[0], BUYER, t), attach(NEW_IMEIS[0], OWNER, t),
                            attach(NEW_IMEIS[1], STRANGER, t), attach(SINGLE, OWNER, t)])
    assert got == {(NEW_IMEIS[0], str(BUYER), "owner"),
                   (NEW_IMEIS[0], str(OWNER), "other_cartable"),
                   (NEW_IMEIS[1], str(STRANGER), "owner"),
                   (f"{SINGLE:014d}", str(OWNER), "blacklisted")}


def test_a_restarted_worker_keeps_the_state_without_the_topic(env, worker, dsn) -> None:
    with_verdicts(env)
    first = worker()
    # Decided once: the first worker has joined its group before it stops.
    assert (f"{SINGLE:014d}", str(BUYER), "other_cartable") in verdicts_of(
        env, [attach(SINGLE, BUYER, now_ms())])
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"], [
        registry_event("t1", "ownership_set", imeis=[str(SINGLE)], owner_msisdn=str(BUYER),
                       via="transfer_direct")])
    wait_for(lambda: applied(first) == 1)
    first.close()
    env["EIR_KAFKA__REGISTRY_TOPIC"] = unique("registry-empty")  # nothing to replay there
    worker()
    got = verdicts_of(env, [attach(SINGLE, BUYER, now_ms())])
    assert (f"{SINGLE:014d}", str(BUYER), "owner") in got
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT event_id, applied FROM registry_events").fetchall() == [
            ("t1", True)]


@pytest.mark.parametrize("client", CLIENTS)
def test_replayed_invalid_and_inapplicable_events(env, worker, dsn, client) -> None:
    env["EIR_KAFKA__CLIENT"] = client
    with_verdicts(env)
    running = worker()
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"]
    to_buyer = registry_event("e1", "ownership_set", imeis=[str(SINGLE)],
                              owner_msisdn=str(BUYER), via="transfer_direct")
    produce(bootstrap, topic, [
        to_buyer,
        registry_event("e2", "ownership_set", imeis=[str(SINGLE)], owner_msisdn=str(STRANGER),
                       via="transfer_indirect"),
        to_buyer,  # replayed: the owner stays STRANGER
        b"not json",
        registry_event("e3", "ownership_set", device_id="nobody", owner_msisdn=str(BUYER),
                       via="activation"),
        registry_event("e4", "device_exploded")], key=str(SINGLE).encode())
    wait_for(lambda: len(read_all(bootstrap, env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"])) == 3)
    assert applied(running) == 2
    assert running.worker.metrics.registry_events.labels("replayed")._value.get() == 1
    dlq = read_all(bootstrap, env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"])
    assert [dict(m.headers)["dlq-reason"].decode() for m in dlq] == [
        "not_json", "inapplicable", "unknown_type"]
    got = verdicts_of(env, [attach(SINGLE, STRANGER, now_ms()), attach(SINGLE, BUYER, now_ms())])
    assert got == {(f"{SINGLE:014d}", str(STRANGER), "owner"),
                   (f"{SINGLE:014d}", str(BUYER), "other_cartable")}


def test_a_blacklisting_of_an_imei_sent_as_a_number_of_14_digits_is_dead_lettered(
        env, worker) -> None:
    """Issue 18: 013327001001504 as a number read as 13327001001504, and TAC 13327001's
    device was black-listed instead. The event is now bad_imei, saying why, and the next one
    (the same IMEI as a string) is applied: only that IMEI is refused."""
    with_verdicts(env)
    running = worker()
    bootstrap = env["EIR_KAFKA__BOOTSTRAP_SERVERS"]
    produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [
        registry_event("n1", "blacklisted", imeis=[13327001001504], reason="stolen"),
        registry_event("n2", "blacklisted", imeis=["013327001001504"], reason="stolen")],
        key=b"01332700100150")
    wait_for(lambda: applied(running) == 1)
    wait_for(lambda: read_all(bootstrap, env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"]))
    (letter,) = read_all(bootstrap, env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"])
    headers = dict(letter.headers)
    assert headers["dlq-reason"] == b"bad_imei"
    assert headers["dlq-detail"].decode().startswith(
        "13327001001504: number_too_short (a JSON number cannot carry a leading zero")
    assert msgspec.json.decode(letter.value)["event_id"] == "n1"
    got = verdicts_of(env, [attach("13327001001504", OWNER, now_ms()),
                            attach("013327001001504", OWNER, now_ms())])
    assert got == {("13327001001504", str(OWNER), "unregistered"),
                   ("01332700100150", str(OWNER), "blacklisted")}


def test_two_workers_dead_letter_a_bad_event_once(env, dsn) -> None:
    config = load_config(environ=env)
    first, second = Running(config), Running(config)
    try:
        produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"],
                [b"{broken", registry_event("w1", "blacklisted", imeis=[str(SINGLE)],
                                            reason="stolen")])
        wait_for(lambda: applied(first) == 1 and applied(second) == 1)
    finally:
        first.close()
        second.close()
    assert len(read_all(env["EIR_KAFKA__BOOTSTRAP_SERVERS"],
                        env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"])) == 1


def test_a_stored_event_that_no_longer_applies_does_not_stop_a_restart(env, worker, policy,
                                                                       caplog) -> None:
    with_verdicts(env)
    first = worker()
    assert verdicts_of(env, [attach(SINGLE, BUYER, now_ms())])  # the group is joined
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"], [
        registry_event("x1", "ownership_set", imeis=[str(SINGLE)], owner_msisdn=str(BUYER),
                       via="transfer_direct")])
    wait_for(lambda: applied(first) == 1)
    first.close()
    # A new snapshot in which no device has that IMEI any more (as after an import).
    state = make_state(policy)
    save_snapshot(replace(state, lists=replace(state.lists, generation=2),
                          devices=Devices.empty(state.devices.rows)),
                  Path(env["EIR_STATE__DIR"]))
    caplog.clear()
    second = worker()
    assert second.worker.metrics.registry_events.labels(
        "inapplicable_on_restore")._value.get() == 1
    (told,) = [r for r in caplog.records if "no longer appl" in r.getMessage()]
    assert (told.levelname, told.getMessage(), told.events, told.first) == (
        "WARNING", "stored registry events no longer apply", 1,
        [{"event_id": "x1", "error": f"no device with IMEI {SINGLE:014d}"}])
    assert (f"{SINGLE:014d}", str(BUYER), "no_cartable") in verdicts_of(
        env, [attach(SINGLE, BUYER, now_ms() + 1)])


def transfer(event_id: str, msisdn: int) -> dict[str, object]:
    return registry_event(event_id, "ownership_set", imeis=[str(SINGLE)],
                          owner_msisdn=str(msisdn), via="transfer_direct")


def resets(running: Running, partition: int) -> float | None:
    return running.worker.metrics.collectors.get_sample_value(
        "eir_registry_partition_resets_total", {"partition": str(partition)})


def recreate(bootstrap: str, topic: str, messages: list) -> None:
    """The topic deleted and created again with these messages, as `services down` and `up`
    leave the embedded broker (it keeps topics in memory) while PostgreSQL keeps its rows.
    Done with no worker running: librdkafka crashed when a topic was deleted under it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    produce(bootstrap, topic, messages, key=b"D")


OLD_LOG = [transfer("old-1", BUYER), b"not json", transfer("old-2", OWNER),
           transfer("old-3", BUYER), transfer("old-4", OWNER)]
# A new log at offsets 0, 1, 2: a change, a bad message where the old log had one, and a
# replay of the old log's first event, which must change nothing.
NEW_LOG = [transfer("new-1", STRANGER), b"{broken", OLD_LOG[0]]
BLACKLISTINGS = [registry_event(f"new-b{i}", "blacklisted", imeis=[str(UNREGISTERED + 10 * i)],
                                reason="stolen") for i in range(4)]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("new_log", [NEW_LOG, NEW_LOG + BLACKLISTINGS],
                         ids=["shorter", "longer"])
def test_a_recreated_topic_is_read_from_its_start(env, worker, dsn, caplog, client: str,
                                                  new_log: list) -> None:
    """Trial finding 1: after `services down` and `up` the worker resumed the new, empty
    topic after the offset stored last, and the events below it were skipped without a
    word. The new log, shorter than the old one (its end below the stored offset) or longer
    (another event there), is read from its start: each event applied, the bad message
    dead-lettered, the replay changing nothing; one warning and the metric say so."""
    env["EIR_KAFKA__CLIENT"] = client
    with_verdicts(env)
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__REGISTRY_TOPIC"]
    dlq = env["EIR_KAFKA__REGISTRY_DLQ_TOPIC"]
    first = worker()
    produce(bootstrap, topic, OLD_LOG, key=b"D")
    wait_for(lambda: applied(first) == 4 and len(read_all(bootstrap, dlq)) == 1)
    # Decided once: the group is joined before the worker stops (see the restart test).
    assert (f"{SINGLE:014d}", str(OWNER), "owner") in verdicts_of(
        env, [attach(SINGLE, OWNER, now_ms())])
    first.close()
    with psycopg.connect(dsn) as conn:  # the one the key goes to
        (partition,) = conn.execute("SELECT DISTINCT source_partition FROM registry_events"
                                    ).fetchone()

    recreate(bootstrap, topic, new_log)
    caplog.clear()
    second = worker()
    wait_for(lambda: applied(second) == len(new_log) - 2 and len(read_all(bootstrap, dlq)) == 2)
    assert second.worker.metrics.registry_events.labels("replayed")._value.get() == 1
    assert resets(second, partition) == 1
    (warning,) = [r for r in caplog.records if "new log" in r.getMessage()]
    assert (warning.levelname, warning.partition, warning.stored_to, warning.incarnation) == (
        "WARNING", partition, 5, 1)
    assert warning.found == ("offset 4 holds event 'new-b1', not event 'old-4'"
                             if len(new_log) > 4 else
                             "the partition holds no offset 4: its last is 2")
    letters = read_all(bootstrap, dlq)
    assert [(m.value, dict(m.headers)["dlq-source-offset"]) for m in letters] == [
        (b"not json", b"1"), (b"{broken", b"1")]
    # SINGLE's owner is new-1's STRANGER: the replay of old-1 (to BUYER) changed nothing.
    got = verdicts_of(env, [attach(SINGLE, STRANGER, now_ms()), attach(SINGLE, BUYER, now_ms())])
    assert got >= {(f"{SINGLE:014d}", str(STRANGER), "owner"),
                   (f"{SINGLE:014d}", str(BUYER), "other_cartable")}
    # The consistency check counts both logs' events as held in memory, as they are.
    assert second.worker.run_job("consistency") is Outcome.OK
    with psycopg.connect(dsn) as conn:
        (check,) = recent_runs(conn, "consistency")
    assert check.counts["drifted_shards"] == 0
    assert check.counts["events"] == 4 + len(new_log) - 2
    second.close()

    # The next start finds the event stored last where it was: read on from there, so
    # nothing is applied or dead-lettered twice (a replay after it is read again, and
    # changes nothing again).
    caplog.clear()
    third = worker()
    produce(bootstrap, topic, [transfer("new-last", BUYER)], key=b"D")
    wait_for(lambda: applied(third) == 1)
    assert resets(third, partition) is None
    assert not [r for r in caplog.records if "new log" in r.getMessage()]
    assert len(read_all(bootstrap, dlq)) == 2
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT source_partition, incarnation, stored_to FROM registry_incarnations"
        ).fetchall() == [(partition, 1, 5)]
        rows = conn.execute("SELECT event_id, applied, source_incarnation, source_offset"
                            " FROM registry_events ORDER BY seq").fetchall()
    assert rows == [("old-1", True, 0, 0), (f"{topic}:{partition}:1", False, 0, 1),
                    ("old-2", True, 0, 2), ("old-3", True, 0, 3), ("old-4", True, 0, 4),
                    ("new-1", True, 1, 0), (f"{topic}:{partition}:1@1", False, 1, 1),
                    *[(f"new-b{i}", True, 1, 3 + i) for i in range(len(new_log) - 3)],
                    ("new-last", True, 1, len(new_log))]


def test_a_poll_stored_over_rows_another_worker_stored_keeps_theirs_and_adds_the_rest(
        dsn) -> None:
    """The straight copy's fallback: a row whose event_id or position is stored already
    leaves the other worker's row standing; the rest are stored, numbered in their order."""
    at = datetime(2026, 12, 1, tzinfo=timezone.utc)

    def row(event_id: str, offset: int) -> EventRow:
        return EventRow(event_id, True, None, event_id.encode(),
                        Position("registry", 0, offset), at)

    with psycopg.connect(dsn) as conn:
        assert store_all(conn, [row("a", 0), row("b", 1)]) == {"a", "b"}
        conn.commit()
        # "b" again at its position, "c" at b's position, "d" and "e" new.
        assert store_all(conn, [row("d", 3), row("b", 1), row("c", 1), row("e", 2)]) == {
            "d", "e"}
        conn.commit()
        assert conn.execute("SELECT event_id, source_offset FROM registry_events"
                            " ORDER BY seq").fetchall() == [
            ("a", 0), ("b", 1), ("d", 3), ("e", 2)]
