"""What the NOC sees: the metrics catalogue against a live scrape (and promtool's lint), the
health endpoints, the alert rules (promtool's checks and unit tests), the dashboard's and
rules' queries against the catalogue, and a real Prometheus scraping a real worker and
firing an alert the test provokes."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg

from enforcer.embedded.services import free_port
from tests.kafkatools import produce, wait_for
from tests.prometheus import binary
from tests.test_decide import OWNER, SINGLE
from tests.test_worker import attach, now_ms, spawn

ROOT = Path(__file__).parents[1]
RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eir-enforcer.json"
CATALOGUE = ROOT / "docs" / "metrics.md"
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")
METRIC = re.compile(r"\b((?:eir|process)_[a-z0-9_]+)\b")


EIC_PREFIX = "eir_eic_"  # `eir-enforcer serve`'s own, on its own port
S13_PREFIX = "eir_s13_"  # serve's too, when s13.enabled


def catalogued(serve: bool = False, s13: bool = False) -> set[str]:
    """The metric names in the catalogue's tables (first column, in backquotes): the
    worker's, or `serve`'s (with S13's when `s13`)."""
    names = set(re.findall(r"^\| `([a-z0-9_]+)`", CATALOGUE.read_text(), re.MULTILINE))
    if not serve:
        return {n for n in names if not n.startswith((EIC_PREFIX, S13_PREFIX))}
    return {n for n in names if n.startswith(EIC_PREFIX) or (s13 and n.startswith(S13_PREFIX))}


def family(series: str) -> str:
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http to localhost
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = binary("promtool")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES,  # noqa: S603
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "alerts_test.yml"],  # noqa: S603
                           cwd=RULES, capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_the_dashboard_and_the_alerts_query_only_catalogued_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 10
    used = {family(m) for text in queries + [(RULES / "alerts.yml").read_text()]
            for m in METRIC.findall(text)}
    # The alerts watch serve too (its S13 peers, its check feed).
    assert used - catalogued() - catalogued(serve=True, s13=True) == set()


def test_live_scrape_matches_the_catalogue_and_health_says_why_not_ready(env, dsn) -> None:
    port = free_port()
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], env["EIR_KAFKA__ATTACH_TOPIC"],
            [attach(SINGLE, OWNER, now_ms()), b"junk"])
    process = spawn({**env, "EIR_HTTP__PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/readyz")[0] == 200)
        assert get(f"{base}/healthz") == (200, b'{"alive":true}')
        assert json.loads(get(f"{base}/readyz")[1]) == {
            "ready": True, "checks": {"state": "ok", "partitions": "ok", "database": "ok"}}
        wait_for(lambda: b'eir_dlq_messages_total{reason="not_json"} 1.0' in
                 get(f"{base}/metrics")[1])
        scrape = get(f"{base}/metrics")[1]
        lint = subprocess.run([binary("promtool"), "check", "metrics"], input=scrape,  # noqa: S603
                              capture_output=True, timeout=60)
        assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()
        families = set(re.findall(rb"^# TYPE ([a-z_]+) ", scrape, re.MULTILINE))
        assert {f.decode() for f in families} == catalogued()

        with _database_closed(dsn):
            wait_for(lambda: get(f"{base}/readyz")[0] == 503)
            verdict = json.loads(get(f"{base}/readyz")[1])
            assert verdict["ready"] is False
            assert verdict["checks"]["database"].startswith("database unreachable")
            assert get(f"{base}/healthz")[0] == 200  # alive all the same
        wait_for(lambda: get(f"{base}/readyz")[0] == 200)
    finally:
        process.terminate()
        process.wait()


class _database_closed:
    """No new connections to the test's database, and its open ones ended."""

    def __init__(self, dsn: str) -> None:
        self._name = dsn.rsplit("/", 1)[1]
        self._admin = dsn.rsplit("/", 1)[0] + "/postgres"

    def _allow(self, allowed: bool) -> None:
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                psycopg.sql.Identifier(self._name), psycopg.sql.SQL(str(allowed).lower())))
            if not allowed:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = %s", (self._name,))

    def __enter__(self) -> None:
        self._allow(False)

    def __exit__(self, *_: object) -> None:
        self._allow(True)


def test_a_real_prometheus_scrapes_the_worker_and_fires_the_dead_letter_alert(
        env, tmp_path: Path) -> None:
    prometheus = binary("prometheus")
    port, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES / "alerts.yml")],
        "scrape_configs": [{"job_name": "eir-enforcer",
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    topic = env["EIR_KAFKA__ATTACH_TOPIC"]
    produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], topic, [attach(SINGLE, OWNER, now_ms()),
                                                         b"junk"])
    worker = spawn({**env, "EIR_HTTP__PORT": str(port)})
    server = subprocess.Popen([prometheus, f"--config.file={config}",  # noqa: S603
                               f"--storage.tsdb.path={tmp_path / 'data'}",
                               f"--web.listen-address=127.0.0.1:{web}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{web}/api/v1"

    def query(expr: str) -> list[dict]:
        status, body = get(f"{api}/query?" + urllib.parse.urlencode({"query": expr}))
        return json.loads(body)["data"]["result"] if status == 200 else []

    def firing() -> set[str]:
        status, body = get(f"{api}/alerts")
        alerts = json.loads(body)["data"]["alerts"] if status == 200 else []
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    try:
        wait_for(lambda: query('eir_dlq_messages_total{reason="not_json"}'), timeout_s=90)
        for expr in ('up{job="eir-enforcer"}', "eir_events_consumed_total",
                     "eir_lists_generation", "eir_lists_snapshot_timestamp_seconds",
                     "process_resident_memory_bytes", "eir_outbox_backlog"):
            assert query(expr), f"{expr} not in Prometheus"
        assert float(query('up{job="eir-enforcer"}')[0]["value"][1]) == 1
        assert "EirDeadLetterSpike" not in firing()
        time.sleep(2)  # a scrape or two of the calm before
        produce(env["EIR_KAFKA__BOOTSTRAP_SERVERS"], topic, [b"junk"] * 150)
        wait_for(lambda: "EirDeadLetterSpike" in firing(), timeout_s=60)
    finally:
        server.terminate()
        worker.terminate()
        server.wait()
        worker.wait()
