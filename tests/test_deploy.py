"""deploy/ read as the tools that run it would: the compose file's services hang together
and their environment is configuration the worker accepts; the Prometheus configuration
passes promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from enforcer.config import load_config
from tests.prometheus import binary

DEPLOY = Path(__file__).parents[1] / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_has_kafka_postgres_prometheus_grafana_and_two_workers() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "prometheus", "grafana", "worker-1", "worker-2"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
    assert {(DEPLOY / v.split(":")[0]).resolve().exists()
            for v in services["grafana"]["volumes"]} == {True}


def test_the_workers_environment_is_configuration_the_worker_accepts() -> None:
    services = compose()["services"]
    for name in ("worker-1", "worker-2", "setup"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        config = load_config(environ=env)  # an unknown key or a bad value raises, naming it
        assert config.kafka.bootstrap_servers == "kafka:9092"
        assert config.postgres.dsn.startswith("postgresql://eir:eir@postgres:5432/")
    names = {load_config(environ={k: str(v) for k, v in services[w]["environment"].items()})
             .worker.name for w in ("worker-1", "worker-2")}
    assert names == {"worker-1", "worker-2"}


def test_prometheus_configuration_passes_promtool() -> None:
    check = subprocess.run([binary("promtool"), "check", "config", "prometheus.yml"],  # noqa: S603
                           cwd=DEPLOY / "prometheus", capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: {t for c in job["static_configs"] for t in c["targets"]}
               for job in scrape["scrape_configs"]}
    assert targets == {"eir-enforcer": {"worker-1:9108", "worker-2:9108"},
                       "eir-enforcer-eic": {"eic:9110"}}


def test_the_equipment_check_service_serves_on_the_port_prometheus_scrapes() -> None:
    eic = compose()["services"]["eic"]
    config = load_config(environ={k: str(v) for k, v in eic["environment"].items()})
    assert eic["command"] == ["serve"] and f"{config.eic.port}:9110" in eic["ports"]
    assert "9110/readyz" in " ".join(eic["healthcheck"]["test"])
    unit = (DEPLOY / "eir-enforcer-serve@.service").read_text()
    assert "Environment=EIR_EIC__PORT=%i" in unit and unit.rstrip().endswith(
        "WantedBy=multi-user.target") and " serve\n" in unit


def test_serve_answers_s13_on_the_diameter_port_in_compose_and_in_one_systemd_instance() -> None:
    """Issue 22 part 4: compose's serve answers MMEs on 3868, its S13 settings accepted; the
    systemd template keeps S13 to the instance whose drop-in turns it on (one port a host)."""
    eic = compose()["services"]["eic"]
    config = load_config(environ={k: str(v) for k, v in eic["environment"].items()})
    assert config.s13.enabled and config.s13.peers
    assert f"{config.s13.port}:3868" in eic["ports"]
    drop_in = (DEPLOY / "eir-enforcer-serve-s13.conf").read_text()
    assert "\nEnvironment=EIR_S13__ENABLED=true\n" in drop_in
    assert "eir-enforcer-serve-s13.conf" in (DEPLOY / "eir-enforcer-serve@.service").read_text()
