#!/usr/bin/env bash
# The floor under PostgreSQL's send budgets: what PostgreSQL itself does per second for an
# add's own writes (an event and an outbox row) against the same writes plus the least any
# exact per-key budget state must write for one send (a row for each new key of a sign-up: its
# registration slot, user, number and address; a counter bumped in place for the range,
# region and instance). No reads, no checks, no windows, no lock waits (each client bumps
# its own instance and region rows): a bound no representation of the budgets can beat.
# One statement per add, asynchronous commit for both. Prints tps per round and the ratio.
# usage: crates/bench/budget-floor.sh   (ROUNDS=3, SECONDS=8, CLIENTS=8, DATABASE_URL)
set -euo pipefail
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
rounds=${ROUNDS:-3} seconds=${SECONDS_EACH:-8} clients=${CLIENTS:-8}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; psql -q "$url" -c "DROP TABLE IF EXISTS floor_events, floor_outbox, floor_keys" 2>/dev/null' EXIT
psql -q "$url" <<'SQL'
DROP TABLE IF EXISTS floor_events, floor_outbox, floor_keys;
CREATE TABLE floor_events (instance_id text NOT NULL, aggregate_type text NOT NULL,
  aggregate_id text NOT NULL, sequence bigint NOT NULL, event_type text NOT NULL,
  revision smallint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), payload jsonb,
  owner text NOT NULL, creator text NOT NULL, position bigserial,
  PRIMARY KEY (instance_id, aggregate_type, aggregate_id, sequence));
CREATE TABLE floor_outbox (id uuid PRIMARY KEY, position bigint NOT NULL,
  due timestamptz NOT NULL DEFAULT now());
CREATE TABLE floor_keys (key text PRIMARY KEY, seq bigint NOT NULL, ats timestamptz[] NOT NULL)
  WITH (fillfactor = 50);
INSERT INTO floor_keys SELECT 'i|instance|' || g, 0, '{}' FROM generate_series(0, 63) g;
INSERT INTO floor_keys SELECT 'i|region|CH' || g, 0, '{}' FROM generate_series(0, 63) g;
INSERT INTO floor_keys SELECT 'i|range|+41791234' || g, 0, '{}' FROM generate_series(0, 999) g;
SQL
event="INSERT INTO floor_events (instance_id, aggregate_type, aggregate_id, sequence, event_type, revision, payload, owner, creator)
  VALUES ('inst1', 'user', :agg::text || '-' || :client_id, 1, 'user.otp.sms.added', 1,
  '{\"phone\":\"+41791234567\",\"code\":{\"hash\":\"abcdefabcdefabcdefabcdef\"}}', 'org1', 'u1') ON CONFLICT DO NOTHING RETURNING 1"
cat > "$tmp/add.sql" <<SQL
\set agg random(1, 1000000000)
WITH e AS ($event), o AS (INSERT INTO floor_outbox VALUES (gen_random_uuid(), 1) RETURNING 1)
SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM o);
SQL
cat > "$tmp/add_budgets.sql" <<SQL
\set agg random(1, 1000000000)
\set rng random(0, 999)
WITH e AS ($event), o AS (INSERT INTO floor_outbox VALUES (gen_random_uuid(), 1) RETURNING 1),
k AS (INSERT INTO floor_keys SELECT 'i|' || s || '|' || :agg || '-' || :client_id, 1, ARRAY[now()]
      FROM unnest(ARRAY['slot', 'user', 'number', 'address']) s ON CONFLICT DO NOTHING RETURNING 1),
u AS (UPDATE floor_keys SET seq = seq + 1 WHERE key IN ('i|instance|' || :client_id,
      'i|region|CH' || :client_id, 'i|range|+41791234' || :rng) RETURNING 1)
SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM o) + (SELECT count(*) FROM k)
     + (SELECT count(*) FROM u);
SQL
chmod -R a+rX "$tmp"
tps() { PGOPTIONS='-c synchronous_commit=off' pgbench -n -f "$tmp/$1.sql" -c "$clients" -j 2 -T "$seconds" "$url" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
for r in $(seq "$rounds"); do
  add=$(tps add); with=$(tps add_budgets)
  echo "{\"round\":$r,\"add_tps\":$add,\"add_with_budget_writes_tps\":$with,\"ratio\":$(python3 -c "print(round($with / $add, 2))")}"
done
