"""`eir-enforcer demo` in a real terminal: tmux runs it, capture-pane reads the screen and
its scrollback back as a person would see them."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from enforcer.embedded.demoview import FUNNEL, MAX_COLUMNS
from enforcer.embedded.services import free_port

PANEL_TOP = "╭─ eir-enforcer demo"
EXITED = "demo exited "
HEIGHT = 40
WAIT_S = 180.0
POLL_S = 0.2


class Terminal:
    """One tmux server of the test's own (its socket in tmp_path), one window."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is needed for this test (Debian's package tmux; .ci/run "
                        "installs it)")
        # -u: UTF-8 whatever the locale; -f /dev/null: no user configuration.
        self._base = [tmux, "-u", "-f", os.devnull, "-S", str(socket)]
        self._env = env

    def _tmux(self, *args: str) -> str:
        return subprocess.run([*self._base, *args], env=self._env, capture_output=True,
                              text=True, check=True).stdout

    def start(self, argv: list[str], width: int) -> None:
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(HEIGHT),
                   f'{shlex.join(argv)}; echo "{EXITED}$?"; sleep 600')

    def lines(self) -> list[str]:
        """The scrollback and the screen, lines the terminal wrapped joined again."""
        return [line.rstrip() for line in
                self._tmux("capture-pane", "-p", "-J", "-S", "-").splitlines()]

    def wait_for(self, shown: str) -> list[str]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            lines = self.lines()
            if any(line.startswith(shown) for line in lines):
                return lines
            if any(line.startswith(EXITED) for line in lines):
                break
            time.sleep(POLL_S)
        pytest.fail(f"{shown!r} not on the screen:\n" + "\n".join(lines))

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], env=self._env, capture_output=True)


@pytest.mark.parametrize("width", [80, 120])
def test_demo_in_a_terminal_redraws_one_panel_in_place_within_100_columns(
        tmp_path: Path, width: int) -> None:
    kafka, postgres, metrics = free_port(), free_port(), free_port()
    env = {"EIR_STATE__DIR": str(tmp_path / "state"), "EIR_SERVICES__DIR": str(tmp_path / "svc"),
           "EIR_SERVICES__KAFKA_PORT": str(kafka), "EIR_SERVICES__POSTGRES_PORT": str(postgres),
           "EIR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
           "EIR_POSTGRES__DSN": f"postgresql://postgres@127.0.0.1:{postgres}/eir",
           "EIR_HTTP__PORT": str(metrics), "EIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
           "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    cli = [sys.executable, "-m", "enforcer.app.cli"]
    # A socket's path has at most 107 bytes (sun_path); a deep tmp_path may have more.
    sockets = Path(tempfile.mkdtemp(prefix="eir-tmux-"))
    terminal = Terminal(sockets / "tmux.sock", env)
    try:
        terminal.start([*cli, "demo", "--devices", "5000", "--rate", "300", "--duration", "10"],
                       width)
        first = terminal.wait_for(PANEL_TOP)
        time.sleep(1.5)
        later = terminal.lines()
        ended = terminal.wait_for(EXITED)
        status = subprocess.run([*cli, "services", "status"], env=env, capture_output=True,
                                text=True, check=True).stdout
    finally:
        terminal.close()
        shutil.rmtree(sockets, ignore_errors=True)
        subprocess.run([*cli, "services", "down"], env=env, capture_output=True)
    assert f"{EXITED}0" in ended, "\n".join(ended)
    # It started the services, so it stopped them.
    assert [s["up"] for s in json.loads(status)["services"]] == [False, False]

    def tops(lines: list[str]) -> list[int]:
        return [i for i, line in enumerate(lines) if line.startswith(PANEL_TOP)]
    # Redrawn in place: one panel in the whole scrollback, its figures changing under it.
    assert len(tops(first)) == len(tops(later)) == len(tops(ended)) == 1
    assert first[tops(first)[0]] != later[tops(later)[0]]
    assert max(len(line) for line in ended) <= min(width, MAX_COLUMNS), "\n".join(ended)
    panel = ended[tops(ended)[0]:]
    for step in FUNNEL:
        assert any(line.startswith(f"│ {step} ") for line in panel), step
    summary = "\n".join(ended[ended.index(next(line for line in ended if line.startswith("7."))):])
    for shown in ("slot_usage holds", "8. Try next:", "eir-enforcer history",
                  "eir-enforcer notices list --state cut", "eir-enforcer services up",
                  "PostgreSQL with what the demo stored, the broker empty"):
        assert shown in summary
    # The worker's log lines in a file the summary names, none on the screen.
    log = tmp_path / "svc" / "demo.log"
    # Its path is whole on the screen, or cut with backslash-newline as a shell joins it.
    pasted = "".join(line.strip().removesuffix("\\") for line in summary.splitlines())
    assert f"The worker's log lines:{log}" in pasted
    assert not any('"logger":' in line for line in ended)
