-- IMEIs flagged misused by clone detection (enforcer/engine/clones.py): one row per IMEI, with the
-- attach that flagged it. Read back by every worker and by `serve` (recorded_at, the
-- database's clock, is how they follow it).
CREATE TABLE clone_flags (
    imei_key    bigint      PRIMARY KEY,
    reason      text        NOT NULL,
    flagged_at  timestamptz NOT NULL,
    imsi        bigint      NOT NULL,
    msisdn      bigint      NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX clone_flags_by_recorded ON clone_flags (recorded_at);
