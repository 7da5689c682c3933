#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit tests, then the suite that starts real
# tritonserver processes with the installed backend and checks responses, /stats and /metrics.
# Installs and builds whatever is missing first (ci/setup.sh). Writes only under build/ (and
# .deps/, target/): the reliability report goes to build/reliability/reliability.md.
#   bash ci/test.sh [--update-docs] [pytest arguments]
#     --update-docs   also copy that report to docs/reliability.md
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
update_docs=0
pytest_args=()
for arg in "$@"; do
  if [ "$arg" = --update-docs ]; then update_docs=1; else pytest_args+=("$arg"); fi
done
bash ci/setup.sh

step "cargo fmt --check, cargo clippy (the crate and its fuzz targets)"
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
cargo clippy -j2 --all-targets --locked -- -D warnings
cargo clippy -j2 --bins --locked --manifest-path fuzz/Cargo.toml -- -D warnings

step "test models"
export ONNXRS_TEST_MODELS="$ONNXRS_ROOT/build/test-models"
"$ONNXRS_PYTHON" tests/models/make_models.py "$ONNXRS_TEST_MODELS"

# The slow tier: fuzzing and the load/unload soak at full length (a quick local run can lower
# these; CI runs them as set here, well within its time limit).
# Seconds of coverage-guided fuzzing per target (ci/fuzz.sh; five targets, plus building them).
export ONNXRS_FUZZ_SECONDS="${ONNXRS_FUZZ_SECONDS:-60}"
export ONNXRS_SOAK_CYCLES="${ONNXRS_SOAK_CYCLES:-40}"
# Load/unload cycles under the heap checker (tests/test_lifecycle.py), per storm: our own
# regressions killed the server within 83-1,544 cycles, so two storms of 2,000 catch them. The
# long soak (where a race inside the server itself would show) is its own command: ci/soak.sh.
export ONNXRS_LIFECYCLE_CYCLES="${ONNXRS_LIFECYCLE_CYCLES:-2000}"
export ONNXRS_LIFECYCLE_RELOADS="${ONNXRS_LIFECYCLE_RELOADS:-200}"

step "Rust tests (unit, ONNX Runtime level, host-side faults)"
rm -rf build/reliability
# The host-fault test loads the debug libtriton_onnxrs.so, which `cargo test` alone does not build.
cargo build -j2 --locked --lib
cargo test -j2 --locked

step "host-side faults under valgrind (leak check)"
host_test=$(cargo test -j2 --locked --test host_faults --no-run 2>&1 | grep -o 'target/debug/deps/host_faults-[0-9a-f]*' | head -1)
vg_log=build/reliability/valgrind.log
vg_status=0
valgrind --suppressions=tests/valgrind.supp --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --error-exitcode=99 --log-file="$vg_log" \
  "$host_test" --test-threads=1 || vg_status=$?
if [ "$vg_status" -ne 0 ]; then
  # Say what failed instead of ending silently: the summary and the first error's whole block
  # (its thread, its header line, through the blank `==PID== ` line after its stacks).
  first=$(awk '/^==[0-9]+== Thread [0-9]+/ { thread = $0 }
    !on && /^==[0-9]+== [^ ]/ && /Invalid|uninitialised|definitely lost in|Mismatched|Syscall param|overlap|Process terminating/ { on = 1; if (thread != "") print thread }
    on && /^==[0-9]+== *$/ { exit }
    on' "$vg_log")
  in_test=$(grep -o 'host_faults::[A-Za-z0-9_]*' <<<"$first" | sort -u | paste -sd ' ' || true)
  echo "FAILED: valgrind exited with status $vg_status (99: memcheck found errors): $host_test --test-threads=1"
  grep -m1 'ERROR SUMMARY' "$vg_log" || echo "(no ERROR SUMMARY in $vg_log)"
  echo "first error (test in its stack: ${in_test:-none, e.g. at exit}), from $vg_log:"
  echo "${first:-(no error block in the log: did the test itself fail?)}"
  exit "$vg_status"
fi
summary=$(grep -E "definitely lost|ERROR SUMMARY" "$vg_log" | sed 's/^==[0-9]*== *//' || true)
printf '\nUnder valgrind memcheck (`%s`): %s\n' "tests/valgrind.supp" \
  "${summary:-no errors, no leaks reported}" | tee -a build/reliability/host-faults.md

step "coverage-guided fuzzing (cargo fuzz, stable toolchain): ${ONNXRS_FUZZ_SECONDS}s per target"
bash ci/fuzz.sh

step "server tests (real tritonserver, tritonclient over HTTP and gRPC)"
"$ONNXRS_PYTHON" -m pytest -q -ra tests "${pytest_args[@]}"

if [ "$update_docs" = 1 ]; then
  step "docs/reliability.md from this run"
  report=build/reliability/reliability.md
  [ -f "$report" ] || { echo "no $report: it is written only when all the reliability tests ran and passed"; exit 1; }
  cp "$report" docs/reliability.md
fi
