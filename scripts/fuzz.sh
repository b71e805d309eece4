#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (a cargo-fuzz workspace of its own).
#
#   scripts/fuzz.sh [SECONDS]   every target for SECONDS each (default 60), with cargo +nightly fuzz
#   scripts/fuzz.sh --ci        build the targets on stable; then, when a nightly toolchain is
#                               there, run each for about 20 seconds as a smoke test (installing
#                               cargo-fuzz if it is missing)
#
# Inputs found are kept in fuzz/corpus/<target>, crashes in fuzz/artifacts/<target>; the seeds in
# fuzz/seeds (one valid packet of each type and version, see fuzz/examples/seeds.rs) are read too.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(decode roundtrip client_stream broker_stream session restore)

run_all() {
  local seconds=$1
  for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "== fuzz $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" fuzz/seeds -- \
      -max_total_time="$seconds" -print_final_stats=1
  done
}

if [ "${1:-}" = "--ci" ]; then
  echo "== build the fuzz targets on stable"
  cargo build --locked --manifest-path fuzz/Cargo.toml --bins --examples
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "no nightly toolchain: skipping the fuzzing smoke test"
    exit 0
  fi
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== install cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
  run_all 20
else
  run_all "${1:-60}"
fi
