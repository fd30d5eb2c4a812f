"""The PostgreSQL server itself rather than the schema: whether it answers, and the
database the schema goes in."""

from __future__ import annotations

import psycopg
from psycopg import sql


def ping(conn: psycopg.Connection) -> None:
    """A round trip to the server; raises psycopg.Error when it does not answer."""
    conn.execute("SELECT 1")


def create_database(conn: psycopg.Connection, name: str) -> None:
    """The database `name`, created unless it exists; `conn` is in autocommit (CREATE
    DATABASE runs in no transaction) on another database of the server."""
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
