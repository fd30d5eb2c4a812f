"""What `eir-enforcer demo` shows while its worker runs: at a terminal, one panel redrawn in
place (rich's Live); when stdout is a file or a pipe, a few plain lines every REPORT_EVERY_S
seconds, with no escape codes. Both stay within the terminal's width and MAX_COLUMNS. The
caller reads the figures from the worker's own metrics; this module only draws them."""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rules.policy import VERDICTS

# The widest the demo prints, whatever the terminal: a wall of wrapped numbers is unreadable.
MAX_COLUMNS = 100
# Without a terminal: one report this often, so logs and CI output stay short.
REPORT_EVERY_S = 5.0
# Events per second are counted over about this long: one sample is too jumpy.
RATE_WINDOW_S = 2.0
# The per-day strip of the funnel has at most this many cells; longer runs share cells.
STRIP_CELLS = 40
AXIS_EVERY_DAYS = 10
STRIP_LEVELS = "▁▂▃▄▅▆▇█"
STRIP_LEVELS_ASCII = ".:-=+*#@"
STRIP_NONE, STRIP_NONE_ASCII = "·", "."
# A wrapped line goes on this much further in than its first line ("1. " of a step).
CONTINUED = "   "
# The text under a numbered step starts here.
INDENT = "   "
CONTINUATION = "    "  # further lines of one command, under its first word
# Dead-letter reasons named in the display; the rest are in the total.
REASONS_SHOWN = 3

# A notice's life (enforcer/engine/lifecycle.py): opened, warned, reminded, cut; restored when the
# registry resolves a cut notice; lapsed when, at its deadline, its subject had been unseen
# for notices.lapse_days.
FUNNEL = ("opened", "warned", "reminded", "cut", "restored", "lapsed")


def columns() -> int:
    """The width to print within: the terminal's, at most MAX_COLUMNS; MAX_COLUMNS when
    stdout is no terminal."""
    if not sys.stdout.isatty():
        return MAX_COLUMNS
    return min(shutil.get_terminal_size((MAX_COLUMNS, 0)).columns, MAX_COLUMNS)


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` columns; continued lines indented more than
    the first (CONTINUED)."""
    if not text.strip():
        return [""]
    indent = " " * (len(text) - len(text.lstrip(" ")))
    return textwrap.wrap(text, width, subsequent_indent=indent + CONTINUED, break_on_hyphens=False)


def command_lines(words: list[str], width: int, indent: str) -> list[str]:
    """A shell command in lines of at most `width` columns (width >= 4) that still pastes
    as one command: words continue on the next line after a backslash; a word that does not
    fit at the continuation indent starts at column 0, and one longer than a line is cut
    with a backslash at the end of each part (a shell removes backslash-newline before it
    splits words, POSIX.1 XCU 2.2.1, so the parts join again)."""
    lines: list[str] = []
    line = ""
    for word in words:
        if not line:
            line = _start(word, indent, width, lines)
        elif len(line) + 1 + len(word) + len(" \\") <= width:
            line += " " + word
        else:
            lines.append(line + " \\")
            line = _start(word, indent + CONTINUATION, width, lines)
    return lines + [line]


def _start(word: str, indent: str, width: int, lines: list[str]) -> str:
    """The line a word starts, at `indent` if it fits there, else at column 0, else cut
    into parts of at most width - 1 columns, each but the last ended by a backslash (in
    `lines`), the last leaving room for " \\"."""
    for line in (indent + word, word):
        if len(line) + len(" \\") <= width:
            return line
    while len(word) + len(" \\") > width:  # room for the " \\" a next word needs
        part = min(width - 1, len(word) - 1)  # and never an empty last part
        lines.append(word[:part] + "\\")
        word = word[part:]
    return word


def try_next(steps: list[tuple[list[str], str]], width: int) -> list[str]:
    """Commands to copy, each with what it shows as a shell comment: beside it when both
    fit in `width`, else on the line above. The comments beside start in one column."""
    lines = []
    column = max((len(INDENT + " ".join(words)) for words, why in steps
                  if len(INDENT + " ".join(words) + "  # " + why) <= width), default=0)
    for words, why in steps:
        one = f"{INDENT}{' '.join(words)}"
        if len(one) <= column and column + len(f"  # {why}") <= width:
            lines.append(f"{one:<{column}}  # {why}")
        elif len(one) + len(f"  # {why}") <= width:
            lines.append(f"{one}  # {why}")
        else:
            lines += [f"{INDENT}# {why}", *command_lines(words, width, INDENT)]
    return lines


@dataclass(frozen=True)
class Figures:
    """The demo's worker at one moment; counts are since the demo started."""

    elapsed_s: float
    day: float  # simulated days since the start
    sent: int  # attach messages the demo handed to its producer (before any was decided)
    verdicts: tuple[int, ...]  # events decided, in policy.VERDICTS order
    dead_letters: dict[str, int]  # messages sent to a dead-letter topic, by reason
    lag: int  # messages not yet consumed, all partitions (the worker's eir_consumer_lag)
    upserts: int  # slot_usage rows upserted; one row takes many (eir_history_rows_written)
    commands: int  # cutoff and restore commands to provisioning (eir.commands)
    sms: int  # SMS requests to the gateway (eir.notifications)
    outbox_backlog: int  # step messages not yet published
    funnel: tuple[int, ...]  # notices through each FUNNEL step
    cut_now: int  # subjects cut off now (eir_cutoffs)

    @property
    def decided(self) -> int:
        return sum(self.verdicts)


class Progress:
    """The samples seen so far: the funnel's counts per simulated day and the recent rate."""

    def __init__(self) -> None:
        self._day_ends: list[tuple[int, ...]] = []  # funnel totals at each day's last sample
        self._recent: deque[tuple[float, int]] = deque()

    def add(self, figures: Figures) -> None:
        day = int(figures.day)
        while len(self._day_ends) <= day:
            # Days a sample skipped took nothing: they hold the totals of the day before.
            self._day_ends.append(self._day_ends[-1] if self._day_ends
                                  else (0,) * len(figures.funnel))
        self._day_ends[day] = figures.funnel
        self._recent.append((figures.elapsed_s, figures.decided))
        while self._recent[0][0] < figures.elapsed_s - RATE_WINDOW_S:
            self._recent.popleft()

    def rate(self) -> float:
        """Events decided per second over the last RATE_WINDOW_S."""
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def per_day(self) -> list[tuple[int, ...]]:
        """Each simulated day's notices through each FUNNEL step, day 0 first."""
        before = (0,) * len(FUNNEL)
        days = []
        for ends in self._day_ends:
            days.append(tuple(e - b for e, b in zip(ends, before)))
            before = ends
        return days


def verdict_share(figures: Figures, sep: str) -> str:
    decided = figures.decided
    if not decided:
        return "none decided yet"
    return sep.join(f"{v.value} {n / decided:.1%}" for v, n in zip(VERDICTS, figures.verdicts))


def _dead_letters(figures: Figures) -> str:
    total = sum(figures.dead_letters.values())
    top = sorted(figures.dead_letters.items(), key=lambda kv: -kv[1])[:REASONS_SHOWN]
    return f"{total:,}" + (" (" + ", ".join(f"{r} {n:,}" for r, n in top) + ")" if top else "")


def strip(per_day: list[int], days: float, ascii_only: bool) -> str:
    """Counts per simulated day as one character each (a cell sums several days when the
    run is longer than STRIP_CELLS days), scaled to the largest; a day with none is a dot,
    days still to come are blank."""
    cells = min(math.ceil(days), STRIP_CELLS)
    width = days / cells
    sums = [0] * cells
    reached = 0
    for day, n in enumerate(per_day):
        cell = min(int(day / width), cells - 1)
        sums[cell] += n
        reached = cell + 1
    levels = STRIP_LEVELS_ASCII if ascii_only else STRIP_LEVELS
    none = STRIP_NONE_ASCII if ascii_only else STRIP_NONE
    top = max(sums) or 1
    return "".join((levels[math.ceil(n / top * len(levels)) - 1] if n else none)
                   if i < reached else " " for i, n in enumerate(sums))


def axis(days: float) -> str:
    """Day marks under the strip: 0, 10, 20 ... where each falls."""
    cells = min(math.ceil(days), STRIP_CELLS)
    line = [" "] * (cells + len(str(int(days))))
    for day in range(0, int(days) + 1, AXIS_EVERY_DAYS):
        mark = str(day)
        at = min(int(day / (days / cells)), cells - 1)
        if all(c == " " for c in line[max(at - 1, 0):at + len(mark)]):
            line[at:at + len(mark)] = mark
    return "".join(line).rstrip()


def panel(f: Figures, progress: Progress, duration_s: float, days: float,
          ascii_only: bool) -> Panel:
    """The live panel of the latest sample `f`: traffic, verdicts, dead letters, lag, and
    the notices' funnel by simulated day."""
    traffic = Table.grid(padding=(0, 2))
    traffic.add_column(style="bold")
    traffic.add_column()
    traffic.add_row("attach events", f"{f.sent:,} sent · {f.decided:,} decided · "
                    f"{progress.rate():,.0f}/s now · lag {f.lag:,}")
    traffic.add_row("verdicts", verdict_share(f, " · "))
    traffic.add_row("dead letters", _dead_letters(f))
    traffic.add_row("slot_usage", f"{f.upserts:,} upserts "
                    f"({f.upserts / f.decided if f.decided else 0:.2f} a decided event)")
    traffic.add_row("sent", f"{f.commands:,} commands · {f.sms:,} SMS requests · "
                    f"outbox backlog {f.outbox_backlog:,}")
    funnel = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    funnel.add_column("notices", style="bold")
    funnel.add_column("total", justify="right")
    funnel.add_column("today", justify="right")
    funnel.add_column("by simulated day", no_wrap=True)
    per_day = progress.per_day()
    for i, step in enumerate(FUNNEL):
        funnel.add_row(step, f"{f.funnel[i]:,}", f"{per_day[-1][i]:,}",
                       strip([d[i] for d in per_day], days, ascii_only))
    funnel.add_row("", "", "day", axis(days), style="dim")
    title = (f"eir-enforcer demo · {f.elapsed_s:.0f} of {duration_s:g} s · "
             f"simulated day {f.day:.1f} of {days:g}")
    return Panel(Group(traffic, Text(""), funnel,
                       Text(f"cut off now: {f.cut_now:,} subjects · Ctrl-C stops", style="dim")),
                 title=title, title_align="left")


def report(f: Figures, progress: Progress) -> list[str]:
    """The plain form of the panel for the latest sample `f`: four lines, no escape codes."""
    return [f"  [{f.elapsed_s:.0f} s, day {f.day:.1f}] attach events: {f.sent:,} sent, "
            f"{f.decided:,} decided ({progress.rate():,.0f}/s now), lag {f.lag:,}",
            f"    verdicts {verdict_share(f, ', ')}; slot_usage upserts {f.upserts:,}",
            f"    dead letters {_dead_letters(f)}; sent {f.commands:,} commands, "
            f"{f.sms:,} SMS requests",
            "    notices " + ", ".join(f"{s} {n:,}" for s, n in zip(FUNNEL, f.funnel))
            + f"; cut off now {f.cut_now:,}"]


class Display(Protocol):
    def show(self, figures: Figures) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


def open_display(say: Callable[[str], None], duration_s: float, days: float) -> Display:
    """The live panel when stdout is a terminal that can redraw, else plain reports."""
    console = Console(highlight=False)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveDisplay(console, duration_s, days)
    return PlainDisplay(say)


class PlainDisplay:
    """For a file or a pipe: a report every REPORT_EVERY_S, and one at the end."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._progress = Progress()
        self._latest: Figures | None = None
        self._reported_s = 0.0

    def show(self, figures: Figures) -> None:
        self._progress.add(figures)
        self._latest = figures
        if figures.elapsed_s - self._reported_s >= REPORT_EVERY_S:
            self._report(figures)

    def _report(self, figures: Figures) -> None:
        for line in report(figures, self._progress):
            self._say(line)
        self._reported_s = figures.elapsed_s

    def note(self, text: str) -> None:
        self._say(text)

    def close(self) -> None:
        if self._latest is not None and self._latest.elapsed_s > self._reported_s:
            self._report(self._latest)


class LiveDisplay:
    """For a terminal: the panel redrawn in place. What is written to stderr meanwhile, when
    it is the terminal too, is printed above the panel instead of across it."""

    def __init__(self, console: Console, duration_s: float, days: float) -> None:
        console.width = min(console.width, MAX_COLUMNS)
        self._console = console
        self._duration_s, self._days = duration_s, days
        self._progress = Progress()
        self._live = Live(console=console, auto_refresh=False,
                          redirect_stderr=sys.stderr.isatty())
        self._live.start()

    def show(self, figures: Figures) -> None:
        self._progress.add(figures)
        self._live.update(panel(figures, self._progress, self._duration_s, self._days,
                                self._console.options.ascii_only), refresh=True)

    def note(self, text: str) -> None:
        self._console.print(text)

    def close(self) -> None:
        self._live.stop()
