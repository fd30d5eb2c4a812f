"""Structured logs: one JSON object per line on stderr. Callers pass phone numbers through
`subscriber.mask`; the formatter never sees them in clear."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import msgspec

from enforcer.clock import MS_PER_S, iso

STANDARD = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": iso(int(record.created * MS_PER_S)), "level": record.levelname.lower(),
                 "logger": record.name, "event": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


class TextFormatter(JsonFormatter):
    """For people at a terminal: time, level, logger and event, then the fields as k=v. The
    same fields as the JSON form, so nothing unmasked slips in by this road."""

    def format(self, record: logging.LogRecord) -> str:
        entry = msgspec.json.decode(super().format(record))
        head = " ".join(str(entry.pop(k)) for k in ("ts", "level", "logger", "event"))
        error = entry.pop("error", None)
        fields = " ".join(f"{k}={msgspec.json.encode(v, enc_hook=str).decode()}"
                          for k, v in entry.items())
        return "  ".join(p for p in (head, fields) if p) + (f"\n{error}" if error else "")


FORMATTERS = {"json": JsonFormatter, "text": TextFormatter}
# A long-running command's start (what it listens on and consumes) and stop: logged at INFO,
# and shown at the default level (WARNING) too, so that one sees it came up; quiet from
# ERROR up.
LIFECYCLE = "eir.lifecycle"
LOG_FORMATS = tuple(FORMATTERS)


def describe(exc: BaseException) -> str:
    """An error as a log may show it. A database error's message can quote the row it
    failed on, and others the value they choked on (numbers and all): only network and
    broker errors, and a database connection that failed (libpq's words: host, port, why;
    no statement, so no row), are told in full; the rest by class (and SQLSTATE)."""
    # An error can only be of a client this process loaded: looked up, never imported, so
    # that a process that logs (the fold's, a CLI command) does not load both Kafka clients.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    if isinstance(exc, (OSError, *_broker_errors())):
        return repr(exc)
    return type(exc).__name__


def _broker_errors() -> tuple[type[BaseException], ...]:
    """The error classes of the Kafka clients this process has loaded."""
    loaded = ((sys.modules.get("kafka.errors"), "KafkaError"),
              (sys.modules.get("confluent_kafka"), "KafkaException"))
    found = (getattr(module, name, None) for module, name in loaded if module is not None)
    return tuple(error for error in found if error is not None)


def setup_logging(level: str = "INFO", form: str = "json", path: str | None = None) -> None:
    """Every line to stderr, or appended to the file at `path`, in `form`."""
    handler = (logging.StreamHandler(sys.stderr) if path is None
               else logging.FileHandler(path, mode="a", encoding="utf-8"))
    handler.setFormatter(FORMATTERS[form]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The Kafka client narrates every connection at INFO; only its warnings matter here.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger(LIFECYCLE).setLevel(
        min(logging.INFO, root.level) if root.level <= logging.WARNING else root.level)


def logging_now() -> tuple[str, str, str | None]:
    """How this process logs, as setup_logging's arguments: for a child process to log as
    it does (enforcer.jobs.fold)."""
    root = logging.getLogger()
    handler = root.handlers[0] if root.handlers else None
    form = next((name for name, kind in FORMATTERS.items()
                 if handler is not None and type(handler.formatter) is kind), "json")
    path = handler.baseFilename if isinstance(handler, logging.FileHandler) else None
    return logging.getLevelName(root.level), form, path


@contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Every log line into the file at `path` (made anew) while inside, in the format set up
    for stderr; back to where they went after."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(handlers[0].formatter if handlers else JsonFormatter())
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = handlers
        handler.close()
