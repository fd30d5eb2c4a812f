"""Starting and stopping the long-running commands, `run` and `serve`.

- A service that cannot be reached at start (the broker, PostgreSQL) is waited for as an
  outage is while running: `enforcer.reach.when_reachable`.
- An address to listen on that cannot be had (a port in use, an address not of this host) is
  a configuration fault: a ConfigError naming the key, before anything else starts.
- SIGTERM or SIGINT asks the process to finish what it is doing and stop; a second one ends
  it at once, whatever holds the first up (a connection that never answers, a job midway):
  nothing, configuration or fault, makes it deaf to an operator.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import threading

from enforcer.config import ConfigError, config_error

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`; the second ends the process by that signal. Call from
    the main thread, before anything that may wait.

    The handler itself takes no lock: it runs in the main thread between two bytecodes,
    which may be inside `stop.wait()` holding the event's lock, and `stop.set()` there would
    wait for that lock for ever. It wakes a thread through a pipe, and that thread sets it."""
    wake_read, wake_write = os.pipe()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if received or stop.is_set():  # is_set reads a flag: no lock
            leave(signum)
        received.append(signum)
        os.write(wake_write, b"\0")

    def wake() -> None:
        os.read(wake_read, 1)
        stop.set()

    threading.Thread(target=wake, name="eir-signals", daemon=True).start()
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)


def leave(signum: int) -> None:
    """End the process at once, as the signal's default would have. Main thread only."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def stop_or_leave(stop: threading.Event, signum: int) -> None:
    """The first stop signal sets `stop`; another one ends the process at once, as the
    signal's default would have. Not from a signal handler (see stop_on_signals): from an
    event loop's, which runs as a callback."""
    if stop.is_set():
        leave(signum)
        return
    stop.set()


def cannot_listen(section: str, bind: str, port: int, exc: OSError) -> ConfigError:
    """The ConfigError a failed listen is, naming `section`.bind or `section`.port."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return config_error(f"{section}.bind", f"{bind} is no address of this host "
                            f"({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return config_error(f"{section}.port", f"{port} is in use on {bind} (another "
                            "eir-enforcer on this host?); give a free port")
    return config_error(f"{section}.port", f"cannot listen on {bind}:{port} ({exc.strerror})")


def listen(section: str, bind: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on bind:port. Raises ConfigError naming the key that cannot be
    had."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:  # a host name
        family = socket.AF_INET
    try:
        return socket.create_server((bind, port), family=family, backlog=backlog)
    except OSError as exc:
        raise cannot_listen(section, bind, port, exc) from exc
