-- Retention takes the subscribers not seen for retention.subscriber_days, oldest first.
CREATE INDEX subscribers_by_seen ON subscribers (seen_at);
