# Paths and small functions shared by the scripts in ci/ (sourced, not run). Everything installed
# lives under .deps/ in the checkout, so nothing outside it changes except Debian packages.
ONNXRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ONNXRS_ROOT
export ONNXRS_DEPS="$ONNXRS_ROOT/.deps"
export ONNXRS_VENV="$ONNXRS_DEPS/venv"
export ONNXRS_PYTHON="$ONNXRS_VENV/bin/python"
export ONNXRS_TRITONSERVER="$ONNXRS_DEPS/triton/pytriton/tritonserver/bin/tritonserver"
export ONNXRS_ORT_VERSION=1.31.1
export ONNXRS_ORT_LIBRARY="$ONNXRS_DEPS/ort/onnxruntime/capi/libonnxruntime.so.$ONNXRS_ORT_VERSION"
# The installed backend directory: pass it as --backend-directory.
export ONNXRS_BACKEND_DIR="$ONNXRS_DEPS/install/backends"
# cargo-fuzz, pinned, installed by setup.sh under .deps/cargo (first on PATH, so `cargo fuzz` is it).
export ONNXRS_CARGO_FUZZ_VERSION=0.13.2
export PATH="$ONNXRS_DEPS/cargo/bin:$PATH"

# The banner a script prints before each step.
step() { printf '\n== %s\n' "$*"; }

# Downloads a wheel into .deps/wheels/ unless a file matching GLOB is there already:
#   fetch_wheel NAME==VERSION GLOB [more `pip download` arguments]
fetch_wheel() {
  local spec=$1 glob=$2
  shift 2
  # shellcheck disable=SC2086 # GLOB is a pattern
  ls "$ONNXRS_DEPS"/wheels/$glob >/dev/null 2>&1 ||
    "$ONNXRS_PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$ONNXRS_DEPS/wheels" "$@" "$spec"
}
