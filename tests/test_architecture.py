"""The engine imports no shell: decisions stay pure functions over events and state, so the
Kafka loops, PostgreSQL, both HTTP stacks, the CLI and the embedded services are adapters at
the edge (docs/architecture.md, "What each package may import")."""

from __future__ import annotations

import ast
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


# What each package may import of the project (docs/architecture.md, "Packages"); the
# foundations are enforcer's top-level modules.
FOUNDATIONS = "enforcer"
ALLOWED = {
    "enforcer": set(),
    "enforcer.engine": {FOUNDATIONS, "rules"},
    "rules": {FOUNDATIONS, "enforcer.engine"},
    "enforcer.db": {FOUNDATIONS, "enforcer.engine", "rules"},
    "enforcer.files": {FOUNDATIONS, "enforcer.engine", "rules"},
    "metrics": {FOUNDATIONS, "enforcer.engine", "enforcer.files"},
    "enforcer.follow": {FOUNDATIONS, "enforcer.engine", "rules", "enforcer.db", "enforcer.files",
                        "metrics"},
    "enforcer.notices": {FOUNDATIONS, "enforcer.engine", "rules", "enforcer.db",
                         "enforcer.follow", "metrics"},
    "enforcer.jobs": {FOUNDATIONS, "enforcer.engine", "rules", "enforcer.db", "enforcer.files",
                      "enforcer.follow", "metrics"},
    "enforcer.frontends": {FOUNDATIONS, "enforcer.engine", "rules", "metrics"},
    "enforcer.endpoints": {FOUNDATIONS, "enforcer.engine", "rules", "enforcer.db",
                           "enforcer.follow", "metrics"},
    "consumers": {FOUNDATIONS, "enforcer.engine", "rules", "enforcer.db", "enforcer.follow",
                  "enforcer.notices", "metrics"},
}
PACKAGES = ("enforcer.engine", "enforcer.db", "enforcer.files", "enforcer.jobs",
            "enforcer.follow", "enforcer.notices", "enforcer.frontends", "enforcer.endpoints",
            "enforcer.app", "enforcer.embedded", "consumers", "metrics", "rules")


def package_of(module: str) -> str | None:
    """The package of the table a module is in, or None outside the product."""
    for package in PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return FOUNDATIONS if module.startswith(FOUNDATIONS + ".") else None


def imported(path: Path, module: str) -> set[str]:
    """Every module `module` (at `path`) names in an import, relative ones resolved, and
    `from package import name` as both the package and package.name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[:-node.level]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def crossings() -> set[tuple[str, str, str]]:
    """(module, its package, a package it imports that its row does not name)."""
    found = set()
    for path in sorted(ROOT.glob("**/*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mine = package_of(module)
        if mine is None or mine not in ALLOWED or ".venv" in path.parts:
            continue
        for name in imported(path, module):
            theirs = package_of(name)
            if theirs is not None and theirs != mine and theirs not in ALLOWED[mine]:
                found.add((module, mine, theirs))
    return found


def test_each_package_imports_only_what_its_row_allows() -> None:
    assert crossings() == set()

