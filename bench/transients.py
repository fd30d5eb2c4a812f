"""Issue 21 part 4: no load or build step makes a transient larger than 5 % of the state.

    python bench/transients.py --dir DIR

DIR is what `bench/importing.py`'s `prepare` and `list` stages leave (a snapshot in
DIR/state, the next white list in DIR/white.csv, spare TACs): the country the figures are
for, at whatever size it was prepared. Stages, each in a fresh process, none saving (the
snapshot is left as it was, so the bench can run again):
  load    the snapshot loaded as a worker, `serve`, an import or a fold loads it;
  import  the snapshot loaded, then `registry import --kind white` of DIR/white.csv as the
          command runs it (read, index, compare, check, next lists, realign into a draft);
  fold    the snapshot loaded, a year of registry changes laid over it (`bench/importing.py`'s,
          not measured), then the fold into a draft;
  fold_day  the same with a day's changes (the year's, scaled): more than the fold job folds
          at a time (every six hours, `jobs.fold_cron`).

A sampler process reads the stage's resident memory (/proc status: RssAnon, RssFile,
RssShmem) every `--every-ms`; a thread in the stage notes, every 20 ms, the product's frames
(`enforcer/`, `rules/`) the main thread is in, and a step is those `--depth` deep below the
measured call's function (`_white > from_bitmap`, `realign > _stream`). For each call
(the load, the import, the fold): resident before, the most, after (the heap's free pages
given back first), and its overshoot, the most less the larger of before and after: memory
the call held for a while and gave back or dropped, its transients at their largest
together; of all resident memory and of the anonymous part alone (file-backed pages read
from a mapped snapshot or written to a draft are resident while held, and the kernel can
take them back). Each step's own overshoot is the same figure over the samples it was seen
in (pieces it freed below malloc's mmap threshold, 32 MB at most each, may stay in the heap
and hide there: the call's figure counts them); the state is the size of the snapshot
generation's files. The last line is JSON: `state_mb`, and per call its
`*_overshoot_mb`, `*_overshoot_share` (of the state), their `*_anon_*` forms and
`*_overshoot_at` (the step at the most), `*_anon_before_mb`, `*_anon_most_mb`,
`*_anon_after_mb`; `steps_over_5pct` (every step whose overshoot of
all resident memory passes 5 %), `max_step_share` and `max_step_anon_share`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from measure import PROJECT_ROOT, KIB_PER_MIB, MainThreadWatch, emit, run_stage, say

from enforcer.config import load_config
from enforcer.engine.fold import fold
from enforcer.files.importing import Kind, import_file
from enforcer.files.snapshots import SnapshotDraft, load_snapshot
from enforcer.heap import give_back
from rules.policy import load_policy

SHARE_GOAL = 0.05  # issue 21 part 4: of the state
DAYS_A_YEAR = 365
LABEL_EVERY_S = 0.02
SETTLE_S = 0.2
PRODUCT = tuple(f"{PROJECT_ROOT}/{package}/" for package in ("enforcer", "rules"))
# The sampler: another process, so that no step holding the interpreter's lock hides a peak.
SAMPLER = """
import sys, time
pid, every = sys.argv[1], float(sys.argv[2])
fields = ("RssAnon:", "RssFile:", "RssShmem:")
out = open(sys.argv[3], "w", buffering=1)  # a line each: it is ended by a signal
while True:
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        break
    kib = [int(line.split()[1]) for line in lines if line.startswith(fields)]
    out.write(f"{time.monotonic()} {sum(kib)} {kib[0]}\\n")
    time.sleep(every)
"""


@dataclass(frozen=True)
class Call:
    name: str
    function: str  # the product function called: its frame is where steps are counted from
    started: float
    ended: float


class Steps(MainThreadWatch):
    """The main thread's product frames (their functions, outermost first), noted every
    LABEL_EVERY_S: (time, frames)."""

    def __init__(self) -> None:
        super().__init__(LABEL_EVERY_S)
        self.seen: list[tuple[float, tuple[str, ...]]] = []

    def _look(self) -> None:
        frame = self._main_frame()
        stack = []
        while frame is not None:
            if frame.f_code.co_filename.startswith(PRODUCT):
                stack.append(frame.f_code.co_name)
            frame = frame.f_back
        del frame  # a frame held keeps its function's arrays alive
        self.seen.append((time.monotonic(), tuple(stack[::-1])))


class Sampled:
    """This process's resident memory sampled by another every `every_ms`."""

    def __init__(self, every_ms: float) -> None:
        self.every_ms = every_ms

    def __enter__(self) -> Sampled:
        # This interpreter running the fixed SAMPLER text: no outside input in the command.
        # To a file, not a pipe: a pipe nobody reads until the end would fill and stop it.
        self._out = tempfile.NamedTemporaryFile("r", prefix="eir-rss-", suffix=".txt")
        self._process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", SAMPLER, str(os.getpid()), str(self.every_ms / 1000),
             self._out.name])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._process.terminate()
        self._process.wait()
        with self._out:
            rows = [line.split() for line in self._out.read().splitlines()]
        rows = [row for row in rows if len(row) == 3]  # the last may be cut short
        table = np.array([[float(t), int(total), int(anon)] for t, total, anon in rows])
        self.time, self.total_mb = table[:, 0], table[:, 1] / KIB_PER_MIB
        self.anon_mb = table[:, 2] / KIB_PER_MIB


def overshoots(sampled: Sampled, steps: Steps, calls: list[Call], state_mb: float,
               depth: int) -> dict[str, object]:
    """Each call's and each step's overshoot (see the module's text), in MB and as a share
    of `state_mb`; a step is the call's function's frames `depth` deep."""
    figures: dict[str, object] = {}
    over: list[dict[str, object]] = []
    step_at = np.array([t for t, _ in steps.seen])
    for call in calls:
        names = [_step(stack, call.function, depth) for _, stack in steps.seen]
        inside = (sampled.time >= call.started) & (sampled.time <= call.ended)
        before = sampled.total_mb[sampled.time < call.started][-1]
        after = sampled.total_mb[sampled.time > call.ended][0]
        most = int(np.argmax(np.where(inside, sampled.total_mb, -1)))
        shoot = sampled.total_mb[most] - max(before, after)
        at = max(0, int(np.searchsorted(step_at, sampled.time[most])) - 1)
        anon_before = sampled.anon_mb[sampled.time < call.started][-1]
        anon_after = sampled.anon_mb[sampled.time > call.ended][0]
        anon_most = int(np.argmax(np.where(inside, sampled.anon_mb, -1)))
        anon_shoot = sampled.anon_mb[anon_most] - max(anon_before, anon_after)
        anon_at = max(0, int(np.searchsorted(step_at, sampled.time[anon_most])) - 1)
        figures.update({f"{call.name}_anon_overshoot_mb": round(anon_shoot),
                        f"{call.name}_anon_overshoot_share": round(anon_shoot / state_mb, 3),
                        f"{call.name}_anon_before_mb": round(anon_before),
                        f"{call.name}_anon_most_mb": round(sampled.anon_mb[anon_most]),
                        f"{call.name}_anon_after_mb": round(anon_after),
                        f"{call.name}_anon_overshoot_at": " > ".join(steps.seen[anon_at][1])})
        figures.update({f"{call.name}_s": round(call.ended - call.started, 1),
                        f"{call.name}_before_mb": round(before),
                        f"{call.name}_most_mb": round(sampled.total_mb[most]),
                        f"{call.name}_after_mb": round(after),
                        f"{call.name}_overshoot_mb": round(shoot),
                        f"{call.name}_overshoot_share": round(shoot / state_mb, 3),
                        f"{call.name}_overshoot_at": " > ".join(steps.seen[at][1])})
        over.extend(_step_overshoots(sampled, step_at, names, call, state_mb))
    figures["steps"] = over
    return figures


def _step(stack: tuple[str, ...], function: str, depth: int) -> str:
    """The frames `depth` deep below `function`'s, or '' outside it."""
    if function not in stack:
        return ""
    entry = stack.index(function)
    return " > ".join(stack[entry + 1:entry + 1 + depth]) or function


def _step_overshoots(sampled: Sampled, step_at: np.ndarray, names: list[str], call: Call,
                     state_mb: float) -> list[dict[str, object]]:
    """A call's steps, each a run of notes naming the same frames: the samples between its
    first note's and the next step's, the most less the larger of its ends."""
    runs: list[tuple[str, float, float]] = []
    for at, name in zip(step_at, names):
        if not name or not call.started <= at <= call.ended:
            continue
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1], at)
        else:
            if runs:
                runs[-1] = (runs[-1][0], runs[-1][1], at)
            runs.append((name, at - LABEL_EVERY_S, at))
    out = []
    for name, start, end in runs:
        inside = (sampled.time >= start) & (sampled.time <= end)
        if inside.sum() < 2:
            continue
        total, anon = sampled.total_mb[inside], sampled.anon_mb[inside]
        shoot = total.max() - max(total[0], total[-1])
        anon_shoot = anon.max() - max(anon[0], anon[-1])
        out.append({"call": call.name, "step": name, "s": round(end - start, 2),
                    "before_mb": round(total[0]), "most_mb": round(total.max()),
                    "after_mb": round(total[-1]), "share": round(shoot / state_mb, 3),
                    "anon_share": round(anon_shoot / state_mb, 3)})
    return out


def state_mb(directory: Path) -> float:
    """The size of the files of the generation CURRENT points at, MB: the state."""
    generation = directory / json.loads((directory / "CURRENT").read_text())["dir"]
    return sum(f.stat().st_size for f in generation.rglob("*") if f.is_file()) / 2 ** 20


def measured(args: argparse.Namespace, work) -> dict[str, object]:
    calls: list[Call] = []

    def call(name: str, step, *a, **k):
        started = time.monotonic()
        result = step(*a, **k)
        # Freed pieces below malloc's mmap threshold stay in the heap until given back:
        # "after" is what the call keeps, not what it left free (a worker gives back after
        # its load too).
        give_back()
        calls.append(Call(name, step.__name__, started, time.monotonic()))
        time.sleep(SETTLE_S)  # the result held while the sampler reads what it keeps
        return result

    with Sampled(args.every_ms) as sampled, Steps() as steps:
        work(call)
    return overshoots(sampled, steps, calls, state_mb(args.dir / "state"), args.depth)


def stage_load(args: argparse.Namespace) -> dict[str, object]:
    def work(call) -> None:
        call("load", load_snapshot, args.dir / "state", load_policy())

    return measured(args, work)


def stage_import(args: argparse.Namespace) -> dict[str, object]:
    config = load_config(environ={})

    def work(call) -> None:
        state = load_snapshot(args.dir / "state", load_policy())
        with SnapshotDraft(args.dir / "state", state.generation + 1) as draft:
            new, report = call("import", import_file, state, Kind.WHITE,
                               args.dir / "white.csv", config, draft.column)
            if new is None:
                raise SystemExit(f"the bench's delivery was refused: {report.refused}")

    return measured(args, work)


def stage_fold(args: argparse.Namespace, name: str = "fold", days: int = DAYS_A_YEAR
               ) -> dict[str, object]:
    from importing import NATIONAL_ROWS, a_year

    def work(call) -> None:
        state = load_snapshot(args.dir / "state", load_policy())
        changes = a_year(state, np.load(args.dir / "spare-tacs.npy"),
                         len(state.lists.white_index) / NATIONAL_ROWS * days / DAYS_A_YEAR)
        state = replace(state, overlay=changes)
        with SnapshotDraft(args.dir / "state", state.generation + 1) as draft:
            call(name, fold, state, state.generation + 1, columns=draft.column,
                 spill=draft.spill)

    return measured(args, work)


def stage_fold_day(args: argparse.Namespace) -> dict[str, object]:
    return stage_fold(args, "fold_day", 1)


STAGES = {"load": stage_load, "import": stage_import, "fold": stage_fold,
          "fold_day": stage_fold_day}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--stage", choices=sorted(STAGES))
    parser.add_argument("--every-ms", type=float, default=2.0)
    parser.add_argument("--depth", type=int, default=2,
                        help="a step: the measured call's frames this deep below it")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args)))
        return
    state = state_mb(args.dir / "state")
    figures: dict[str, object] = {"state_mb": round(state)}
    steps: list[dict[str, object]] = []
    for stage in STAGES:
        say(f"{stage} ...")
        result = run_stage(__file__, stage, "--dir", str(args.dir),
                           "--every-ms", str(args.every_ms),
                           "--depth", str(args.depth))
        steps += result.pop("steps")
        say(f"  {result}")
        figures.update(result)
    say(f"{'call':<7} {'step':<48} {'seconds':>8} {'before':>7} {'most':>7} {'after':>7} "
        f"{'over':>6} {'anon':>6}")
    for step in steps:
        say(f"{step['call']:<7} {step['step']:<48} {step['s']:>8.1f} {step['before_mb']:>7} "
            f"{step['most_mb']:>7} {step['after_mb']:>7} {step['share']:>6.1%} "
            f"{step['anon_share']:>6.1%}")
    emit({**figures, "steps_over_5pct": [s for s in steps if s["share"] > SHARE_GOAL],
          "max_step_share": max((s["share"] for s in steps), default=0.0),
          "max_step_anon_share": max((s["anon_share"] for s in steps), default=0.0)})

if __name__ == "__main__":
    main()
