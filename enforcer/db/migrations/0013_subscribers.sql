-- The subscribers' numbers by IMSI (enforcer/engine/numbers.py), learned from the attaches:
-- one row per home IMSI, the MSISDN its latest attach carried (or a provisioning file's,
-- `subscribers import`). Checks that carry no MSISDN (S13, N5g-eir without a GPSI) find the
-- owner by it; `serve` follows it by recorded_at, the database's clock, as it follows
-- clone_flags.
CREATE TABLE subscribers (
    imsi        bigint      PRIMARY KEY,
    msisdn      bigint      NOT NULL,
    seen_at     timestamptz NOT NULL,  -- the attach that carried this MSISDN, or its import
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX subscribers_by_recorded ON subscribers (recorded_at);
