"""A notice's lifecycle, pure: warning, reminders, cutoff; quiet hours, one SMS a day,
overtaken reminders, lapse, the release of a cut subject gone."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from enforcer.clock import MS_PER_DAY, MS_PER_S
from enforcer.engine.lifecycle import (Advance, Notice, NoticeState, Pace, QuietHours, Step,
                                       advance, due_at, release_at)
from enforcer.engine.decide import decide
from enforcer.engine.events import AttachBatch, AttachEvent
from enforcer.engine.imei import parse_imei
from enforcer.engine.opening import cut_sightings
from enforcer.engine.subscriber import parse_imsi
from rules.policy import Scope
from tests.test_decide import (BUYER, CUT_FOR_BUYER, CUT_IMEI, OWNER, STRANGER, T0, UNREGISTERED,
                               home_imsi, state)

__all__ = ["state"]  # the fixture, shared with test_decide

TEHRAN = ZoneInfo("Asia/Tehran")
QUIET = QuietHours.parse("22:00", "08:00", "Asia/Tehran")
CUT_IDLE_DAYS = 365
PACE = Pace(QUIET, MS_PER_DAY, 14 * MS_PER_DAY, CUT_IDLE_DAYS * MS_PER_DAY)
HOUR = 3_600_000


def at(day: int, hour: int, minute: int = 0) -> int:
    """Milliseconds at this local Tehran time, `day` days after 2026-11-01."""
    moment = datetime(2026, 11, 1, hour, minute, tzinfo=TEHRAN) + timedelta(days=day)
    return int(moment.timestamp() * MS_PER_S)


def notice(opened_ms: int, *, sms: bool = True, grace_days: int = 30,
           reminder_days: tuple[int, ...] = (7, 1)) -> Notice:
    return Notice(1, "ownership_transfer", Scope.PAIR, 35209900176148, 432111234567890,
                  989121234567, "other_cartable", NoticeState.OPEN, opened_ms,
                  opened_ms + grace_days * MS_PER_DAY, opened_ms, reminder_days, 0, sms, None)


def run(n: Notice, until_ms: int, seen_every_day: bool = True) -> list[tuple[Step, int]]:
    """Sweep it at each due time until until_ms; (step, time) of what was sent."""
    sent = []
    due = due_at(n)
    while due is not None and due <= until_ms:
        if seen_every_day:
            n = replace(n, last_seen_ms=due)
        result: Advance = advance(n, due, PACE)
        if result.sent:
            sent.append((result.sent, due))
        n, due = result.notice, result.next_due_ms
    return sent


def test_warning_at_once_then_two_reminders_then_the_cutoff() -> None:
    opened = at(0, 10)
    assert run(notice(opened), opened + 40 * MS_PER_DAY) == [
        (Step.WARNING, opened), (Step.REMINDER, opened + 23 * MS_PER_DAY),
        (Step.REMINDER, opened + 29 * MS_PER_DAY), (Step.CUTOFF, opened + 30 * MS_PER_DAY)]


def test_sms_steps_wait_out_the_quiet_hours() -> None:
    opened = at(0, 23, 30)
    sent = run(notice(opened), opened + 40 * MS_PER_DAY)
    # The deadline is day 30 at 23:30: each step falls in the night and waits for 08:00.
    assert [when for _, when in sent] == [at(1, 8), at(24, 8), at(30, 8), at(31, 8)]


def test_a_notice_without_sms_is_cut_at_night_all_the_same() -> None:
    opened = at(0, 23, 30)
    reminded = replace(notice(opened, sms=False), state=NoticeState.REMINDED, reminders_done=2,
                       last_seen_ms=opened + 29 * MS_PER_DAY)
    result = advance(reminded, opened + 30 * MS_PER_DAY, PACE)
    assert result.sent is Step.CUTOFF and result.notice.state is NoticeState.CUT


def test_reminders_overtaken_while_nobody_swept_are_skipped() -> None:
    opened = at(0, 10)
    warned = advance(notice(opened), opened, PACE).notice
    late = opened + 29 * MS_PER_DAY + HOUR  # down from the warning until after both reminders
    result = advance(warned, late, PACE)
    assert (result.sent, result.skipped, result.next_due_ms) == (
        Step.REMINDER, 1, opened + 30 * MS_PER_DAY)


def test_at_most_one_sms_a_day() -> None:
    opened = at(0, 10)
    short = notice(opened, grace_days=2, reminder_days=(2, 1))
    assert run(short, opened + 3 * MS_PER_DAY) == [
        (Step.WARNING, opened), (Step.REMINDER, opened + MS_PER_DAY),
        (Step.CUTOFF, opened + 2 * MS_PER_DAY)]  # the 2-days-before reminder fell away


def test_a_subject_not_seen_for_the_lapse_period_lapses_at_the_deadline() -> None:
    opened = at(0, 10)
    n = notice(opened)
    for _ in range(3):
        n = advance(n, due_at(n), PACE).notice
    result = advance(n, opened + 30 * MS_PER_DAY, PACE)
    assert (result.sent, result.notice.state) == (None, NoticeState.LAPSED)


def test_closed_notices_have_nothing_due() -> None:
    for closed in (NoticeState.CANCELLED, NoticeState.SUPERSEDED, NoticeState.LAPSED):
        n = replace(notice(at(0, 10)), state=closed)
        assert due_at(n) is None and advance(n, at(40, 10), PACE) == Advance(n, None, None)


def cut(opened: int) -> Notice:
    """The notice as its cutoff left it: seen the day before its deadline."""
    reminded = replace(notice(opened), state=NoticeState.REMINDED, reminders_done=2,
                       last_seen_ms=opened + 29 * MS_PER_DAY)
    result = advance(reminded, opened + 30 * MS_PER_DAY, PACE)
    assert result.sent is Step.CUTOFF
    assert result.next_due_ms == opened + (30 + CUT_IDLE_DAYS) * MS_PER_DAY
    return result.notice


def test_a_cut_subject_not_seen_since_is_released_without_sms() -> None:
    opened = at(0, 10)
    n = cut(opened)
    released = opened + (30 + CUT_IDLE_DAYS) * MS_PER_DAY
    assert advance(n, released - 1, PACE) == Advance(n, None, released)
    result = advance(n, released, PACE)
    assert (result.sent, result.notice.state, result.next_due_ms) == (
        Step.RELEASED, NoticeState.LAPSED, None)


@given(st.integers(min_value=0, max_value=2 * CUT_IDLE_DAYS * MS_PER_DAY))
def test_a_cut_subject_refused_again_waits_from_its_last_attach(since_cut_ms: int) -> None:
    """However long after its cut it was seen (refused), it is released cut_idle_days after
    that, not before."""
    opened = at(0, 10)
    n = cut(opened)
    seen = replace(n, last_seen_ms=n.deadline_ms + since_cut_ms)
    release = seen.last_seen_ms + CUT_IDLE_DAYS * MS_PER_DAY
    assert release_at(seen, PACE) == release
    # The sweep takes it when first scheduled, and again when told.
    first = advance(seen, opened + (30 + CUT_IDLE_DAYS) * MS_PER_DAY, PACE)
    if since_cut_ms:
        assert first == Advance(seen, None, release)
    assert advance(seen, release, PACE).sent is Step.RELEASED


@given(st.integers(min_value=at(0, 0), max_value=at(400, 0)),
       st.sampled_from(["22:00", "00:00", "13:30"]), st.sampled_from(["08:00", "06:15"]))
def test_quiet_hours_end_at_the_first_allowed_minute(now_ms: int, start: str, end: str) -> None:
    quiet = QuietHours.parse(start, end, "Asia/Tehran")
    allowed = quiet.next_allowed(now_ms)
    assert allowed >= now_ms and quiet.next_allowed(allowed) == allowed
    if allowed > now_ms:
        assert quiet.next_allowed(allowed - 60_000) > allowed - 60_000
        assert allowed - now_ms <= MS_PER_DAY


def test_a_late_sweep_does_not_lapse_what_was_in_use_at_the_deadline() -> None:
    opened = at(0, 10)
    n = replace(notice(opened), state=NoticeState.REMINDED, reminders_done=2,
                last_seen_ms=opened + 29 * MS_PER_DAY)
    result = advance(n, opened + 50 * MS_PER_DAY, PACE)  # the worker was down for 20 days
    assert (result.sent, result.notice.state) == (Step.CUTOFF, NoticeState.CUT)


def test_the_cutoff_sms_comes_a_day_after_a_late_reminder() -> None:
    opened = at(0, 10)
    late = opened + 30 * MS_PER_DAY - HOUR  # a catch-up reminder an hour before the deadline
    n = replace(notice(opened), state=NoticeState.REMINDED, reminders_done=2,
                last_seen_ms=late, last_sms_ms=late)
    held = advance(n, opened + 30 * MS_PER_DAY, PACE)
    assert (held.sent, held.next_due_ms) == (None, late + MS_PER_DAY)
    assert advance(n, late + MS_PER_DAY, PACE).sent is Step.CUTOFF


def test_a_batch_sees_each_refused_cut_pair_once_at_its_last_attach(state, rules) -> None:
    """The cut pair's three attempts are one sighting at the last; a cut IMEI's is its own;
    the owner's attach on the pair's phone and an unregistered phone are no cut sighting."""
    buyer, stranger = parse_imsi(home_imsi(BUYER)), parse_imsi(home_imsi(STRANGER))
    events = [AttachEvent(parse_imei(str(imei), rules), imsi, msisdn, ts, False)
              for imei, imsi, msisdn, ts in [
                  (CUT_FOR_BUYER, buyer, BUYER, T0 + 2), (CUT_IMEI, stranger, STRANGER, T0),
                  (CUT_FOR_BUYER, buyer, BUYER, T0 + 5), (UNREGISTERED, buyer, BUYER, T0),
                  (CUT_FOR_BUYER, parse_imsi(home_imsi(OWNER)), OWNER, T0 + 9),
                  (CUT_FOR_BUYER, buyer, BUYER, T0 + 1)]]
    batch = AttachBatch.from_events(events)
    seen = cut_sightings(batch, decide(batch, state))
    assert list(zip(seen.imei_key.tolist(), seen.imsi.tolist(), seen.last_ms.tolist())) == [
        (CUT_FOR_BUYER, buyer.value, T0 + 5), (CUT_IMEI, stranger.value, T0)]
    only_fresh = cut_sightings(batch, decide(batch, state), fresh_pairs=set())
    assert len(only_fresh) == 0  # the history wrote none of them: seen within its resolution
