#!/usr/bin/env bash
# Every figure of docs/benchmarks.md, with PostgreSQL's own baseline measured in the same run.
# Prints JSON lines (one per measurement) and, at the end, the medians per configuration.
# usage: crates/bench/reproduce.sh   (ROUNDS=5, DATABASE_URL, PGBENCH_BASELINE may be set)
set -euo pipefail
cd "$(dirname "$0")/../.."
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
baseline=${PGBENCH_BASELINE:-../shared/bench/pgbench-baseline}
rounds=${ROUNDS:-5}
cargo build --release -q -p otp-sms-bench
bench=target/release/otp-sms-bench
# The same benchmark on the system allocator (glibc's malloc on Linux), for comparison.
cargo build --release -q -p otp-sms-bench --no-default-features --target-dir target/bench-system-alloc
system_alloc=target/bench-system-alloc/release/otp-sms-bench
out=$(mktemp)
run() { echo "$1 $("${@:2}" 2>/dev/null)" | tee -a "$out"; }
for _ in $(seq "$rounds"); do
  run memory-c8 "$bench" --store memory --registrations 100000 --concurrency 8
  run memory-c8-preload1m "$bench" --store memory --registrations 100000 --concurrency 8 --preload-events 1000000
  run memory-c8-system-alloc "$system_alloc" --store memory --registrations 100000 --concurrency 8
  run baseline-c8 env DATABASE_URL="$url" bash "$baseline" 8 5
  run postgres-c8 "$bench" --store postgres --registrations 20000 --concurrency 8 --database-url "$url"
  run postgres-c8-no-cache "$bench" --store postgres --registrations 20000 --concurrency 8 --stream-cache 0 --database-url "$url"
  run baseline-c1 env DATABASE_URL="$url" bash "$baseline" 1 5
  run postgres-c1 "$bench" --store postgres --registrations 5000 --concurrency 1 --database-url "$url"
  run postgres-c1-no-cache "$bench" --store postgres --registrations 5000 --concurrency 1 --stream-cache 0 --database-url "$url"
  run postgres-c8-preload1m "$bench" --store postgres --registrations 20000 --concurrency 8 --preload-events 1000000 --database-url "$url"
  # Send budgets (docs/security.md): every scope evaluated (on, the default above) against
  # none (off), with codes sent (the adds that take send budgets) and returned (verifies).
  run memory-c8-send-budgets-on "$bench" --store memory --registrations 100000 --concurrency 8 --add-delivery send --budgets on
  run memory-c8-send-budgets-off "$bench" --store memory --registrations 100000 --concurrency 8 --add-delivery send --budgets off
  run memory-c8-budgets-off "$bench" --store memory --registrations 100000 --concurrency 8 --budgets off
  run postgres-c8-send-budgets-on "$bench" --store postgres --registrations 20000 --concurrency 8 --add-delivery send --budgets on --database-url "$url"
  run postgres-c8-send-budgets-off "$bench" --store postgres --registrations 20000 --concurrency 8 --add-delivery send --budgets off --database-url "$url"
  run postgres-c8-budgets-off "$bench" --store postgres --registrations 20000 --concurrency 8 --budgets off --database-url "$url"
done
echo "memory-1m-events-rss_kb $( { /usr/bin/time -f '%M' "$bench" --store memory --registrations 1000 --concurrency 8 --preload-events 1000000 >/dev/null; } 2>&1 | tail -n1)" | tee -a "$out"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, rest = line.partition(" ")
    for part in rest.strip().splitlines():
        try:
            rows.setdefault(name, []).append(json.loads(part))
        except ValueError:
            rows.setdefault(name, []).append(part)
print("\nmedians")
for name, values in rows.items():
    if name.startswith("baseline"):
        verify = [v["tps"] for v in values if isinstance(v, dict) and v.get("baseline") == "pgbench-verify"]
        print(f"{name}: pgbench-verify tps {statistics.median(verify):.0f}")
    elif name.startswith("memory-1m"):
        print(f"{name}: {values[0]}")
    else:
        keys = ["verify_per_sec", "verify_p50_us", "verify_p99_us", "add_per_sec"]
        print(name + ": " + ", ".join(f"{k} {statistics.median(v[k] for v in values):g}" for k in keys if k in values[0]))
PY
