"""The IMEI status query's shell: the current state (snapshot, and the registry's changes
from PostgreSQL), the slot-usage history, the pure answer, and the audit row."""

from __future__ import annotations

import psycopg

from consumers.registry import lay_over
from enforcer.build import imei_rules
from enforcer.config import Config
from enforcer.db.history import usage_of
from enforcer.db.registry import applied_events
from enforcer.device import device_now
from enforcer.state import EnforcementState, StateHolder
from enforcer.status import StatusAnswer, imei_status


def current_state(snapshot: EnforcementState, conn: psycopg.Connection,
                  config: Config) -> EnforcementState:
    holder = StateHolder(snapshot)
    lay_over(holder, applied_events(conn), imei_rules(config), config)
    return holder.current


def ask(state: EnforcementState, conn: psycopg.Connection, imei_key: int, requester: int,
        channel: str) -> StatusAnswer:
    device = device_now(state, imei_key)
    answer = imei_status(device, usage_of(conn, [key for _, key in device.slots]), requester)
    conn.execute("INSERT INTO status_queries (imei_key, requester, status, revealed, channel)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 (imei_key, requester, answer.status.value, answer.previous_msisdn, channel))
    return answer
