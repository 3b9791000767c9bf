-- The whole store in one file: events, the delivery outbox, send budgets, idempotency records
-- and subscription checkpoints. Times are microseconds since the Unix epoch (UTC), on the
-- clock of the process that wrote them (processes sharing a file share a host and its clock).

CREATE TABLE events (
    -- The global feed. Writers take turns (SQLite has one writer at a time), so positions
    -- become visible in increasing order and a reader that resumes never skips one.
    position       INTEGER PRIMARY KEY,
    instance_id    TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence > 0),
    event_type     TEXT    NOT NULL,
    revision       INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    creator        TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    command_id     TEXT,
    UNIQUE (instance_id, aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TABLE outbox (
    -- rowid: the order messages were written in.
    id             TEXT    PRIMARY KEY,
    instance_id    TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    leased_until   INTEGER
) STRICT;

-- A key's entries are numbered 1, 2, 3, … without gaps from its oldest kept entry, so that a
-- window is checked with one probe: the entry `max` places back from the newest.
CREATE TABLE budget_entries (
    key    TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    member TEXT    NOT NULL,
    at     INTEGER NOT NULL,
    until  INTEGER NOT NULL,
    PRIMARY KEY (key, seq)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX budget_entries_member ON budget_entries (key, member);
CREATE INDEX budget_entries_until ON budget_entries (until);

CREATE TABLE idempotency_keys (
    instance_id     TEXT    NOT NULL,
    principal       TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    command_id      TEXT    NOT NULL,
    registration_id TEXT    NOT NULL,
    sealed_code     TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (instance_id, principal, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

CREATE TABLE checkpoints (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL CHECK (position >= 0)
) STRICT, WITHOUT ROWID;
