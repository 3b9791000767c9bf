-- Events and the delivery outbox. Table names are unqualified: the store runs migrations with
-- search_path set to its configured schema, so the tables live wherever the host wants them.

CREATE TABLE events (
    instance_id    text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    -- Assigned under the append lock, so positions become visible in increasing order.
    position       bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    event_type     text        NOT NULL,
    revision       smallint    NOT NULL,
    payload        jsonb       NOT NULL,
    creator        text        NOT NULL,
    owner          text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Optimistic concurrency across any number of servers: two writers of the same sequence
    -- collide here.
    PRIMARY KEY (instance_id, aggregate_type, aggregate_id, sequence)
);

-- The global feed: read_all(after) is a range scan on this index.
CREATE UNIQUE INDEX events_position_idx ON events (position);

CREATE TABLE outbox (
    id             uuid        PRIMARY KEY,
    seq            bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    instance_id    text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer     NOT NULL DEFAULT 0,
    leased_until   timestamptz
);

-- Oldest first for the notifier.
CREATE INDEX outbox_seq_idx ON outbox (seq);
