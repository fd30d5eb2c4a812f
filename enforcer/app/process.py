"""Starting and stopping the long-running commands, `run` and `serve`.

- A service that cannot be reached at start (the broker, PostgreSQL) is waited for as an
  outage is while running: `enforcer.reach.when_reachable`.
- An address to listen on that cannot be had is a configuration fault:
  `enforcer.listening`.
- SIGTERM or SIGINT asks the process to finish what it is doing and stop; a second one ends
  it at once, whatever holds the first up (a connection that never answers, a job midway):
  nothing, configuration or fault, makes it deaf to an operator.
"""

from __future__ import annotations

import os
import signal
import threading

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
