"""Versioned SQL migrations: each applied once, recorded in `schema_migrations`, all in one
transaction under an advisory lock, so running it twice or from several workers at once is
safe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant shared by every worker; chosen once, never changed.
MIGRATION_LOCK = 7_253_001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        found.append(Migration(int(version), name, path.read_text()))
    return found


def migrate(dsn: str) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    applied_now = []
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            conn.execute(migration.sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (migration.version, migration.name))
            applied_now.append(f"{migration.version:04d}_{migration.name}")
    return applied_now


def pending(dsn: str) -> list[str]:
    """Migrations not yet applied to this database."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
        done = set() if exists is None else {
            v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    return [f"{m.version:04d}_{m.name}" for m in migrations() if m.version not in done]


class NotMigrated(RuntimeError):
    """The database lacks migrations; the message says what to run."""


def require_migrated(dsn: str) -> None:
    missing = pending(dsn)
    if missing:
        raise NotMigrated(f"database migrations not applied: {', '.join(missing)}; "
                          "run 'eir-enforcer db migrate'")
