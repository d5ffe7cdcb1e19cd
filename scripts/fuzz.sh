#!/usr/bin/env bash
# Coverage-guided fuzzing of tapflow's hostile-input surfaces with libFuzzer, on the
# stable toolchain: no nightly, no cargo-fuzz needed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS (default 60) is the time each target runs; TARGETs default to all of them:
#   parse_frame      the packet parser on arbitrary bytes, also compared with etherparse
#   frames_to_flows  arbitrary frames with wild timestamps through the parser and a tiny
#                    flow cache: every accounted packet in exactly one record of its flow
#   pcap_file        the pcap/pcapng reader on arbitrary files (scan and read agree)
#   config           the TOML configuration loader on arbitrary text (with a dictionary)
#
# Targets run two at a time (this machine has two cores). Each starts from the tiny
# committed seed corpus in fuzz/corpus/TARGET, copied to a scratch corpus under the build
# directory, so the repository never grows; a crash's input is written to
# fuzz/artifacts/TARGET/ and the script fails, printing how to reproduce it:
#
#   target/fuzz/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-...
#
# Longer local runs, keeping the grown corpus between runs:
#   FUZZ_KEEP_CORPUS=1 scripts/fuzz.sh 3600 parse_frame
#   FUZZ_JOBS=1 scripts/fuzz.sh 600            # one target at a time
# With cargo-fuzz and a nightly toolchain the same targets also run as usual, e.g.
#   cd fuzz && cargo +nightly fuzz run config -- -dict=dict/config.dict
#
# How it builds: libfuzzer-sys compiles libFuzzer (C++, needs g++ or clang++) and the
# targets get SanitizerCoverage through stable -C flags (the flags cargo-fuzz passes).
# frames_to_flows also runs under AddressSanitizer: the flow cache loads its bucket
# headers with SIMD (`unsafe` in flowcache/src/hint.rs), so a memory error there is
# possible and must be caught where it happens, not as a later wrong record. ASan is a
# nightly-only rustc flag; RUSTC_BOOTSTRAP=1 lets the stable compiler accept it for this
# one build (no other build sees it). The parser, the reader and the configuration loader
# have no unsafe: for them a panic (abort) is the failure libFuzzer catches. Debug
# assertions and overflow checks stay on (fuzz/Cargo.toml's release profile).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(parse_frame frames_to_flows pcap_file config)
fi
jobs=${FUZZ_JOBS:-2}

if ! command -v cargo >/dev/null; then
    for dir in "$HOME/.cargo/bin" /root/.cargo/bin; do
        [[ -x $dir/cargo ]] && export PATH="$dir:$PATH" && break
    done
fi
if ! command -v c++ >/dev/null && ! command -v clang++ >/dev/null; then
    echo "fuzz: installing g++ (libFuzzer is C++)" >&2
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
# The build target is explicit so that RUSTFLAGS reach only the fuzzed code, not build
# scripts and proc macros (which would then miss the coverage runtime).
coverage_flags="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing"
# Targets whose code under test has unsafe: built with AddressSanitizer too.
asan_targets=(frames_to_flows)
(cd fuzz && cargo fmt --check)
build_start=$SECONDS
plain=() asan=()
for target in "${targets[@]}"; do
    if [[ " ${asan_targets[*]} " == *" $target "* ]]; then asan+=("$target"); else plain+=("$target"); fi
done
echo "== fuzz: building ${targets[*]} ($host; with AddressSanitizer: ${asan[*]:-none})"
if ((${#plain[@]})); then
    (cd fuzz && RUSTFLAGS="$coverage_flags" cargo build --locked --release --target "$host" \
        $(printf -- '--bin %s ' "${plain[@]}"))
fi
if ((${#asan[@]})); then
    (cd fuzz && RUSTC_BOOTSTRAP=1 RUSTFLAGS="$coverage_flags -Zsanitizer=address" \
        CARGO_TARGET_DIR="$CARGO_TARGET_DIR/asan" \
        cargo build --locked --release --target "$host" $(printf -- '--bin %s ' "${asan[@]}"))
fi
echo "fuzz: built in $((SECONDS - build_start)) s"

bin_dir_of() {
    if [[ " ${asan[*]} " == *" $1 "* ]]; then
        echo "$CARGO_TARGET_DIR/asan/$host/release"
    else
        echo "$CARGO_TARGET_DIR/$host/release"
    fi
}
work=$CARGO_TARGET_DIR/runs
mkdir -p "$work"
# pcap_file writes each input to a file here (the reader takes a path): in memory when
# /dev/shm exists, which makes it about five times faster than a disk.
scratch_parent=$work
[[ -d /dev/shm && -w /dev/shm ]] && scratch_parent=/dev/shm
TAPFLOW_FUZZ_SCRATCH=$(mktemp -d "$scratch_parent/tapflow-fuzz.XXXXXX")
export TAPFLOW_FUZZ_SCRATCH
trap 'rm -rf "$TAPFLOW_FUZZ_SCRATCH"' EXIT

run_one() {
    local target=$1
    local corpus=$work/corpus-$target
    if [[ -z ${FUZZ_KEEP_CORPUS:-} ]]; then
        rm -rf "$corpus"
    fi
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    local extra=()
    [[ -f fuzz/dict/$target.dict ]] && extra+=("-dict=fuzz/dict/$target.dict")
    # -rss_limit_mb: a reader that allocates without bound is a finding, not a swap storm.
    "$(bin_dir_of "$target")/$target" "$corpus" "fuzz/corpus/$target" "${extra[@]}" \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
        >"$work/$target.log" 2>&1
}

failed=()
running=()
declare -A pid_target
for target in "${targets[@]}"; do
    run_one "$target" &
    pid_target[$!]=$target
    running+=($!)
    if ((${#running[@]} >= jobs)); then
        wait "${running[0]}" || failed+=("${pid_target[${running[0]}]}")
        running=("${running[@]:1}")
    fi
done
for pid in "${running[@]}"; do
    wait "$pid" || failed+=("${pid_target[$pid]}")
done

printf '%-16s %12s %10s %8s %8s %s\n' target executions exec/s cov features corpus
for target in "${targets[@]}"; do
    log=$work/$target.log
    execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -1)
    per_sec=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*(cov|DONE)' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    printf '%-16s %12s %10s %8s %8s %s\n' "$target" "${execs:-?}" "${per_sec:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}"
done

if ((${#failed[@]})); then
    for target in "${failed[@]}"; do
        echo "fuzz: $target FAILED; its log ($work/$target.log) ends:" >&2
        { grep -v '^#' "$work/$target.log" || true; } | tail -40 >&2
        echo "fuzz: reproduce with $(bin_dir_of "$target")/$target fuzz/artifacts/$target/<crash file>" >&2
    done
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds} s each: no crash"
