-- Every IMEI status query, answered or not: the answer can reveal another person's number.
CREATE TABLE status_queries (
    id         bigserial   PRIMARY KEY,
    asked_at   timestamptz NOT NULL DEFAULT now(),
    imei_key   bigint      NOT NULL,
    requester  bigint      NOT NULL,
    status     text        NOT NULL,
    revealed   bigint,
    channel    text        NOT NULL
);

CREATE INDEX status_queries_by_requester ON status_queries (requester, asked_at);
