#!/usr/bin/env bash
# The benchmark (see ci/bench.py): onnxrs against Triton's Python backend with onnxruntime, the
# official onnxruntime backend when ONNXRS_BENCH_REFERENCE_BACKEND_DIR names one, and the
# in-process floor; MLP, ResNet-50 and BERT-base shaped models. Writes build/bench/results.json,
# BENCHMARKS.md and docs/bench-*.png.
#   bash ci/bench.sh            quick mode (under 5 minutes on 2 cores)
#   bash ci/bench.sh --full     full mode (HTTP and gRPC, more points, longer windows, 3 repeats)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
mode=quick
[ "${1:-}" = "--full" ] && mode=full
bash ci/setup.sh >/dev/null

printf '\n== benchmark models (random weights)\n'
"$ONNXRS_PYTHON" tests/models/make_bench_models.py build/bench-models

printf '\n== perf_analyzer 2.51 (wheel tritonclient==2.51.0)\n'
pa="$ONNXRS_DEPS/perf_analyzer"
if [ ! -x "$pa/perf_analyzer" ]; then
  ls "$ONNXRS_DEPS"/wheels/tritonclient-2.51.0-*.whl >/dev/null 2>&1 ||
    "$ONNXRS_PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$ONNXRS_DEPS/wheels" tritonclient==2.51.0
  rm -rf "$pa" && mkdir -p "$pa/lib"
  unzip -q -j "$ONNXRS_DEPS"/wheels/tritonclient-2.51.0-*.whl 'tritonclient-2.51.0.data/data/bin/perf_analyzer' -d "$pa"
  chmod +x "$pa/perf_analyzer"
  # It needs libb64 and the CUDA runtime by soname; the Triton wheel carries both under hashed names.
  libs="$ONNXRS_DEPS/triton/nvidia_pytriton.libs"
  ln -sf "$(ls "$libs"/libb64-*.so.0d)" "$pa/lib/libb64.so.0d"
  ln -sf "$(ls "$libs"/libcudart-*.so.12*)" "$pa/lib/libcudart.so.12"
fi
LD_LIBRARY_PATH="$pa/lib" "$pa/perf_analyzer" --version 2>/dev/null | head -1 || true

printf '\n== the in-process floor (examples/bench_floor.rs)\n'
cargo build -j2 --release --locked --example bench_floor

printf '\n== benchmark (%s mode)\n' "$mode"
"$ONNXRS_PYTHON" ci/bench.py --mode "$mode"
