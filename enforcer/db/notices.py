"""Notices, their transitions and the outbox in PostgreSQL. Each function works in the
caller's transaction, so that a state change and the messages it sends commit together."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from enforcer.clock import MS_PER_S, utc_datetime
from enforcer.engine.noticemessages import OutboxMessage
from enforcer.engine.lifecycle import LIVE, SENDING, Notice, NoticeState
from enforcer.engine.opening import IMEI_SUBJECT, CutSightings, NoticeSightings, Subject
from rules.policy import Rule, Scope

# The advisory lock of the outbox relay (one worker publishes at a time).
RELAY_LOCK = 7_253_004
# notices.LIVE and SENDING as SQL (the SEE statement and the partial index spell LIVE out:
# they must match the index's predicate word for word).
LIVE_STATES = "(" + ", ".join(f"'{state.value}'" for state in LIVE) + ")"
SENDING_STATES = "(" + ", ".join(f"'{state.value}'" for state in SENDING) + ")"

SEE = """
INSERT INTO notices (kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, state, opened_at,
                     last_seen, deadline, reminder_days, sms, next_due)
SELECT kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, 'open', to_timestamp(f / 1e3),
       to_timestamp(l / 1e3), to_timestamp(d / 1e3),
       coalesce(string_to_array(nullif(days, ''), ',')::integer[], '{}'), sms,
       to_timestamp(f / 1e3)
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
            %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::boolean[])
     AS u(kind, scope, imei_key, subject_imsi, imsi, msisdn, rule, f, l, d, days, sms)
ON CONFLICT (kind, imei_key, subject_imsi) WHERE state IN ('open', 'warned', 'reminded', 'cut')
DO UPDATE SET last_seen = greatest(notices.last_seen, excluded.last_seen)
RETURNING id, opened_at, kind, imei_key, subject_imsi, xmax = 0
"""


def _epoch_ms(column: str) -> str:
    """A timestamp read as epoch milliseconds: no datetime objects on the sweep's path."""
    return f"floor(extract(epoch FROM {column}) * 1000)::bigint"


COLUMNS = ("id, kind, scope, imei_key, imsi, msisdn, rule, state, "
           + ", ".join(_epoch_ms(c) for c in ("opened_at", "deadline", "last_seen"))
           + ", reminder_days, reminders_done, sms, " + _epoch_ms("last_sms_at"))

# One row per changed notice, copied in binary: the update and the transitions read it.
STEPS_TABLE = """
CREATE TEMP TABLE notice_steps (id bigint, state text, done integer, sms_ms bigint,
                                due_ms bigint, reason text, from_state text, step text,
                                moved boolean, successor bigint) ON COMMIT DROP
"""
STEPS_TYPES = ["bigint", "text", "integer", "bigint", "bigint", "text", "text", "text", "bool",
               "bigint"]
OUTBOX_TYPES = ["text", "bytea", "text", "bytea", "timestamptz"]


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * MS_PER_S)


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else utc_datetime(ms)


def _notice(row: tuple) -> Notice:
    (id_, kind, scope, imei_key, imsi, msisdn, rule, state, opened, deadline, last_seen,
     days, done, sms, last_sms) = row
    return Notice(id_, kind, Scope(scope), imei_key, imsi, msisdn, rule, NoticeState(state),
                  opened, deadline, last_seen, tuple(days), done, sms, last_sms)


SEE_CUT = """
WITH seen AS (
    SELECT m.id, max(u.l) AS l
    FROM notices m
    JOIN unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS u(k, i, l)
      ON m.imei_key = u.k AND m.subject_imsi IN (u.i, %s)
    WHERE m.state = 'cut'
    GROUP BY m.id),
locked AS (
    SELECT n.id, seen.l
    FROM notices n JOIN seen ON seen.id = n.id
    WHERE n.state = 'cut' AND n.last_seen < to_timestamp(seen.l / 1e3)
    ORDER BY n.id
    FOR UPDATE OF n SKIP LOCKED)
UPDATE notices n SET last_seen = to_timestamp(locked.l / 1e3)
FROM locked WHERE n.id = locked.id
"""


def see(conn: psycopg.Connection, sightings: NoticeSightings,
        rules: tuple[Rule, ...]) -> Counter[str]:
    """Open a notice for each subject that has no live one; the others are seen again.
    Returns how many opened, by kind."""
    return Counter(kind for _, _, kind, _, _, new in _see(conn, sightings, rules) if new)


def see_subjects(conn: psycopg.Connection, sightings: NoticeSightings,
                 rules: tuple[Rule, ...]) -> dict[Subject, tuple[int, bool]]:
    """`see`, answering subject -> (the id of its live notice, opened now?). A subject that
    has a live notice of the kind already keeps it, and its deadline: a notice taking over
    from a superseded one finds the misuse notice its flag opened."""
    return {(kind, key, subject): (i, new)
            for i, _, kind, key, subject, new in _see(conn, sightings, rules)}


def _see(conn: psycopg.Connection, sightings: NoticeSightings,
         rules: tuple[Rule, ...]) -> list[tuple]:
    if not len(sightings):
        return []
    rows = sightings.rows(rules)
    columns = [list(c) for c in zip(*rows)]
    columns[10] = [",".join(map(str, days)) for days in columns[10]]
    seen = conn.execute(SEE, columns, binary=True).fetchall()
    opened = [(i, at) for i, at, _, _, _, new in seen if new]
    if opened:
        conn.execute("INSERT INTO notice_transitions (notice_id, at, to_state)"
                     " SELECT unnest(%s::bigint[]), unnest(%s::timestamptz[]), 'open'",
                     ([i for i, _ in opened], [a for _, a in opened]), binary=True)
    return seen


def see_cut(conn: psycopg.Connection, sightings: CutSightings) -> None:
    """The cut notices of pairs refused again (pair-scoped ones of the SIM, IMEI-scoped ones
    of the IMEI) seen at their last time, where that is later; nothing else of the notice
    changes, so no worker's cut-off list reads it again. A notice another transaction holds
    (a recheck, a sweep) is skipped, never waited for: the attach batch keeps its pace and
    takes no part in a lock cycle, and a refused phone tries again within the hour."""
    if not len(sightings):
        return
    conn.execute(SEE_CUT, (sightings.imei_key.tolist(), sightings.imsi.tolist(),
                           sightings.last_ms.tolist(), IMEI_SUBJECT), binary=True)


def take_due(conn: psycopg.Connection, now_ms: int, limit: int) -> list[Notice]:
    """Due notices, locked for this transaction; those another sweeper holds are skipped."""
    return [_notice(r) for r in conn.execute(
        f"SELECT {COLUMNS} FROM notices WHERE next_due <= %s ORDER BY next_due"  # noqa: S608
        " LIMIT %s FOR UPDATE SKIP LOCKED", (_at(now_ms), limit), binary=True).fetchall()]


@dataclass(frozen=True)
class Change:
    """A notice as it stands after a step, and what to record of it."""

    notice: Notice
    from_state: NoticeState
    next_due_ms: int | None
    step: str | None
    reason: str | None = None
    superseded_by: int | None = None  # the id of the notice that took over


def record(conn: psycopg.Connection, changes: list[Change], now_ms: int) -> None:
    """Each change on its notice, and a transition for each that moved or sent a step."""
    if not changes:
        return
    conn.execute(STEPS_TABLE)
    with conn.cursor().copy("COPY notice_steps FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(STEPS_TYPES)
        for c in changes:
            n = c.notice
            copy.write_row((n.id, n.state.value, n.reminders_done, n.last_sms_ms,
                            c.next_due_ms, c.reason, c.from_state.value, c.step,
                            bool(c.step or c.reason or n.state is not c.from_state),
                            c.superseded_by))
    conn.execute("ANALYZE notice_steps")  # so the join walks the primary key, not the table
    conn.execute(
        f"UPDATE notices SET state = u.state, reminders_done = u.done,"  # noqa: S608
        " last_sms_at = to_timestamp(u.sms_ms / 1e3), next_due = to_timestamp(u.due_ms / 1e3),"
        " closed_reason = coalesce(u.reason, notices.closed_reason),"
        " superseded_by = coalesce(u.successor, notices.superseded_by),"
        # Retention keeps a closed notice for a time counted from here.
        f" closed_at = CASE WHEN u.state IN {LIVE_STATES} THEN NULL"
        " ELSE coalesce(notices.closed_at, %(now)s) END,"
        # The workers follow the cut-off list by this: only entering or leaving `cut` counts.
        " updated_at = CASE WHEN (u.state = 'cut') <> (notices.state = 'cut')"
        " THEN clock_timestamp() ELSE notices.updated_at END"
        " FROM notice_steps u WHERE notices.id = u.id", {"now": _at(now_ms)})
    conn.execute(
        "INSERT INTO notice_transitions (notice_id, at, from_state, to_state, step, reason)"
        " SELECT id, %s, from_state, state, step, reason FROM notice_steps WHERE moved",
        (_at(now_ms),))


class DuplicateMessage(ValueError):
    """A second message under a stream and idempotency key the outbox holds already."""


def enqueue(conn: psycopg.Connection, messages: list[OutboxMessage], now_ms: int) -> None:
    """Into the outbox, created at `now_ms` (the worker's clock: retention judges the rows by
    it). A second message under one stream and key is a fault (each step of a
    notice happens once): DuplicateMessage, nothing written. The outbox is partitioned by
    time, so no unique index can say it (migration 0012); the check is sound because a
    notice's messages are written under its row lock."""
    if messages:
        keys = [(m.stream, m.idempotency_key) for m in messages]
        twice = {k for k in keys if keys.count(k) > 1} or set(conn.execute(
            "SELECT stream, idempotency_key FROM outbox WHERE (stream, idempotency_key) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([s for s, _ in keys], [k for _, k in keys])).fetchall())
        if twice:
            raise DuplicateMessage(f"outbox holds these already: {sorted(twice)[:5]}")
        created = _at(now_ms)
        with conn.cursor().copy("COPY outbox (stream, key, idempotency_key, body, created_at)"
                                " FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(OUTBOX_TYPES)
            for m in messages:
                copy.write_row((m.stream, m.key, m.idempotency_key, m.body, created))


def unsent(conn: psycopg.Connection, limit: int) -> list[tuple[int, OutboxMessage]]:
    """The oldest unsent messages, locked for this transaction (relays share the work)."""
    return [(id_, OutboxMessage(stream, bytes(key), ikey, bytes(body)))
            for id_, stream, key, ikey, body in conn.execute(
                "SELECT id, stream, key, idempotency_key, body FROM outbox"
                " WHERE sent_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (limit,),
                binary=True).fetchall()]


def mark_sent(conn: psycopg.Connection, ids: list[int], now_ms: int) -> None:
    # As one array literal: psycopg would otherwise adapt the ids one by one in Python.
    conn.execute("UPDATE outbox SET sent_at = %s WHERE id = ANY(%s::bigint[])",
                 (_at(now_ms), "{" + ",".join(map(str, ids)) + "}"))


def outbox_backlog(conn: psycopg.Connection, now_ms: int) -> tuple[int, float]:
    """How many messages are unsent, and the oldest one's age in seconds at `now_ms` (0 when
    none)."""
    backlog, oldest = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM %s - min(created_at)), 0) FROM outbox"
        " WHERE sent_at IS NULL", (_at(now_ms),)).fetchone()
    return backlog, float(oldest)


@dataclass(frozen=True)
class RelayRecord:
    in_flight: bool  # the last round may have published without recording it
    ends: dict[str, dict[int, int]]  # topic -> partition -> after the relay's last message


def relay_record(conn: psycopg.Connection) -> RelayRecord:
    in_flight, ends = conn.execute("SELECT in_flight, ends FROM outbox_relay").fetchone()
    return RelayRecord(in_flight, {t: {int(p): o for p, o in parts.items()}
                                   for t, parts in ends.items()})


def save_relay_record(conn: psycopg.Connection, record: RelayRecord) -> None:
    ends = {t: {str(p): o for p, o in parts.items()} for t, parts in record.ends.items()}
    conn.execute("UPDATE outbox_relay SET in_flight = %s, ends = %s",
                 (record.in_flight, Jsonb(ends)))


def set_in_flight(conn: psycopg.Connection, in_flight: bool) -> None:
    conn.execute("UPDATE outbox_relay SET in_flight = %s", (in_flight,))


def mark_sent_keys(conn: psycopg.Connection, stream: str, keys: set[str], now_ms: int) -> int:
    """Mark unsent messages of `stream` sent by idempotency key; returns how many."""
    if not keys:
        return 0
    return conn.execute("UPDATE outbox SET sent_at = %s WHERE sent_at IS NULL"
                        " AND stream = %s AND idempotency_key = ANY(%s)",
                        (_at(now_ms), stream, list(keys))).rowcount


def live_about(conn: psycopg.Connection, imei_keys: list[int],
               msisdns: list[int]) -> list[Notice]:
    """Live notices on these IMEIs or SIMs, locked: the registry may have resolved them.
    Rows another transaction holds are waited for, not skipped: none may be missed."""
    return [_notice(r) for r in conn.execute(
        f"SELECT {COLUMNS} FROM notices WHERE state IN {LIVE_STATES}"  # noqa: S608
        " AND (imei_key = ANY(%s) OR msisdn = ANY(%s)) ORDER BY id FOR UPDATE",
        (imei_keys, msisdns))]


def live_sims(conn: psycopg.Connection, imei_keys: list[int]
              ) -> list[tuple[int, int, int, int]]:
    """(imei_key, imsi, msisdn, last seen ms) of the SIMs holding a live notice on these
    IMEIs, whenever they were last seen; not a cut one (what is cut stays cut under it)."""
    return conn.execute(
        f"SELECT imei_key, imsi, msisdn, {_epoch_ms('last_seen')} FROM notices"  # noqa: S608
        f" WHERE imei_key = ANY(%s) AND state IN {SENDING_STATES}", (imei_keys,)).fetchall()


def cut_after(conn: psycopg.Connection, after_id: int, limit: int) -> list[Notice]:
    """Cut notices with ids after `after_id`, in id order: rechecked against the registry."""
    return [_notice(r) for r in conn.execute(
        f"SELECT {COLUMNS} FROM notices WHERE state = 'cut' AND id > %s"  # noqa: S608
        " ORDER BY id LIMIT %s FOR UPDATE", (after_id, limit))]


def cut_subjects(conn: psycopg.Connection, since: datetime | None
                 ) -> tuple[list[tuple[str, int, int, bool]], datetime]:
    """(scope, IMEI key, IMSI, cut now?) of notices changed since `since` (all cut ones when
    None), and the database's time to ask from next."""
    (now,) = conn.execute("SELECT clock_timestamp()").fetchone()
    if since is None:
        rows = conn.execute("SELECT scope, imei_key, subject_imsi, true FROM notices"
                            " WHERE state = 'cut'").fetchall()
    else:
        # Left `cut` counts as restored only if no other notice keeps the subject cut.
        rows = conn.execute(
            "SELECT scope, imei_key, subject_imsi, state = 'cut' OR EXISTS ("
            " SELECT 1 FROM notices m WHERE m.state = 'cut' AND m.imei_key = n.imei_key"
            " AND m.subject_imsi = n.subject_imsi AND m.scope = n.scope)"
            " FROM notices n WHERE updated_at >= %s", (since,)).fetchall()
    return rows, now


@dataclass(frozen=True)
class NoticeRow:
    notice: Notice
    next_due_ms: int | None
    closed_reason: str | None
    superseded_by: int | None


def find(conn: psycopg.Connection, *, notice_id: int | None = None, state: str | None = None,
         kind: str | None = None, scope: str | None = None, imei_key: int | None = None,
         msisdn: int | None = None, due_before_ms: int | None = None,
         limit: int = 100) -> list[NoticeRow]:
    rows = conn.execute(
        f"SELECT {COLUMNS}, next_due, closed_reason, superseded_by FROM notices"  # noqa: S608
        " WHERE (%(id)s::bigint IS NULL OR id = %(id)s)"
        " AND (%(state)s::text IS NULL OR state = %(state)s)"
        " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
        " AND (%(scope)s::text IS NULL OR scope = %(scope)s)"
        " AND (%(imei)s::bigint IS NULL OR imei_key = %(imei)s)"
        " AND (%(msisdn)s::bigint IS NULL OR msisdn = %(msisdn)s)"
        " AND (%(due)s::timestamptz IS NULL OR next_due <= %(due)s)"
        " ORDER BY id LIMIT %(limit)s",
        {"id": notice_id, "state": state, "kind": kind, "scope": scope, "imei": imei_key,
         "msisdn": msisdn, "due": _at(due_before_ms), "limit": limit}).fetchall()
    return [NoticeRow(_notice(r[:-3]), _ms(r[-3]), r[-2], r[-1]) for r in rows]


def transitions_of(conn: psycopg.Connection, notice_id: int) -> list[tuple]:
    """(at, from_state, to_state, step, reason), oldest first."""
    return conn.execute("SELECT at, from_state, to_state, step, reason FROM notice_transitions"
                        " WHERE notice_id = %s ORDER BY id", (notice_id,)).fetchall()


def messages_of(conn: psycopg.Connection, notice_id: int) -> list[tuple]:
    """(stream, idempotency key, created, sent, body) of the notice's messages."""
    return conn.execute("SELECT stream, idempotency_key, created_at, sent_at, body FROM outbox"
                        " WHERE idempotency_key LIKE %s ORDER BY id",
                        (f"notice-{notice_id}-%",)).fetchall()


def lock(conn: psycopg.Connection, notice_id: int) -> Notice | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM notices WHERE id = %s"  # noqa: S608
                       " FOR UPDATE", (notice_id,)).fetchone()
    return None if row is None else _notice(row)


def kind_stored(conn: psycopg.Connection, kind: str) -> bool:
    """Whether any notice of `kind` is stored."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM notices WHERE kind = %s)",
                        (kind,)).fetchone()[0]


def live_sms_kinds(conn: psycopg.Connection) -> frozenset[str]:
    """The kinds of the live notices that send SMS."""
    return frozenset(kind for kind, in conn.execute(
        f"SELECT DISTINCT kind FROM notices WHERE state IN {LIVE_STATES} AND sms"  # noqa: S608
    ).fetchall())


def live_counts(conn: psycopg.Connection) -> list[tuple[str, str, int]]:
    """(kind, state, count) of live notices."""
    return conn.execute(f"SELECT kind, state, count(*) FROM notices"  # noqa: S608
                        f" WHERE state IN {LIVE_STATES} GROUP BY 1, 2").fetchall()
