#!/usr/bin/env bash
# The benchmark (see bench/bench.py): onnxrs against Triton's Python backend with onnxruntime, the
# official onnxruntime backend when ONNXRS_BENCH_REFERENCE_BACKEND_DIR names one, and the
# in-process floor; MLP, ResNet-50 and BERT-base shaped models. Writes build/bench/results.json,
# build/bench/BENCHMARKS.md and build/bench/bench-*.png.
#   bash ci/bench.sh                 quick mode (under 5 minutes on 2 cores)
#   bash ci/bench.sh --full          full mode (HTTP and gRPC, more points, longer windows, 3 repeats)
#   bash ci/bench.sh --update-docs   (with either) also copy the report to BENCHMARKS.md and docs/
#                                    (sections of BENCHMARKS.md between <!-- NAME:begin/end --> kept)
#   bash ci/bench.sh --ahead         only the issue-12 scenarios (bench/ahead.py: per-run cost, one
#                                    session for many instances, shared thread pool, outputs without
#                                    a copy; under 5 minutes on 2 cores): build/bench/ahead.{json,md};
#                                    with --update-docs, ahead.md replaces BENCHMARKS.md's section
#                                    between <!-- ahead:begin --> and <!-- ahead:end --> (or is
#                                    appended), the rest untouched. ONNXRS_BENCH_WINDOW_MS shortens
#                                    its windows (default 2000) for a check that it works.
#   bash ci/bench.sh --memory        only memory under dynamic shapes (bench/memory.py: RSS and
#                                    memory_usage with and without arena shrinkage, one arena shared
#                                    by 4 models x 2 instances, its cap, what shrinkage costs; a few
#                                    minutes): build/bench/memory.{json,md}; with --update-docs,
#                                    memory.md replaces BENCHMARKS.md's section between
#                                    <!-- memory:begin --> and <!-- memory:end --> (or is appended).
#   bash ci/bench.sh --generate      only generation (bench/generate.py: a 5 M-parameter decoder served
#                                    by onnxrs to 1, 4 and 16 gRPC streams against ONNX Runtime GenAI
#                                    in-process, perf_analyzer's streams, and a plain model carrying
#                                    the KV cache; about 6 minutes): build/bench/generate.{json,md,png}; with --update-docs,
#                                    generate.md replaces BENCHMARKS.md's section between
#                                    <!-- generate:begin --> and <!-- generate:end --> (or is appended)
#                                    and the plot goes to docs/bench-generate.png.
#                                    `"$ONNXRS_PYTHON" bench/generate.py --quick` checks that it works.
#   bash ci/bench.sh --timings       only the cost of per-request timings in responses (bench/timings.py:
#                                    perf_analyzer off/on rounds at concurrency 1 and 16, and perf record
#                                    on the server; about 3 minutes): build/bench/timings.{json,md}; with
#                                    --update-docs, BENCHMARKS.md's <!-- timings:begin/end --> section.
#   bash ci/bench.sh --genai-perf    only genai-perf (PyPI genai-perf==0.0.16, installed once into
#                                    .deps/genai-perf) against onnxrs's HTTP generate_stream at
#                                    concurrency 1, 4 and 16 (bench/genai_perf.py; a few minutes):
#                                    build/bench/genai-perf.{json,md}; with --update-docs,
#                                    BENCHMARKS.md's <!-- genai-perf:begin/end --> section.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
mode=quick
update_docs=0
ahead=0
memory=0
generate=0
timings=0
genai_perf=0
for arg in "$@"; do
  case "$arg" in
    --full) mode=full ;;
    --update-docs) update_docs=1 ;;
    --ahead) ahead=1 ;;
    --memory) memory=1 ;;
    --generate) generate=1 ;;
    --timings) timings=1 ;;
    --genai-perf) genai_perf=1 ;;
    *) echo "unknown argument $arg (see the head of $0)"; exit 2 ;;
  esac
done
if [ "$ahead" = 1 ] && [ "$mode" = full ]; then
  echo "--ahead runs its own scenarios: it takes no --full"; exit 2
fi
bash ci/setup.sh >/dev/null

if [ "$memory" = 1 ]; then
  step "memory under dynamic shapes (bench/memory.py)"
  "$ONNXRS_PYTHON" bench/memory.py $([ "$update_docs" = 1 ] && echo --update-docs)
  exit 0
fi

step "benchmark models (random weights)"
"$ONNXRS_PYTHON" tests/models/make_bench_models.py build/bench-models

step "perf_analyzer 2.51 (wheel tritonclient==2.51.0)"
pa="$ONNXRS_DEPS/perf_analyzer"
if [ ! -x "$pa/perf_analyzer" ]; then
  fetch_wheel tritonclient==2.51.0 'tritonclient-2.51.0-*.whl'
  rm -rf "$pa" && mkdir -p "$pa/lib"
  unzip -q -j "$ONNXRS_DEPS"/wheels/tritonclient-2.51.0-*.whl 'tritonclient-2.51.0.data/data/bin/perf_analyzer' -d "$pa"
  chmod +x "$pa/perf_analyzer"
  # It needs libb64 and the CUDA runtime by soname; the Triton wheel carries both under hashed names.
  libs="$ONNXRS_DEPS/triton/nvidia_pytriton.libs"
  ln -sf "$(ls "$libs"/libb64-*.so.0d)" "$pa/lib/libb64.so.0d"
  ln -sf "$(ls "$libs"/libcudart-*.so.12*)" "$pa/lib/libcudart.so.12"
fi
LD_LIBRARY_PATH="$pa/lib" "$pa/perf_analyzer" --version 2>/dev/null | head -1 || true

if [ "$genai_perf" = 1 ]; then
  step "genai-perf 0.0.16 (PyPI) in its own virtual environment"
  gp="$ONNXRS_DEPS/genai-perf"
  if [ ! -x "$gp/bin/genai-perf" ]; then
    "$ONNXRS_PYTHON" -m venv "$gp"
    "$gp/bin/pip" install -q --disable-pip-version-check genai-perf==0.0.16
  fi
  step "genai-perf against onnxrs's generate_stream (bench/genai_perf.py)"
  "$ONNXRS_PYTHON" bench/genai_perf.py --genai-perf "$gp/bin/genai-perf" $([ "$update_docs" = 1 ] && echo --update-docs)
  exit 0
fi

if [ "$generate" = 1 ]; then
  step "generation: onnxrs streams against ONNX Runtime GenAI in-process (bench/generate.py)"
  "$ONNXRS_PYTHON" bench/generate.py $([ "$update_docs" = 1 ] && echo --update-docs)
  exit 0
fi

if [ "$timings" = 1 ]; then
  step "the cost of per-request timings in responses (bench/timings.py)"
  "$ONNXRS_PYTHON" bench/timings.py $([ "$update_docs" = 1 ] && echo --update-docs)
  exit 0
fi

if [ "$ahead" = 1 ]; then
  step "the per-run cost micro-benchmark (examples/run_cost.rs)"
  cargo build -j2 --release --locked --example run_cost

  step "where the server's CPU goes for a small model (bench/profile.py: perf record on tritonserver)"
  rm -f build/bench/profile.txt
  if ! command -v perf >/dev/null; then
    sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq linux-perf >/dev/null 2>&1 || true
  fi
  if command -v perf >/dev/null; then "$ONNXRS_PYTHON" bench/profile.py; else echo "no perf: skipped"; fi

  step "issue-12 scenarios (bench/ahead.py)"
  "$ONNXRS_PYTHON" bench/ahead.py
  if [ "$update_docs" = 1 ]; then
    step "BENCHMARKS.md: the section between <!-- ahead:begin --> and <!-- ahead:end --> from this run"
    "$ONNXRS_PYTHON" bench/ahead.py --splice-into BENCHMARKS.md
  fi
  exit 0
fi

step "the in-process floor (examples/bench_floor.rs)"
cargo build -j2 --release --locked --example bench_floor

step "benchmark ($mode mode)"
"$ONNXRS_PYTHON" bench/bench.py --mode "$mode"

step "the request log's cost on execute (examples/bench_request_log.rs)"
cargo build -j2 --release --locked --example bench_request_log
mkdir -p build/bench
target/release/examples/bench_request_log 200000 100000 | tee build/bench/request-log.json

if [ "$update_docs" = 1 ]; then
  step "BENCHMARKS.md and docs/bench-*.png from this run"
  # The report replaces the file; sections other scripts own (between markers) are kept.
  "$ONNXRS_PYTHON" bench/ahead.py --replace-docs build/bench/BENCHMARKS.md BENCHMARKS.md
  cp build/bench/bench-throughput.png build/bench/bench-stages.png docs/
fi
