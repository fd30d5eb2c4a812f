"""The demo's display, drawn from figures alone: widths, the funnel by day, plain reports."""

from __future__ import annotations

import io
import shlex
import subprocess
import re
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st
from rich.console import Console

from enforcer.embedded.demoview import (FUNNEL, MAX_COLUMNS, Figures, LiveDisplay, PlainDisplay,
                                        Progress, axis, command_lines, panel, strip, try_next, wrap)

ESCAPE = re.compile(r"\x1b")


def figures(elapsed_s: float = 1.0, day: float = 0.5, funnel: tuple[int, ...] = (0,) * 6,
            decided: int = 0, big: int = 0) -> Figures:
    return Figures(elapsed_s=elapsed_s, day=day, sent=decided + big,
                   verdicts=(decided - decided // 10, decided // 10, 0),
                   dead_letters={"not_json": big, "missing_field": 3} if big else {},
                   lag=big, upserts=decided + big, commands=big, sms=big, outbox_backlog=big,
                   funnel=funnel, cut_now=big)


def test_the_funnel_counts_each_simulated_day_and_days_between_samples_took_nothing() -> None:
    progress = Progress()
    progress.add(figures(day=0.2, funnel=(5, 0, 0, 0, 0, 0)))
    progress.add(figures(day=0.9, funnel=(8, 6, 0, 0, 0, 0)))
    progress.add(figures(day=3.1, funnel=(9, 8, 1, 0, 0, 0)))
    assert progress.per_day() == [(8, 6, 0, 0, 0, 0), (0,) * 6, (0,) * 6, (1, 2, 1, 0, 0, 0)]


def test_events_per_second_are_counted_over_the_recent_window() -> None:
    progress = Progress()
    for second in range(10):
        progress.add(figures(elapsed_s=second, decided=100 * second ** 2))
    # The last two seconds: from 6,400 to 8,100 events.
    assert progress.rate() == (8_100 - 4_900) / 2


def test_the_strip_has_a_cell_a_day_dots_for_quiet_days_and_blanks_for_days_to_come() -> None:
    assert strip([0, 4, 2, 0, 1], days=8, ascii_only=False) == "·█▄·▂   "
    assert strip([0, 4, 2, 0, 1], days=8, ascii_only=True) == ".@=.:   "


def test_a_long_run_shares_cells_and_its_axis_keeps_to_them() -> None:
    per_day = [1] * 365
    assert len(strip(per_day, days=365, ascii_only=False)) == 40
    assert axis(40).split() == ["0", "10", "20", "30", "40"]
    assert len(axis(365)) <= 40 + len("365")


def render(width: int, figures_: Figures, progress: Progress) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(panel(figures_, progress, 60, 40, ascii_only=False))
    return console.file.getvalue().splitlines()


@given(decided=st.integers(0, 10**10), big=st.integers(0, 10**10),
       funnel=st.tuples(*[st.integers(0, 10**7)] * len(FUNNEL)),
       day=st.floats(0, 45), width=st.sampled_from([60, 80, MAX_COLUMNS]))
def test_the_panel_fits_its_width_and_shows_the_funnel_from_80_columns(
        decided: int, big: int, funnel: tuple[int, ...], day: float, width: int) -> None:
    progress = Progress()
    sample = figures(elapsed_s=30, day=day, funnel=funnel, decided=decided, big=big)
    progress.add(sample)
    lines = render(width, sample, progress)
    assert max(len(line) for line in lines) <= width
    assert "simulated day" in lines[0]
    if width >= 80:
        for step, n in zip(FUNNEL, funnel):
            assert any(line.startswith(f"│ {step} ") and f" {n:,} " in line for line in lines)


def test_the_live_panel_keeps_within_max_columns_on_a_wide_terminal() -> None:
    out = io.StringIO()
    live = LiveDisplay(Console(file=out, width=200, force_terminal=True, color_system=None),
                       60, 40)
    live.show(figures(decided=5_000))
    live.close()
    text = ESCAPE.sub("", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()))
    assert max(len(line) for line in text.splitlines()) == MAX_COLUMNS


@given(decided=st.integers(0, 10**9), big=st.integers(0, 10**9))
def test_plain_reports_are_short_lines_without_escape_codes(decided: int, big: int) -> None:
    lines: list[str] = []
    plain = PlainDisplay(lambda text: lines.extend(wrap(text, MAX_COLUMNS)))
    for second in range(1, 8):
        plain.show(figures(elapsed_s=second, decided=decided, big=big))
    plain.close()
    assert max(len(line) for line in lines) <= MAX_COLUMNS
    assert not any(ESCAPE.search(line) for line in lines)
    # A report at 5 s and the last one at 7 s: four lines each.
    heads = [line.split("]")[0] for line in lines if line.startswith("  [")]
    assert heads == ["  [5 s, day 0.5", "  [7 s, day 0.5"]
    assert sum(line.startswith("    notices opened") for line in lines) == 2


words = st.lists(st.text("abc-/.=", min_size=1, max_size=30), min_size=1, max_size=20)


@given(text=st.lists(st.text("xyz-", min_size=1, max_size=12), min_size=1, max_size=40),
       indent=st.integers(0, 6), width=st.integers(30, 100))
def test_wrapped_text_keeps_its_words_and_its_width(text: list[str], indent: int,
                                                    width: int) -> None:
    line = " " * indent + " ".join(text)
    lines = wrap(line, width)
    assert all(len(part) <= width for part in lines)
    assert " ".join(lines).split() == line.split()


def as_shell_reads_it(lines: list[str]) -> list[str]:
    """Backslash-newline removed, then split into words (POSIX.1 XCU 2.2.1, 2.3)."""
    return shlex.split("\n".join(lines).replace("\\\n", ""))


@given(argv=words, width=st.integers(20, 100), indent=st.text(" ", max_size=8))
@example(argv=["=" * 19, "="], width=20, indent="")  # a word a column short of the width
def test_a_command_continued_on_lines_is_the_same_command(argv: list[str], width: int,
                                                          indent: str) -> None:
    lines = command_lines(argv, width, indent)
    assert all(len(line) <= width for line in lines)
    assert all(line.endswith("\\") for line in lines[:-1])
    assert as_shell_reads_it(lines) == argv


def test_a_path_longer_than_the_terminal_pastes_whole_into_a_real_shell(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 90) / "state"
    lines = command_lines(["printf", "%s,", "--state", str(path)], 40, "   ")
    assert max(map(len, lines)) <= 40
    shown = subprocess.run(["sh", "-c", "\n".join(lines)], capture_output=True, text=True,
                           check=True).stdout
    assert shown == f"--state,{path},"


def test_commands_to_try_have_their_comment_beside_them_or_above() -> None:
    lines = try_next([(["eir-enforcer", "clones", "list"], "IMEIs flagged misused"),
                      (["eir-enforcer", "services", "down"], "stop the services"),
                      (["eir-enforcer", "history", "35209900176148"], "x" * 70)], 80)
    assert lines == ["   eir-enforcer clones list    # IMEIs flagged misused",
                     "   eir-enforcer services down  # stop the services",
                     "   # " + "x" * 70,
                     "   eir-enforcer history 35209900176148"]
