#!/usr/bin/env bash
# The whole-server figures of docs/benchmarks.md, each with its baselines from the same run:
# the server over HTTP, gRPC and gRPC-web against the bare axum and tonic handlers (memory
# store), and the server on PostgreSQL against the same flow in process; then the server's memory with
# idle keep-alive connections. Rounds are interleaved; prints JSON lines, then medians.
# usage: crates/bench/over-the-wire.sh   (ROUNDS=3, N=50000, C=64, DATABASE_URL may be set)
set -euo pipefail
cd "$(dirname "$0")/../.."
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
rounds=${ROUNDS:-3}
n=${N:-50000}
pg_n=${PG_N:-10000}
c=${C:-64}
idle=${IDLE:-10000}
cargo build --release -q -p otp-sms-bench -p otp-sms-server
bench=target/release/otp-sms-bench
server=target/release/otp-sms-server
keys="k1:$(openssl rand -hex 32)"
config=$(mktemp --suffix .toml)
"$bench" --print-server-config > "$config"
out=$(mktemp)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }
# A fresh server per measurement, so that no run inherits another's registrations.
start_server() { # $1 port, rest: extra flags
  "$server" --config "$config" --keys "$keys" --listen "127.0.0.1:$1" "${@:2}" 2>/dev/null &
  server_pid=$!; pids+=("$server_pid"); wait_port "$1"
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
run() { echo "$1 $("${@:2}" 2>/dev/null)" | tee -a "$out"; }
bp=$(port)
"$bench" --serve-baseline --listen "127.0.0.1:$bp" 2>/dev/null & pids+=($!)
wait_port "$bp"
for _ in $(seq "$rounds"); do
  run baseline "$bench" --server "http://127.0.0.1:$bp" --protocol baseline --registrations "$n" --concurrency "$c"
  run grpc-baseline "$bench" --server "http://127.0.0.1:$bp" --protocol grpc-baseline --registrations "$n" --concurrency "$c"
  for protocol in http grpc grpc-web; do
    p=$(port); start_server "$p"
    run "server-memory-$protocol" "$bench" --server "http://127.0.0.1:$p" --protocol "$protocol" --registrations "$n" --concurrency "$c" --store memory
    stop_server
  done
  schema="otp_sms_bench_wire_$(date +%s%N)"
  p=$(port); start_server "$p" --database-url "$url" --schema "$schema"
  run server-postgres-http "$bench" --server "http://127.0.0.1:$p" --protocol http --registrations "$pg_n" --concurrency "$c" --store postgres
  stop_server
  PGOPTIONS="-c client_min_messages=warning" psql -q "$url" -c "DROP SCHEMA \"$schema\" CASCADE" >/dev/null
  run in-process-postgres "$bench" --store postgres --registrations "$pg_n" --concurrency "$c" --database-url "$url"
done
p=$(port); start_server "$p"
run idle "$bench" --server "http://127.0.0.1:$p" --idle-connections "$idle" --server-pid "$server_pid"
stop_server
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, rest = line.partition(" ")
    rows.setdefault(name, []).append(json.loads(rest))
print("\nmedians")
for name, values in rows.items():
    keys = ["verify_per_sec", "verify_p50_us", "verify_p99_us", "add_per_sec",
            "server_rss_kib_before", "server_rss_kib_with_idle", "bytes_per_idle_connection"]
    print(name + ": " + ", ".join(
        f"{k} {statistics.median(v[k] for v in values):g}" for k in keys
        if k in values[0] and values[0][k] is not None))
PY
