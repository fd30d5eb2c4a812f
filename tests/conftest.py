from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from enforcer.build import imei_rules
from enforcer.config import load_config
from enforcer.db.migrate import migrate
from enforcer.imei import ImeiRules
from enforcer.services import EmbeddedServices, ServicePorts, free_port
from rules.policy import Policy, load_policy


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
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServices]:
    """A real broker and a real PostgreSQL for the whole run, started by the same code as
    `eir-enforcer services up`."""
    running = EmbeddedServices.at(tmp_path_factory.mktemp("services"),
                                  ServicePorts(free_port(), free_port()), "eir")
    running.up()
    yield running
    running.down()


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
