-- Every call of the status query is recorded, answered or refused: who called (the HTTP
-- client's token name, or the command line), from where, and why it was refused, with the
-- IMEI and requester as far as they could be read.
ALTER TABLE status_queries
    ALTER COLUMN imei_key DROP NOT NULL,
    ALTER COLUMN requester DROP NOT NULL,
    ALTER COLUMN status DROP NOT NULL,
    ADD COLUMN client  text,
    ADD COLUMN peer    text,
    ADD COLUMN refused text;
