-- The outbox relay's own record, one row. `in_flight` is set (and committed) before a round
-- publishes and cleared in the transaction that marks its messages sent: found set, the
-- last round may have reached the broker without being recorded, and the next relay reads
-- the topics back before publishing anything (consumers/outbox.py). `ends` is where the relay's
-- acknowledged messages ended, {"topic": {"partition": next offset}}: what is after that is
-- all such a round could have left.
CREATE TABLE outbox_relay (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    in_flight boolean NOT NULL,
    ends      jsonb   NOT NULL
);
INSERT INTO outbox_relay (in_flight, ends) VALUES (false, '{}');
