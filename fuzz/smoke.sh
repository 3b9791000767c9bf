#!/usr/bin/env bash
# Runs every fuzz target from its committed seeds, on the stable toolchain:
# `fuzz/smoke.sh [executions per target] [seed]` (default 20000 and 1: the same inputs on every
# run, so that CI's smoke run is repeatable; a long run takes more executions and seed 0, a
# random one; docs/testing.md, "Fuzzing"). A crash fails it, with the input saved under
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20000}"
seed="${2:-1}"
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
# The workspace's release profile links with thin LTO in one codegen unit, minutes per target
# binary here; fuzzing needs neither.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
# No sanitizer: the project's code forbids `unsafe`, and AddressSanitizer needs a nightly
# compiler; libFuzzer's coverage guidance and the targets' own checks are what find bugs here.
cargo fuzz build --sanitizer none --fuzz-dir fuzz
status=0
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  corpus=$(mktemp -d)
  log="$corpus.log"
  echo "== $target: $runs executions"
  if cargo fuzz run --sanitizer none --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
    -runs="$runs" -seed="$seed" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  else
    tail -n 60 "$log"
    echo "fuzz target $target failed: the input is under fuzz/artifacts/$target/" >&2
    status=1
  fi
  rm -rf "$corpus" "$log"
done
exit "$status"
