-- Idempotency keys (otp_sms_core::IdempotencyStore): what each client key stands for, per
-- instance and principal, until expires_at (the database's clock). Claims insert, or take over
-- a lapsed row, in one statement; lapsed rows of other keys are swept a few at a time by later
-- claims. Written with synchronous commit, like the events: a record must outlive a crash
-- whenever the append it guards does.

CREATE TABLE idempotency_keys (
    instance_id     text        NOT NULL,
    principal       text        NOT NULL,
    key             text        NOT NULL,
    fingerprint     text        NOT NULL,
    command_id      uuid        NOT NULL,
    registration_id text        NOT NULL,
    sealed_code     jsonb,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (instance_id, principal, key)
);

CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
