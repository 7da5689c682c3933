#!/usr/bin/env bash
# Coverage-guided fuzzing: runs every target in fuzz/ (libFuzzer through cargo fuzz) for a bounded
# time, starting from its committed seed corpus (fuzz/corpus/TARGET) and replaying the inputs that
# once crashed it (fuzz/regressions/TARGET). On the stable toolchain: `-s none` builds without a
# sanitizer, so no -Z flag; the coverage instrumentation is stable rustc flags. Fails on any crash
# (a panic, a failed invariant, a timeout or running out of memory), after running every target,
# with the crashing input under build/fuzz/artifacts/. Prints each target's executions and coverage
# and writes the table to build/reliability/fuzz.md for the reliability report.
#   bash ci/fuzz.sh [TARGET...]
#   ONNXRS_FUZZ_SECONDS   seconds per target (default 60)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
seconds="${ONNXRS_FUZZ_SECONDS:-60}"
# The machines CI runs on have 2 cores, shared.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

work=build/fuzz
rm -rf "$work/corpus" "$work/artifacts" "$work/logs"
mkdir -p "$work/logs" build/reliability

step "fuzz targets: build (release, coverage-instrumented, debug assertions on)"
build_start=$SECONDS
cargo fuzz build -s none
build_secs=$((SECONDS - build_start))

# A field of libFuzzer's last status line ($status): "#N DONE cov: EDGES ft: FEATURES corp: N/SIZE".
field() { sed -nE "s/.* $1: ([^ ]+).*/\1/p" <<<"$status"; }
# 1234567 -> 1,234,567
group() { sed -E ':a;s/([0-9])([0-9]{3})($|,)/\1,\2\3/;ta' <<<"$1"; }
rows=()
crashed=()
for t in "${targets[@]}"; do
  step "fuzz $t: ${seconds}s"
  # New inputs go into the first corpus directory: build/, so the committed corpus stays as it is.
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  dirs=("$work/corpus/$t")
  for d in "fuzz/corpus/$t" "fuzz/regressions/$t"; do [ -d "$d" ] && dirs+=("$d"); done
  seeds=$(find "fuzz/corpus/$t" -type f 2>/dev/null | wc -l)
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$work/artifacts/$t/")
  [ -f "fuzz/dicts/$t.dict" ] && args+=(-dict="fuzz/dicts/$t.dict")
  log="$work/logs/$t.log"
  start=$SECONDS
  rc=0
  cargo fuzz run -s none "$t" "${dirs[@]}" -- "${args[@]}" >"$log" 2>&1 || rc=$?
  secs=$((SECONDS - start))
  status=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  execs=${execs:-$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$status")}
  edges=$(sed -nE 's/^INFO: Loaded 1 modules +\(([0-9]+) inline 8-bit counters\).*/\1/p' "$log" | head -1)
  corpus=$(field corp)
  if [ "$rc" -eq 0 ]; then result=pass; else result="CRASH (exit $rc)"; crashed+=("$t"); fi
  printf '%s: %s executions in %ss, coverage %s of %s edges, %s features, corpus %s (entries/bytes; %s seeds): %s\n' \
    "$t" "${execs:-?}" "$secs" "$(field cov)" "${edges:-?}" "$(field ft)" "${corpus:-?}" "$seeds" "$result"
  rows+=("| $t | $(group "${execs:-?}") | $(field cov) of ${edges:-?} | $(field ft) | ${corpus:-?} | $seeds | $secs | $result |")
  if [ "$rc" -ne 0 ]; then
    # The panic (or libFuzzer's verdict: timeout, out of memory) and the input, not cargo-fuzz's
    # own backtrace.
    grep -E -A6 "panicked at|ERROR: libFuzzer|SUMMARY: libFuzzer" "$log" | head -40
    echo "the crashing input: $(ls "$work/artifacts/$t"/* 2>/dev/null | head -1); replay with cargo fuzz run -s none $t FILE"
  fi
done

{
  printf '## Fuzzing\n\n'
  printf 'Coverage-guided fuzzing with libFuzzer (`cargo fuzz run -s none`, the stable toolchain, debug '
  printf 'assertions on), %s s per target from the committed seed corpus, by `bash ci/fuzz.sh` (building the ' "$seconds"
  printf 'targets, with the library and their dependencies when fuzz/target/ is empty, took %s s). Every target checks invariants on each execution, not just the absence of a ' "$build_secs"
  printf 'crash (fuzz/README.md). Edges: instrumented code blocks reached, of those in the binary; features: '
  printf "libFuzzer's finer coverage signal (edge hit counts, comparisons); corpus: inputs/bytes kept at the end.\n\n"
  printf '| target | executions | edges covered | features | corpus (inputs/bytes) | seeds | seconds | result |\n'
  printf '|---|---|---|---|---|---|---|---|\n'
  printf '%s\n' "${rows[@]}"
  printf '\n### Crashes found and fixed\n\n'
  cat fuzz/crashes.md
} >build/reliability/fuzz.md

if [ ${#crashed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${crashed[*]} (logs in $work/logs, inputs in $work/artifacts)"
  exit 1
fi
