from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.build import imei_rules
from enforcer.config import load_config
from enforcer.imei import ImeiRules
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
