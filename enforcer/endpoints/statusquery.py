"""The IMEI status query's shell: the current state (snapshot, and the registry's changes
from PostgreSQL), the slot-usage history, clone detection's flags, the pure answer, and the
audit row."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from enforcer.follow.layover import lay_over
from enforcer.engine.imei import imei_rules
from enforcer.clock import utc_datetime
from enforcer.config import Config
from enforcer.db.clones import any_flagged
from enforcer.db.history import usage_of
from enforcer.db.registry_events import applied_events_after
from enforcer.db.status_queries import record_query
from enforcer.engine.device import device_now
from enforcer.engine.state import EnforcementState, StateHolder
from enforcer.engine.status import StatusAnswer, imei_status


def current_state(snapshot: EnforcementState, conn: psycopg.Connection,
                  config: Config) -> EnforcementState:
    """The snapshot with the stored registry changes laid over it, for a one-off answer.
    Changes that no longer apply are told at INFO: the answer without them is the one a
    worker gives, and the worker warns of them itself."""
    holder = StateHolder(snapshot)
    stored = applied_events_after(conn, config.kafka.registry_topic, snapshot.watermark)
    lay_over(holder, stored, imei_rules(config), config, level=logging.INFO)
    return holder.current


@dataclass(frozen=True)
class Caller:
    channel: str  # "cli" or "http"
    client: str | None = None  # the HTTP client's token name
    peer: str | None = None  # its address


def ask(state: EnforcementState, conn: psycopg.Connection, imei_key: int, requester: int,
        caller: Caller, now_ms: int) -> StatusAnswer:
    """The answer, given only once its audit row is written."""
    device = device_now(state, imei_key)
    keys = [key for _, key in device.slots]
    # The flags' record, not a copy: the CLI follows none, a worker's lags behind the others'.
    life_ms = state.policy.clones.flag_ms
    in_force_after = utc_datetime(now_ms - life_ms) if life_ms else None
    answer = imei_status(device, usage_of(conn, keys), requester,
                         any_flagged(conn, keys, in_force_after))
    _audit(conn, imei_key, requester, caller, answer.status.value, answer.previous_msisdn, None,
           now_ms)
    return answer


def refuse(conn: psycopg.Connection, imei_key: int | None, requester: int | None,
           caller: Caller, reason: str, now_ms: int) -> None:
    _audit(conn, imei_key, requester, caller, None, None, reason, now_ms)


def _audit(conn: psycopg.Connection, imei_key: int | None, requester: int | None,
           caller: Caller, status: str | None, revealed: int | None,
           refused: str | None, now_ms: int) -> None:
    record_query(conn, imei_key=imei_key, requester=requester, status=status, revealed=revealed,
                 channel=caller.channel, client=caller.client, peer=caller.peer, refused=refused,
                 asked_at=utc_datetime(now_ms))
