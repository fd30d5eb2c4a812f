"""The worker's HTTP port, called as a client calls it: the IMEI status query with a token,
refused without one, rate-limited, every call in status_queries (a phone the stream flagged
misused, a stolen one in a cartable); /metrics beside it."""

from __future__ import annotations

import urllib.error
import urllib.request

import msgspec
import psycopg

from enforcer.endpoints.server import TokenBucket
from enforcer.engine.imei import luhn_digit
from enforcer.embedded.services import free_port
from tests.kafkatools import committed, produce, wait_for
from tests.test_decide import BUYER, SINGLE, SPOUSE, STOLEN, STRANGER, UNOWNED
from tests.test_registry_events import registry_event
from tests.test_worker import attach, now_ms

SECRET = "ussd-secret-0123456789"  # noqa: S105 - a test client's token


def get(port: int, path: str, token: str | None = SECRET) -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, msgspec.json.decode(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, msgspec.json.decode(exc.read()), dict(exc.headers)


def status_path(imei: int | str, msisdn: int | str) -> str:
    return f"/v1/imei/{imei}/status?msisdn={msisdn}"


def audit(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT imei_key, requester, status, revealed, channel, client,"
                            " refused FROM status_queries ORDER BY id").fetchall()


def served(env: dict[str, str], worker, **http: str):
    env.update({"EIR_HTTP__PORT": str(free_port()), "EIR_HTTP__TOKENS": f"ussd:{SECRET}",
                **{f"EIR_HTTP__{k.upper()}": v for k, v in http.items()}})
    running = worker()
    return running, running.worker.http_port


def test_the_status_query_answers_from_the_live_state_and_records_each_call(
        env, worker) -> None:
    running, port = served(env, worker)
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    t = now_ms()
    produce(bootstrap, topic, [attach(UNOWNED, STRANGER, t - 3_600_000),
                               attach(UNOWNED, BUYER, t)])
    wait_for(lambda: committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic) == 2)

    code, body, _ = get(port, status_path(f"{UNOWNED:014d}", BUYER))
    assert code == 200 and body["status"] == "previous_user"
    assert body["previous_msisdn"] == str(STRANGER)

    code, body, _ = get(port, status_path(f"{UNOWNED:014d}", STRANGER + 1))
    assert code == 200 and body == {
        "imei": f"{UNOWNED:014d}", "status": "use_every_slot", "slots_left": [
            {"slot": 0, "imei": f"{UNOWNED:014d}"}],
        "message": "use every SIM slot of the device with this SIM first, then ask again"}

    # A transfer on the registry topic: the next answer says the device is owned.
    produce(bootstrap, env["EIR_KAFKA__REGISTRY_TOPIC"], [registry_event(
        "t1", "ownership_set", imeis=[f"{UNOWNED:014d}"], owner_msisdn=str(STRANGER),
        via="transfer_direct")])
    wait_for(lambda: get(port, status_path(f"{UNOWNED:014d}", BUYER))[1]["status"] == "owned")

    rows = audit(env["EIR_POSTGRES__DSN"])
    assert rows[0] == (UNOWNED, BUYER, "previous_user", STRANGER, "http", "ussd", None)
    assert rows[1][2:] == ("use_every_slot", None, "http", "ussd", None)
    assert rows[-1][2] == "owned" and rows[-1][3] is None
    assert running.worker.metrics.collectors.get_sample_value(
        "eir_status_queries_total", {"channel": "http", "outcome": "previous_user"}) == sum(
            1 for r in rows if r[2] == "previous_user")


def test_a_phone_flagged_misused_tells_no_number_and_a_stolen_one_in_a_cartable_says_stolen(
        env, worker) -> None:
    _, port = served(env, worker)
    bootstrap, topic = env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"]
    t = now_ms()
    # A third SIM on the phone flags it: the last other SIM may be a cloner's.
    produce(bootstrap, topic, [attach(UNOWNED, STRANGER, t - 7_200_000),
                               attach(UNOWNED, SPOUSE, t - 3_600_000), attach(UNOWNED, BUYER, t),
                               attach(STOLEN, BUYER, t)])
    wait_for(lambda: committed(bootstrap, env["EIR_KAFKA__GROUP_ID"], topic) == 4)

    code, body, _ = get(port, status_path(f"{UNOWNED:014d}", BUYER))
    assert code == 200 and (body["status"], "previous_msisdn" in body) == ("misused", False)
    code, body, _ = get(port, status_path(f"{STOLEN:014d}", BUYER))  # in OWNER's cartable
    assert code == 200 and (body["status"], body["reason"]) == ("blacklisted", "stolen")
    assert audit(env["EIR_POSTGRES__DSN"]) == [
        (UNOWNED, BUYER, "misused", None, "http", "ussd", None),
        (STOLEN, BUYER, "blacklisted", None, "http", "ussd", None)]


def test_calls_without_a_valid_token_or_arguments_are_refused_and_recorded(env, worker) -> None:
    _, port = served(env, worker)
    assert get(port, status_path(SINGLE, BUYER), token=None)[0] == 401
    code, body, headers = get(port, status_path(SINGLE, BUYER), token="x" * 22)
    assert (code, body["error"]) == (401, "unauthorized") and "Bearer" in headers[
        "WWW-Authenticate"]
    code, body, _ = get(port, status_path("12345", BUYER))
    assert (code, body["error"]) == (400, "bad_imei")
    # A digit mistyped: the answer would be about another phone.
    typed = f"{SINGLE:014d}" + str(int(luhn_digit(f"{SINGLE:014d}")) % 9 + 1)
    code, body, _ = get(port, status_path(typed, BUYER))
    assert (code, body["error"]) == (400, "bad_imei") and "mistyped" in body["detail"]
    code, body, _ = get(port, f"/v1/imei/{SINGLE:014d}/status")
    assert (code, body["error"]) == (400, "bad_msisdn")
    # Which requester is meant would depend on the reader: refused, naming the parameter.
    code, body, _ = get(port, status_path(SINGLE, BUYER) + f"&msisdn={STRANGER}")
    assert (code, body["error"]) == (400, "duplicate_parameter") and "msisdn=" in body["detail"]
    code, body, _ = get(port, f"/v1/imei/{SINGLE:014d}/status?msisdn=&msisdn={BUYER}")
    assert (code, body["error"]) == (400, "duplicate_parameter")
    assert get(port, "/v1/nothing")[0] == 404
    assert [(r[0], r[1], r[5], r[6]) for r in audit(env["EIR_POSTGRES__DSN"])] == [
        (SINGLE, BUYER, None, "unauthorized"), (SINGLE, BUYER, None, "unauthorized"),
        (None, BUYER, "ussd", "bad_imei"), (None, BUYER, "ussd", "bad_imei"),
        (SINGLE, None, "ussd", "bad_msisdn"),
        (SINGLE, None, "ussd", "duplicate_parameter"),
        (SINGLE, None, "ussd", "duplicate_parameter")]


def test_each_client_is_held_to_its_rate(env, worker) -> None:
    _, port = served(env, worker, rate_per_s="0.01", burst="3")
    codes = [get(port, status_path(SINGLE, BUYER))[0] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    code, body, headers = get(port, status_path(SINGLE, BUYER))
    assert code == 429 and int(headers["Retry-After"]) >= 1
    refused = [r[6] for r in audit(env["EIR_POSTGRES__DSN"])]
    assert refused == [None] * 3 + ["rate_limited"] * 3


def test_metrics_are_served_beside_the_query(env, worker) -> None:
    _, port = served(env, worker)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    assert "# TYPE eir_job_runs_total counter" in text
    assert "# TYPE eir_status_queries_total counter" in text
    named = (f"http://127.0.0.1:{port}/metrics?name[]=eir_lists_generation"
             "&name[]=process_resident_memory_bytes")
    with urllib.request.urlopen(named, timeout=10) as response:  # noqa: S310
        samples = [line.split(" ")[0] for line in response.read().decode().splitlines()
                   if not line.startswith("#")]
    assert sorted(samples) == ["eir_lists_generation", "process_resident_memory_bytes"]


def test_calls_without_a_token_past_the_rate_are_counted_not_recorded(env, worker) -> None:
    running, port = served(env, worker, rate_per_s="0.01", burst="2")
    codes = [get(port, status_path(SINGLE, BUYER), token=None)[0] for _ in range(5)]
    assert codes == [401, 401, 429, 429, 429]
    assert len(audit(env["EIR_POSTGRES__DSN"])) == 2
    assert running.worker.metrics.collectors.get_sample_value(
        "eir_status_queries_total", {"channel": "http", "outcome": "unauthorized_flood"}) == 3
    assert get(port, status_path(SINGLE, BUYER))[0] == 200  # a client is held to its own rate


def test_a_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert bucket.take(0.5) == 0.0 and bucket.take(0.5) == 0.5
    assert bucket.take(100.0) == 0.0  # never more than the burst saved up
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.5]
