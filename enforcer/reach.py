"""Waiting for a service the process needs (the broker, PostgreSQL): a worker may be started
before them, or during an outage, and is then tried again with backoff, with a log line each
time, until it works or the process is asked to stop. Beside config.py and clock.py: the app
layer and the Kafka adapters (consumers/) both use it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

import psycopg

from enforcer.logs import describe

log = logging.getLogger("eir.start")

T = TypeVar("T")


class Unreachable(ConnectionError):
    """A service the process needs did not answer (no broker of kafka.bootstrap_servers)."""


class Stopped(Exception):
    """Asked to stop before the start was done."""


# What a step fails with while its service is away: connecting to PostgreSQL (refused, timed
# out, a host not resolved yet, the server starting or refusing us: the message says which)
# or to the broker.
UNREACHABLE = (psycopg.OperationalError, Unreachable)


@dataclass(frozen=True)
class Backoff:
    first_s: float
    most_s: float  # the wait doubles up to this

    def after(self, wait_s: float) -> float:
        """The wait that follows one of `wait_s`, in seconds: twice it, at most most_s."""
        return min(wait_s * 2, self.most_s)


def when_reachable(step: Callable[[], T], service: str, backoff: Backoff,
                   stop: threading.Event) -> T:
    """step()'s result, trying it again while it fails for want of `service`, waiting
    backoff.first_s, doubling up to backoff.most_s. Raises Stopped if `stop` is set first."""
    wait = backoff.first_s
    while not stop.is_set():
        try:
            return step()
        except UNREACHABLE as exc:
            log.warning("not reachable at start, trying again",
                        extra={"service": service, "error": describe(exc), "retry_in_s": wait})
        if stop.wait(wait):
            break
        wait = backoff.after(wait)
    raise Stopped
