#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, then formatting,
# lints (warnings are errors), and every test including the DPDK and collector ones.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (dpdk on)"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo clippy (probe without dpdk: builds where DPDK is absent)"
cargo clippy --locked -p probe --no-default-features --all-targets -- -D warnings
echo "== cargo clippy (the flow cache's benchmark-only variants)"
cargo clippy --locked -p flowcache --features bench-variants --all-targets -- -D warnings
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps
echo "== cargo test"
cargo test --locked --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
echo "== fuzz: coverage-guided fuzz targets, ${TAPFLOW_FUZZ_SECONDS:-60} s each (scripts/fuzz.sh)"
scripts/fuzz.sh "${TAPFLOW_FUZZ_SECONDS:-60}"

# One closing line with the totals: cargo's own last line is a doc-test binary's.
awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, i}' target/test-output.txt
