"""A notice's lifecycle, pure: where it stands and the time in, what happens next out.

A notice opens at the first sighting of a pair (or IMEI) that a rule gives a deadline: a
warning at once, reminders at the rule's offsets before the deadline, the cutoff at it.
SMS steps (a cutoff with SMS too) wait out the quiet hours, and a notice gets at most one
SMS a day; a reminder overtaken by a later step is skipped; a notice whose subject had not
been seen for `lapse_days` when its deadline came lapses instead of being cut (nothing is
using it), and a cut one whose subject has not been seen for `cut_idle_days` since its cut
is released (it lapses, and the cutoff is lifted): the cut notices follow the devices in
use, not every device ever cut.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from enforcer.clock import MS_PER_DAY, MS_PER_S
from rules.policy import Scope


class NoticeState(StrEnum):
    OPEN = "open"  # opened; the warning not sent yet
    WARNED = "warned"
    REMINDED = "reminded"
    CUT = "cut"  # until the registry resolves it or its subject is gone (released)
    CANCELLED = "cancelled"  # resolved by the registry; `reason` says how
    # Another kind's rule decides the subject now: its notice (`superseded_by`) took over.
    SUPERSEDED = "superseded"
    LAPSED = "lapsed"  # its subject not seen: never cut, or released


# A subject has at most one notice of a kind in these states (a partial unique index).
LIVE = (NoticeState.OPEN, NoticeState.WARNED, NoticeState.REMINDED, NoticeState.CUT)
SENDING = (NoticeState.OPEN, NoticeState.WARNED, NoticeState.REMINDED)


class Step(StrEnum):
    WARNING = "warning"
    REMINDER = "reminder"
    CUTOFF = "cutoff"
    RESOLVED = "resolved"  # the SMS that goes with a restore
    RELEASED = "released"  # the restore of a cut subject not seen since: no SMS


@dataclass(frozen=True)
class Notice:
    id: int
    kind: str
    scope: Scope
    imei_key: int
    imsi: int  # the SIM of the first sighting (for an IMEI-scoped notice, one of them)
    msisdn: int
    rule: str
    state: NoticeState
    opened_ms: int
    deadline_ms: int
    last_seen_ms: int
    reminder_days: tuple[int, ...]
    reminders_done: int  # reminders sent or skipped
    sms: bool
    last_sms_ms: int | None

    def reminder_times(self) -> list[int]:
        return sorted(self.deadline_ms - d * MS_PER_DAY for d in self.reminder_days)


@dataclass(frozen=True)
class QuietHours:
    """Local times between which no SMS goes out; start after end means over midnight."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, start: str, end: str, zone: str) -> QuietHours:
        return cls(time.fromisoformat(start), time.fromisoformat(end), ZoneInfo(zone))

    def next_allowed(self, now_ms: int) -> int:
        """now_ms outside the quiet hours, else when they end."""
        local = datetime.fromtimestamp(now_ms / MS_PER_S, self.zone)
        t = local.time()
        if self.start == self.end:
            return now_ms
        overnight = self.start > self.end
        quiet = (t >= self.start or t < self.end) if overnight else self.start <= t < self.end
        if not quiet:
            return now_ms
        end_day = local.date() + timedelta(days=1) if overnight and t >= self.start \
            else local.date()
        end = datetime.combine(end_day, self.end, self.zone)
        return int(end.timestamp() * MS_PER_S)


@dataclass(frozen=True)
class Pace:
    quiet: QuietHours
    sms_gap_ms: int  # at least this long between two SMS of one notice
    lapse_ms: int  # not seen for this long at the deadline: lapsed, not cut
    cut_idle_ms: int  # cut and not seen for this long: released


@dataclass(frozen=True)
class Advance:
    """What the sweep does with one due notice."""

    notice: Notice  # as it stands afterwards
    sent: Step | None  # the step whose messages go out now
    next_due_ms: int | None  # None: nothing more is scheduled
    skipped: int = 0  # reminders overtaken by a later step


def _first_reminder_after(n: Notice, after_ms: int) -> int:
    """How many of the notice's reminders fall at or before after_ms."""
    times = n.reminder_times()
    done = n.reminders_done
    while done < len(times) and times[done] <= after_ms:
        done += 1
    return done


def due_at(n: Notice) -> int | None:
    """When a notice's next step falls due, judged from its state alone."""
    if n.state is NoticeState.OPEN:
        return n.opened_ms
    if n.state in SENDING:
        times = n.reminder_times()
        return times[n.reminders_done] if n.reminders_done < len(times) else n.deadline_ms
    return None


def release_at(n: Notice, pace: Pace) -> int:
    """When a cut notice is released if its subject is not seen again: `cut_idle_ms` after
    the later of its deadline (about when it was cut) and its last sighting."""
    return max(n.deadline_ms, n.last_seen_ms) + pace.cut_idle_ms


def advance(n: Notice, now_ms: int, pace: Pace) -> Advance:
    """The next step of a due notice, or how long it must wait."""
    if n.state is NoticeState.CUT:
        # A refused attach since the cut moved last_seen on: the notice waits again.
        if now_ms < release_at(n, pace):
            return Advance(n, None, release_at(n, pace))
        return Advance(replace(n, state=NoticeState.LAPSED), Step.RELEASED, None)
    if n.state not in SENDING:
        return Advance(n, None, None)
    skipped = 0
    if n.state is NoticeState.OPEN:
        step = Step.WARNING
    elif now_ms >= n.deadline_ms:
        step = Step.CUTOFF
    else:
        step = Step.REMINDER
        # Of reminders that all fell due while nobody swept, only the latest is sent.
        latest = _first_reminder_after(n, now_ms) - 1
        if latest < n.reminders_done:  # not due yet after all
            return Advance(n, None, due_at(n))
        skipped = latest - n.reminders_done
        n = replace(n, reminders_done=latest)
    # Judged at the deadline, not now: a sweep that comes late must not lapse what was in use.
    if step is Step.CUTOFF and n.deadline_ms - n.last_seen_ms > pace.lapse_ms:
        return Advance(replace(n, state=NoticeState.LAPSED), None, None, skipped)
    if n.sms:
        wait = pace.quiet.next_allowed(now_ms)
        if n.last_sms_ms is not None:
            wait = max(wait, pace.quiet.next_allowed(n.last_sms_ms + pace.sms_gap_ms))
        if wait > now_ms:
            return Advance(n, None, wait, skipped)
    last_sms = now_ms if n.sms else n.last_sms_ms
    if step is Step.WARNING:
        # Reminders that would come within a day of the warning add nothing to it.
        done = _first_reminder_after(n, now_ms + pace.sms_gap_ms - 1)
        sent = replace(n, state=NoticeState.WARNED, reminders_done=done, last_sms_ms=last_sms)
        return Advance(sent, step, due_at(sent), done - n.reminders_done)
    if step is Step.REMINDER:
        sent = replace(n, state=NoticeState.REMINDED, reminders_done=n.reminders_done + 1,
                       last_sms_ms=last_sms)
        return Advance(sent, step, due_at(sent), skipped)
    cut = replace(n, state=NoticeState.CUT, last_sms_ms=last_sms)
    return Advance(cut, step, release_at(cut, pace), skipped)
