"""The engine imports no shell: decisions stay pure functions over events and state, so the
Kafka loops, PostgreSQL, both HTTP stacks, the CLI and the embedded services are adapters at
the edge (docs/architecture.md, "What each package may import")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Modules whose presence in sys.modules means an engine module reached a shell.
SHELL = ("psycopg", "kafka", "confluent_kafka", "http", "uvloop", "h2", "httptools",
         "apscheduler", "argparse", "prometheus_client", "rich", "subprocess", "socket",
         "asyncio", "diameter", "enforcer.db", "enforcer.files", "enforcer.jobs",
         "enforcer.follow", "enforcer.notices", "enforcer.frontends", "enforcer.endpoints",
         "enforcer.app", "enforcer.embedded", "consumers", "metrics")

PROBE = """
import importlib, json, pkgutil, sys
import enforcer.engine as engine
for module in pkgutil.iter_modules(engine.__path__):
    importlib.import_module(f"enforcer.engine.{module.name}")
print(json.dumps(sorted(sys.modules)))
"""


def shell_modules(names: list[str]) -> list[str]:
    return [n for n in names if any(n == s or n.startswith(s + ".") for s in SHELL)]


def test_the_engine_imports_no_shell_package() -> None:
    loaded = json.loads(subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout)
    assert "enforcer.engine.decide" in loaded
    assert shell_modules(loaded) == []


def test_the_probe_sees_a_shell_import_when_there_is_one() -> None:
    loaded = json.loads(subprocess.run(
        [sys.executable, "-c", "import enforcer.db.history\n" + PROBE], cwd=ROOT, check=True,
        capture_output=True, text=True).stdout)
    assert "psycopg" in shell_modules(loaded)
