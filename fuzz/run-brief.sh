#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the
# STABLE toolchain (no cargo-fuzz, no nightly) and runs each one briefly over
# a fresh copy of its committed seeds. Fails on any crash, oracle failure,
# timeout or out-of-memory, or when the instrumentation is missing.
#
#   fuzz/run-brief.sh [TARGET...]          # default: every target
#
# Environment:
#   FUZZ_SECONDS      seconds per target (default 20)
#   FUZZ_TARGET_DIR   cargo target dir (default fuzz/target; the build lands
#                     in its <host triple>/release, apart from the plain build)
#   FUZZ_WORK         where the corpora and logs go (default: a new temp dir,
#                     removed when every target passed)
#   FUZZ_ARTIFACTS    where crashing inputs go (default fuzz/artifacts)
#   FUZZ_ARGS         more libFuzzer flags, e.g. "-max_len=8192"
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SECONDS:-20}"
target_dir="${FUZZ_TARGET_DIR:-target}"
artifacts="${FUZZ_ARTIFACTS:-artifacts}"
work="${FUZZ_WORK:-}"
if [ -z "$work" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/walship-fuzz.XXXXXX")"
  cleanup_work=1
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame_decode control_decode pg_walk receiver_session)
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
# What `cargo fuzz build -s none` passes: LLVM's SanitizerCoverage passes,
# which stable rustc accepts. `--target` keeps the flags off build scripts
# and proc macros. `--cfg fuzzing` is what libfuzzer-sys and friends expect.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

start=$(date +%s)
echo "== build ($(rustc --version), $host)"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --release --locked --target "$host" --target-dir "$target_dir" "${bins[@]}"
bin_dir="$target_dir/$host/release"
echo "build: $(($(date +%s) - start)) s"

failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  log="$work/$t.log"
  mkdir -p "$corpus" "$artifacts/$t"
  if [ -d "seeds/$t" ]; then
    cp -R "seeds/$t/." "$corpus/"
  fi
  seeds=$(find "$corpus" -type f | wc -l)
  echo "== $t: ${secs} s from $seeds seeds"
  rc=0
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t/" ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1 || rc=$?
  # Coverage guidance must be on: the instrumented module and its counters.
  counters=$(sed -n 's/^INFO: Loaded 1 modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  line="$t: execs ${execs:-?} (${rate:-?}/s) cov ${cov:-?} ft ${ft:-?} corpus ${corp:-?} (from $seeds seeds)"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    line="$line FAILED (exit $rc)"
    echo "--- $t: libFuzzer exited with $rc; the end of its log ($log):"
    tail -n 60 "$log"
    ls -l "$artifacts/$t/" || true
  elif [ -z "$counters" ] || [ "$counters" -eq 0 ] || [ -z "$cov" ] || [ "$cov" -eq 0 ]; then
    failed+=("$t")
    line="$line FAILED (no coverage instrumentation)"
    grep -E '^(INFO|WARNING|ERROR)' "$log" | head -20
  fi
  summary+=("$line")
  echo "$line"
done

echo
echo "== summary (${secs} s per target, total $(($(date +%s) - start)) s)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs in fuzz/$artifacts/<target>/, logs in $work; replay: fuzz/$bin_dir/<target> FILE)"
  exit 1
fi
if [ "${cleanup_work:-0}" = 1 ]; then
  rm -rf "$work"
else
  echo "corpora and logs in $work"
fi
