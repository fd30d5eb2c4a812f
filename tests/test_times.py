"""Times as text: every RFC 3339 date-time read as its instant (random instants written in
every variant the grammar allows and read back), the forms beyond it that are documented,
and every other text refused with a TimeError that says why."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enforcer.clock import TimeError, parse_time_ms

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MINUTES_OF_AN_OFFSET = 23 * 60 + 59  # RFC 3339 time-numoffset: ±hh:mm, hh within 00-23

offsets = st.integers(-MINUTES_OF_AN_OFFSET, MINUTES_OF_AN_OFFSET).map(
    lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                        timezones=offsets)


def offset_text(moment: datetime, zulu: str, utc_as: str) -> str:
    minutes = int(moment.utcoffset() / timedelta(minutes=1))
    if minutes == 0 and utc_as != "numeric":
        return {"zulu": zulu, "unknown": "-00:00", "none": ""}[utc_as]
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@given(instants, st.sampled_from("Tt "), st.sampled_from("Zz"),
       st.sampled_from(["numeric", "zulu", "unknown", "none"]),
       st.one_of(st.none(), st.text(alphabet="0123456789", min_size=1, max_size=30)))
def test_every_rfc3339_variant_reads_as_its_instant(moment: datetime, separator: str,
                                                    zulu: str, utc_as: str,
                                                    extra: str | None) -> None:
    if utc_as != "numeric":
        moment = moment.replace(tzinfo=timezone.utc)
    fraction = None if extra is None else (f"{moment.microsecond:06d}" + extra)[:len(extra)]
    # %Y does not pad years before 1000 to four digits; RFC 3339 does.
    text = (f"{moment.year:04d}-{moment:%m-%d}{separator}{moment:%H:%M:%S}"
            + ("" if fraction is None else "." + fraction)
            + offset_text(moment, zulu, utc_as))
    whole_seconds = (moment.replace(microsecond=0) - EPOCH) // timedelta(seconds=1)
    exact = Decimal(whole_seconds) + (Decimal("0." + fraction) if fraction else Decimal(0))
    assert parse_time_ms(text) == int((exact * 1000).to_integral_value(rounding="ROUND_FLOOR"))


@pytest.mark.parametrize(("text", "ms"), [
    ("2026-11-29T13:02:58z", 1_795_957_378_000),  # issue 18: a lower-case z
    ("2026-11-29t13:02:58Z", 1_795_957_378_000),
    ("2026-11-29T16:32:58.9999999+03:30", 1_795_957_378_999),  # truncated, never rounded up
    ("2026-11-29T13:02:58", 1_795_957_378_000),  # no offset: UTC
    ("1795957378000", 1_795_957_378_000),  # epoch milliseconds
    ("1969-12-31T23:59:59.5Z", -500),
    ("0001-01-01T00:00:00Z", -62_135_596_800_000),  # the first day datetime holds
    ("0001-01-01T00:30:00+01:00", -62_135_598_600_000),  # an instant in year 0000
    ("9999-12-31T23:59:59.999-23:59", 253_402_387_139_999),  # one in year 10000
    ("2016-12-31T23:59:60Z", 1_483_228_799_999),  # a leap second: the last ms of its day
    ("2017-01-01T03:29:60.5+03:30", 1_483_228_799_999),  # the same, in Tehran
    ("1990-12-31T15:59:60-08:00", 662_687_999_999),  # RFC 3339 §5.8's example
])
def test_documented_forms_and_edges(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize(("text", "why"), [
    ("2026-11-29", "neither an RFC 3339 date-time"),
    ("20261129T130258Z", "neither an RFC 3339 date-time"),  # ISO 8601 basic form
    ("2026-W48-7T13:02:58Z", "neither an RFC 3339 date-time"),  # ISO 8601 week date
    ("2026-11-29T13:02:58+03", "neither an RFC 3339 date-time"),  # offset without minutes
    ("2026-11-29T13:02:58+0330", "neither an RFC 3339 date-time"),
    ("2026-11-29T13:02Z", "neither an RFC 3339 date-time"),  # no seconds
    ("2026-11-29T13:02:58.Z", "neither an RFC 3339 date-time"),  # a point without digits
    ("2026-11-29T13:02:58,5Z", "neither an RFC 3339 date-time"),
    ("2026-11-29T13:02:58Z ", "neither an RFC 3339 date-time"),
    ("2026-11-29T13:02:58Z\n", "neither an RFC 3339 date-time"),
    ("۲۰۲۶-11-29T13:02:58Z", "neither an RFC 3339 date-time"),  # Persian digits
    ("-1", "neither an RFC 3339 date-time"), ("", "neither an RFC 3339 date-time"),
    ("yesterday", "neither an RFC 3339 date-time"),
    # What datetime says: the field, as Python's version words it.
    ("2026-02-29T00:00:00Z", "2026-02-29.*day"), ("2026-13-01T00:00:00Z", "13-01.*month"),
    ("2026-11-29T24:00:00Z", "T24.*hour"), ("2026-11-29T13:60:00Z", ":60:.*minute"),
    ("2026-11-29T13:02:61Z", ":61Z.*second"),
    ("0000-03-01T00:00:00Z", "0000-03-01.*year 0"),  # in the grammar, not in the calendar
    ("2026-11-29T13:02:58+24:00", "offset hour 24"),
    ("2026-11-29T13:02:58-03:60", "offset minute 60"),
    ("2026-11-29T12:59:60Z", "leap second"),  # not at the end of a UTC day
    ("9" * 20, "at most 19"), ("9" * 5000, "at most 19"),
])
def test_anything_else_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(TimeError, match=why):
        parse_time_ms(text)


NEAR_RFC3339 = (r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?"
                r"([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z")


@given(st.text(max_size=40) | st.from_regex(NEAR_RFC3339))
def test_no_text_raises_anything_but_a_time_error(text: str) -> None:
    try:
        parse_time_ms(text)
    except TimeError:
        pass
