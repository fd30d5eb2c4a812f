from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from enforcer.engine.imei import imei_rules
from enforcer.clock import Clock
from enforcer.config import Config, load_config
from enforcer.db.migrate import migrate
from enforcer.engine.imei import ImeiRules
from enforcer.embedded.services import EmbeddedServices, ServicePorts, free_port
from enforcer.files.snapshots import save_snapshot
from enforcer.app.worker import build_worker
from rules.policy import Policy, load_policy
from tests.kafkatools import unique
from tests.test_decide import make_state


@pytest.fixture(scope="session")
def rules() -> ImeiRules:
    return imei_rules(load_config(environ={}))


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy()


@pytest.fixture()
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture(scope="session")
def services() -> Iterator[EmbeddedServices]:
    """A real broker and a real PostgreSQL for the whole run, started by the same code as
    `eir-enforcer services up`. Not under pytest's temporary root: as root, PostgreSQL runs
    as a user of its own, and another pytest run started meanwhile closes that root to
    other users (mode 0700), PostgreSQL's data directory with it (a PANIC mid-run)."""
    scratch = Path(tempfile.mkdtemp(prefix="eir-test-services-"))
    running = EmbeddedServices.at(scratch, ServicePorts(free_port(), free_port()), "eir")
    try:
        running.up()
        try:
            yield running
        finally:
            running.down()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture()
def dsn(services: EmbeddedServices) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = services.postgres.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = services.postgres.dsn.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
            psycopg.sql.Identifier(name)))


@pytest.fixture()
def env(services, dsn, policy, tmp_path: Path) -> dict[str, str]:
    """Configuration for one worker on its own topics, group and database."""
    state_dir = tmp_path / "state"
    save_snapshot(make_state(policy), state_dir)
    topic = unique("attach")
    return {
        "EIR_KAFKA__BOOTSTRAP_SERVERS": services.broker.bootstrap,
        "EIR_KAFKA__ATTACH_TOPIC": topic, "EIR_KAFKA__ATTACH_DLQ_TOPIC": f"{topic}.dlq",
        "EIR_KAFKA__NOTIFICATIONS_TOPIC": f"{topic}.notifications",
        "EIR_KAFKA__COMMANDS_TOPIC": f"{topic}.commands",
        "EIR_KAFKA__REGISTRY_TOPIC": f"{topic}.registry",
        "EIR_KAFKA__REGISTRY_DLQ_TOPIC": f"{topic}.registry.dlq",
        "EIR_KAFKA__GROUP_ID": unique("group"), "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "EIR_POSTGRES__DSN": dsn, "EIR_STATE__DIR": str(state_dir), "EIR_HTTP__PORT": "0",
        "EIR_WORKER__BATCH_MAX_WAIT_MS": "100",
        # Jobs run when a test runs them (Worker.run_job), not on their schedules.
        "EIR_JOBS__RECONCILE_CRON": "", "EIR_JOBS__CONSISTENCY_CRON": "",
        "EIR_JOBS__RETENTION_CRON": "", "EIR_JOBS__FOLD_CRON": "",
        "EIR_JOBS__DROP_DIR": str(tmp_path / "drop"),
        "EIR_JOBS__DROP_SETTLE_S": "0", "EIR_JOBS__RETRY_DELAY_S": "0.1",
        # Sweeps often; no quiet hours unless a test asks for them.
        "EIR_NOTICES__SWEEP_EVERY_S": "0.3", "EIR_NOTICES__QUIET_START": "00:00",
        "EIR_NOTICES__QUIET_END": "00:00", "EIR_NOTICES__COUNT_EVERY_S": "0",
    }


class Running:
    """A worker in a thread of this process."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.worker = build_worker(config, clock)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.worker.close()


@pytest.fixture()
def worker(env):
    running: list[Running] = []

    def start(clock: Clock | None = None) -> Running:
        running.append(Running(load_config(environ=env), clock))
        return running[-1]

    yield start
    for r in running:
        r.close()
