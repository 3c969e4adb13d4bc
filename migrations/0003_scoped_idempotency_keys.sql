-- Idempotency keys belong to their caller and stand for a whole request.
--   scope        whose key it is (`sub:<token subject>`, or for a token without
--                one `grants:<its publish patterns>`); '' marks a key stored
--                before keys were scoped (see below)
--   seq, events  the request's first event and how many it held: its events
--                have the consecutive ids seq .. seq + events - 1
--   topic        the first event's topic
--   fingerprint  SHA-256 of what the request sent (topic, type, data, retry
--                of each event): a retry with the same fingerprint gets the
--                first ids back, the same key with another one is refused
--
-- Keys stored before this migration have no caller and no fingerprint. They
-- move to scope '' and still make a retry of the same single publish safe:
-- one answers only a single publish of the very event it stands for (same
-- topic, type, data and retry, compared with the stored event); any other
-- request with the same key is a new one. They expire with their TTL.
CREATE TABLE idempotency_keys_scoped (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    topic       TEXT    NOT NULL,
    fingerprint BLOB,
    expires_ms  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT, WITHOUT ROWID;

INSERT INTO idempotency_keys_scoped (scope, key, seq, events, topic, fingerprint, expires_ms)
    SELECT '', key, seq, 1, topic, NULL, expires_ms FROM idempotency_keys;

DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_scoped RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_ms);
-- A key is looked up by its text first (its scoped row and, until they
-- expire, an unscoped one).
CREATE INDEX idempotency_keys_by_key ON idempotency_keys (key);
