-- One index instead of two: with the IMEI first, the primary key also serves "every SIM
-- that used this IMEI", so the separate imei_key index only doubled the cost of each upsert.
ALTER TABLE slot_usage DROP CONSTRAINT slot_usage_pkey;
ALTER TABLE slot_usage ADD PRIMARY KEY (imei_key, imsi, month);
DROP INDEX slot_usage_by_imei;
