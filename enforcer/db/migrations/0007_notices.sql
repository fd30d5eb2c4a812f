-- Notices: a subject (an IMEI and SIM pair, or an IMEI) that a rule gives a deadline. One
-- live notice per kind and subject; the deadline is anchored at the first sighting.
CREATE TABLE notices (
    id             bigserial   PRIMARY KEY,
    kind           text        NOT NULL,
    scope          text        NOT NULL,
    imei_key       bigint      NOT NULL,
    subject_imsi   bigint      NOT NULL,  -- the IMSI of a pair-scoped notice; 0: the IMEI's
    imsi           bigint      NOT NULL,  -- the SIM of the first sighting
    msisdn         bigint      NOT NULL,  -- where its SMS go
    rule           text        NOT NULL,
    state          text        NOT NULL,
    opened_at      timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    reminder_days  integer[]   NOT NULL,
    reminders_done integer     NOT NULL DEFAULT 0,
    sms            boolean     NOT NULL,
    last_sms_at    timestamptz,
    next_due       timestamptz,
    closed_reason  text,
    -- The database's own time of the last change: workers follow cutoffs and restores by it.
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE UNIQUE INDEX notices_live ON notices (kind, imei_key, subject_imsi)
    WHERE state IN ('open', 'warned', 'reminded', 'cut');
CREATE INDEX notices_due ON notices (next_due) WHERE next_due IS NOT NULL;
CREATE INDEX notices_by_imei ON notices (imei_key);
CREATE INDEX notices_by_msisdn ON notices (msisdn);
CREATE INDEX notices_by_update ON notices (updated_at);

-- Every change of a notice's state, and the step whose messages it sent.
CREATE TABLE notice_transitions (
    id         bigserial   PRIMARY KEY,
    notice_id  bigint      NOT NULL REFERENCES notices (id),
    at         timestamptz NOT NULL,
    from_state text,
    to_state   text        NOT NULL,
    step       text,
    reason     text
);

CREATE INDEX notice_transitions_by_notice ON notice_transitions (notice_id, id);

-- Messages written in the transaction that decided them, published by the relay, marked
-- sent after the broker acknowledged them. One message per stream and idempotency key.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    stream          text        NOT NULL,
    key             bytea       NOT NULL,
    idempotency_key text        NOT NULL,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz
);

CREATE UNIQUE INDEX outbox_once ON outbox (stream, idempotency_key);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
