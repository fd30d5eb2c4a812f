"""A long-lived PostgreSQL connection for a loop that runs for the process's life.

Opening a connection forks a PostgreSQL backend: milliseconds of both sides' CPU. A loop
that runs several times a second (the registry events', the attach events', the notices'
rounds) keeps one, and drops it after a failure so that a broken one is never used again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import psycopg


class NotAutocommit(ValueError):
    """A loop was handed a `connect` whose connections are not in autocommit."""


class LazyConnection:
    """A loop's PostgreSQL connection: opened when first asked for, dropped after a failure,
    so that the next batch opens a fresh one. `connect` must give autocommit connections
    (NotAutocommit, raised at the first open, otherwise): a kept connection's implicit
    transaction would stay open between batches, holding back vacuum and blocking the
    partitions' drops (enforcer/db/partitions.py); each batch opens `transaction()` itself."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            if not conn.autocommit:
                conn.close()
                raise NotAutocommit("a loop's kept connection must be in autocommit")
            self._conn = conn
        return self._conn

    def drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    @contextmanager
    def held(self) -> Iterator[psycopg.Connection]:
        """The connection for a block; dropped if the block fails."""
        try:
            yield self.connection()
        except BaseException:
            self.drop()
            raise
