#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (a cargo-fuzz workspace of its own).
#
#   scripts/fuzz.sh [SECONDS]   every target for SECONDS each (default 60), with cargo +nightly fuzz
#   scripts/fuzz.sh --ci        build the targets on stable; then run each for about 20 seconds
#                               as a smoke test with nightly (installing cargo-fuzz if it is
#                               missing). Without a nightly toolchain (.ci/run tries to install
#                               one) the smoke test cannot run: a loud warning on stderr, and
#                               the build alone.
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
    {
      echo
      echo "!! WARNING: no nightly toolchain, so the fuzz targets were built but NOT run."
      echo "!! cargo-fuzz needs nightly: rustup toolchain install nightly --profile minimal"
      echo
    } >&2
    # Not a failure even under CI: a machine that cannot fetch a toolchain must still be able to
    # land changes; the warning above is what says the smoke test did not run.
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
