-- Which SIM used which slot (IMEI) of which device: one row per (month, IMEI key, IMSI).
-- Partitioned by month so that retention is a partition drop; `days` has bit d-1 set when
-- the pair was seen on day d of the month (as DIRBS keeps its monthly triplets).
CREATE TABLE slot_usage (
    month       date        NOT NULL,
    imei_key    bigint      NOT NULL,
    imsi        bigint      NOT NULL,
    msisdn      bigint      NOT NULL,
    slot        smallint,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    days        integer     NOT NULL,
    PRIMARY KEY (month, imei_key, imsi)
) PARTITION BY RANGE (month);

CREATE INDEX slot_usage_by_imei ON slot_usage (imei_key);
