"""Every check feeds the stream (issue 22 part 3): the checks serve answers as the attach events
the worker reads (against the worker's own decoders, hypothesis), what each front end hands
over, the bounded queue; then serve beside a worker on the real broker and database: an S13
and an N5g-eir check of an unregistered IMEI open a notice, and with no broker the checks are
answered all the same and their drops counted."""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumers.checkfeed import MAX_ROUND_CHECKS, CheckFeed
from enforcer.embedded.services import free_port
from enforcer.engine.attachdecode import DeadLetter, TimeWindow, decode_attach
from enforcer.engine.batchdecode import decode_poll
from enforcer.engine.checkfeed import (N5G_EIR_RAT, S13_RAT, CheckedBatch, Unfed,
                                       attach_messages, imei_received)
from enforcer.engine.events import NO_KEY, AttachBatch
from enforcer.engine.state import StateHolder
from enforcer.engine.tacs import rat_of
from enforcer.frontends.s13.answers import S13Answers
from enforcer.frontends.s13.check import DIAMETER_ERROR_EQUIPMENT_UNKNOWN
from enforcer.frontends.s13.wire import read_micr
from enforcer.frontends.server import EquipmentChecks
from enforcer.frontends.transport import Request
from metrics.checkfeed import QUEUE_FULL, CheckFeedMetrics
from metrics.eic import EicMetrics
from metrics.s13 import S13Metrics
from tests.kafkatools import wait_for
from tests.test_cli import run
from tests.test_decide import (BUYER, OWNER, SINGLE, STRANGER, UNREGISTERED, full, home_imsi,
                               state)
from tests.test_eic import API, _metrics, _ready, knowing_owner, running_serve
from tests.test_http import get
from tests.test_s13 import (EIR_HOST, NOW_MS, REALM, FixedClock, connected, micr, running_s13)
from tests.test_worker import CLIENTS, history

__all__ = ["state"]  # the fixture, shared with test_decide

WINDOW = TimeWindow.around(NOW_MS, 60, 300)


class Handed:
    """A front end's feed that keeps what it is handed."""

    def __init__(self) -> None:
        self.batches: list[CheckedBatch] = []

    def offer(self, checked: CheckedBatch) -> None:
        self.batches.append(checked)


def checked(received: list[str], keys: list[int], imsis: list[int], msisdns: list[int],
            rat: str = S13_RAT, ts_ms: int = NOW_MS) -> CheckedBatch:
    n = len(received)
    return CheckedBatch(received, AttachBatch(
        imei_key=np.array(keys, dtype=np.uint64), malformed=np.zeros(n, dtype=bool),
        imsi=np.array(imsis, dtype=np.uint64), mcc=np.full(n, 432, dtype=np.uint16),
        msisdn=np.array(msisdns, dtype=np.uint64), ts_ms=np.full(n, ts_ms, dtype=np.int64),
        emergency=np.zeros(n, dtype=bool)), rat)


# --- The pure part ---------------------------------------------------------------------------

IMEIS = st.from_regex(r"[0-9]{14,16}", fullmatch=True)
IMSIS = st.from_regex(r"432[0-9]{11,12}", fullmatch=True)
MSISDNS = st.integers(10 ** 7, 10 ** 15 - 1)


@given(st.lists(st.tuples(IMEIS, IMSIS, MSISDNS), min_size=1, max_size=20),
       st.sampled_from([S13_RAT, N5G_EIR_RAT]), st.integers(-300_000, 300_000))
def test_a_checks_attach_event_is_read_by_the_worker_as_the_check(rules, rows, rat,
                                                                  offset_ms) -> None:
    """Both of the worker's decoders (the poll's fast path and the reference) read each event
    back as the check: its IMEI key, IMSI, MSISDN, time and radio; keyed by the IMEI key."""
    received = [imei for imei, _, _ in rows]
    keys = [int(imei[:14]) for imei in received]
    at = NOW_MS + offset_ms
    messages, unfed = attach_messages(checked(received, keys, [int(i) for _, i, _ in rows],
                                              [m for _, _, m in rows], rat, at))
    assert not unfed
    assert [m.key for m in messages] == [imei[:14].encode() for imei in received]
    poll = decode_poll([m.value for m in messages], rules, WINDOW)
    assert poll.dead == []
    assert poll.batch.imei_key.tolist() == keys
    assert poll.batch.imsi.tolist() == [int(i) for _, i, _ in rows]
    assert poll.batch.msisdn.tolist() == [m for _, _, m in rows]
    assert poll.batch.ts_ms.tolist() == [at] * len(rows)
    assert set(poll.batch.rat.tolist()) == {rat_of(rat)}
    for message, (imei, imsi, msisdn) in zip(messages, rows):
        event = decode_attach(message.value, rules, WINDOW)
        assert not isinstance(event, DeadLetter)
        assert (event.imei.imei_key, event.imsi.digits, event.msisdn, event.ts_ms, event.rat) \
            == (int(imei[:14]), imsi, msisdn, at, rat)


def test_a_pei_is_the_imei_as_the_network_sent_it() -> None:
    assert imei_received("imei-490154203237518") == "490154203237518"
    assert imei_received("IMEISV-4901542032375181") == "4901542032375181"
    assert imei_received("mac-00-1a-2b-3c-4d-5e") == "mac-00-1a-2b-3c-4d-5e"


def test_a_check_that_names_no_sim_is_no_attach_event() -> None:
    no_key = int(NO_KEY)
    messages, unfed = attach_messages(checked(
        ["490154203237518", "490154203237518", "490154203237518", "mac-00-1a-2b-3c-4d-5e"],
        [49015420323751, 49015420323751, 49015420323751, no_key],
        [0, int(home_imsi(OWNER)), int(home_imsi(OWNER)), int(home_imsi(OWNER))],
        [OWNER, 0, OWNER, OWNER]))
    assert unfed == {Unfed.NO_IMSI: 1, Unfed.NO_MSISDN: 1}
    # A PEI that is no IMEI goes as received, without a key: the worker records it malformed.
    assert [m.key for m in messages] == [b"49015420323751", None]


def test_n5g_eir_hands_its_checks_to_the_feed_with_the_number_known_by_the_imsi(
        state, rules) -> None:
    handed = Handed()
    app = EquipmentChecks(StateHolder(knowing_owner(state)), rules, FixedClock(), EicMetrics(),
                          ready=None, feed=handed)  # type: ignore[arg-type] - not asked
    pei = f"imeisv-{SINGLE}01"
    responses = app.answer([
        Request("GET", f"{API}?pei={pei}&supi=imsi-{home_imsi(OWNER)}"),
        Request("GET", f"{API}?pei=imei-{full(UNREGISTERED)}&supi=imsi-{home_imsi(STRANGER)}"
                       f"&gpsi=msisdn-{STRANGER}"),
        Request("GET", f"{API}?pei=bad"),  # a 400: no check
    ])
    assert [r.status for r in responses] == [200, 200, 400]
    [fed] = handed.batches
    assert (fed.received, fed.rat) == ([f"{SINGLE}01", full(UNREGISTERED)], N5G_EIR_RAT)
    assert fed.batch.msisdn.tolist() == [OWNER, STRANGER]
    assert fed.batch.ts_ms.tolist() == [NOW_MS, NOW_MS]


def test_s13_hands_its_checks_to_the_feed_with_the_number_known_by_the_imsi(
        state, rules) -> None:
    handed = Handed()
    answers = S13Answers(StateHolder(knowing_owner(state)), rules, FixedClock(),
                         S13Metrics(CollectorRegistry()), EIR_HOST, REALM, handed)
    answers.answer([read_micr(m.as_bytes()) for m in [
        micr(SINGLE, home_imsi(OWNER), "01", n=1),
        micr(full(UNREGISTERED), home_imsi(STRANGER), n=2),
        micr("12", home_imsi(OWNER), n=3)]])  # a 5004: no check
    [fed] = handed.batches
    assert (fed.received, fed.rat) == ([f"{SINGLE:014d}", full(UNREGISTERED)], S13_RAT)
    assert fed.batch.imsi.tolist() == [int(home_imsi(OWNER)), int(home_imsi(STRANGER))]
    # STRANGER's number is known to nobody: the publisher skips it (no_msisdn).
    assert fed.batch.msisdn.tolist() == [OWNER, 0]


def test_the_queue_is_bounded_and_what_does_not_fit_is_counted() -> None:
    registry = CollectorRegistry()
    metrics = CheckFeedMetrics(registry)
    feed = CheckFeed(3, metrics)
    one = checked(["490154203237518"], [49015420323751], [int(home_imsi(OWNER))], [OWNER])
    two = checked(["490154203237518"] * 2, [49015420323751] * 2, [int(home_imsi(OWNER))] * 2,
                  [OWNER] * 2)
    feed.offer(two)
    feed.offer(two)  # does not fit whole: dropped whole
    feed.offer(one)
    assert registry.get_sample_value("eir_eic_feed_dropped_total", {"reason": QUEUE_FULL}) == 2
    assert registry.get_sample_value("eir_eic_feed_queued") == 3
    assert feed.take(0) == [two, one]
    assert feed.take(0) == []
    feed.offer(one)
    assert feed.take(0) == [one]


def test_a_round_takes_at_most_its_share_and_always_a_batch() -> None:
    metrics = CheckFeedMetrics(CollectorRegistry())
    feed = CheckFeed(3 * MAX_ROUND_CHECKS, metrics)
    half = MAX_ROUND_CHECKS // 2 + 1
    big = checked(["490154203237518"] * half, [49015420323751] * half,
                  [int(home_imsi(OWNER))] * half, [OWNER] * half)
    for _ in range(3):
        feed.offer(big)
    assert [len(feed.take(0)) for _ in range(4)] == [1, 1, 1, 0]


# --- serve beside a worker, on the real broker and database ---------------------------------

OTHER_UNREGISTERED = 35999999000100  # on no list either


def notices(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT kind, imei_key, msisdn FROM notices"
                            " ORDER BY imei_key").fetchall()


@pytest.mark.parametrize("client", CLIENTS)
def test_checks_over_s13_and_n5g_eir_are_recorded_and_noticed_by_a_worker(
        env, worker, dsn, tmp_path, client) -> None:
    """Issue 22 part 3: a core that only asks the EIR. An MME's S13 check (answered 5422, the
    policy serve runs calling unregistered equipment unknown) and an AMF's N5g-eir check of
    unregistered IMEIs reach a worker as attaches: a slot-usage row for each pair and an
    `unregistered` notice to each SIM's number (S13's known by its IMSI from the operator's
    provisioning file)."""
    env["EIR_KAFKA__CLIENT"] = client
    provisioning = tmp_path / "subscribers.csv"
    provisioning.write_text(f"{home_imsi(STRANGER)},{STRANGER}\n")
    run("subscribers", "import", str(provisioning), env={**os.environ, **env})
    worker()
    with running_s13({**env, "EIR_CHECK_FEED__PUBLISH_CHECKS": "true"}, tmp_path) as ports:
        port, s13_port = ports
        mme = connected(s13_port, [])
        answer = mme.ask(micr(full(UNREGISTERED), home_imsi(STRANGER), n=1))
        mme.close()
        assert answer.experimental_result.experimental_result_code == \
            DIAMETER_ERROR_EQUIPMENT_UNKNOWN
        assert get(port, f"{API}?pei=imei-{full(OTHER_UNREGISTERED)}&supi=imsi-"
                         f"{home_imsi(BUYER)}&gpsi=msisdn-{BUYER}", None)[0] == 404
        wait_for(lambda: len(notices(dsn)) == 2, timeout_s=30)
        assert _metrics(port)["eir_eic_feed_published_total"] == 2
    assert notices(dsn) == [("unregistered", UNREGISTERED, STRANGER),
                            ("unregistered", OTHER_UNREGISTERED, BUYER)]
    assert [(row[0], row[1], row[2]) for row in history(dsn)] == [
        (UNREGISTERED, int(home_imsi(STRANGER)), STRANGER),
        (OTHER_UNREGISTERED, int(home_imsi(BUYER)), BUYER)]


@pytest.mark.parametrize("client", CLIENTS)
def test_with_no_broker_the_checks_are_answered_and_their_drops_counted(env, tmp_path,
                                                                        client) -> None:
    """Kafka away (a bootstrap to a port nobody listens on): every check is answered as
    before, serve stays ready, and each check is counted as dropped, none lost silently."""
    closed = {**env, "EIR_KAFKA__CLIENT": client,
              "EIR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
              "EIR_CHECK_FEED__PUBLISH_CHECKS": "true", "EIR_CHECK_FEED__QUEUE_SIZE": "2",
              "EIR_CHECK_FEED__ACK_TIMEOUT_S": "1"}
    asked = 20
    with running_serve(closed, tmp_path / "serve.log") as port:
        for n in range(asked):
            status, body, _ = get(port, f"{API}?pei=imei-{full(UNREGISTERED)}&supi=imsi-"
                                     f"{home_imsi(STRANGER)}&gpsi=msisdn-{STRANGER}", None)
            assert (status, body) == (200, {"status": "GREYLISTED"}), n

        def dropped() -> float:
            metrics = _metrics(port)
            return sum(v for k, v in metrics.items() if k.startswith("eir_eic_feed_dropped"))

        wait_for(lambda: dropped() == asked, timeout_s=60)
        metrics = _metrics(port)
        assert metrics['eir_eic_feed_dropped_total{reason="queue_full"}'] > 0
        assert metrics["eir_eic_feed_published_total"] == 0
        assert _ready(port)
