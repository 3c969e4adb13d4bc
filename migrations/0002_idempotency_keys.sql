-- Idempotency keys: a publish retried with the same `Idempotency-Key` gets the
-- first event's id back and creates nothing. Written in the same transaction
-- as the event, so a key can never outlive or precede its event. Expired
-- keys are removed by the retention sweep.
CREATE TABLE idempotency_keys (
    key        TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_ms);
