#!/usr/bin/env bash
# Installs what onnxrs needs on a Debian 12 machine, builds it and installs the backend into
# .deps/install/backends/onnxrs. Idempotent: each step is skipped when its result is present.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"

step "system packages"
need=()
for pkg in libclang-dev cmake unzip curl valgrind binutils prometheus prometheus-alertmanager gcc gdb; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }

step "cargo-fuzz $ONNXRS_CARGO_FUZZ_VERSION (coverage-guided fuzzing on the stable toolchain: ci/fuzz.sh)"
if [ "$("$ONNXRS_DEPS/cargo/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $ONNXRS_CARGO_FUZZ_VERSION" ]; then
  cargo install -q cargo-fuzz --locked --version "=$ONNXRS_CARGO_FUZZ_VERSION" --root "$ONNXRS_DEPS/cargo"
fi

step "python environment ($ONNXRS_VENV)"
stamp="$ONNXRS_VENV/.requirements"
if ! cmp -s ci/requirements.txt "$stamp" 2>/dev/null; then
  python3 -m venv "$ONNXRS_VENV"
  "$ONNXRS_PYTHON" -m pip install -q --disable-pip-version-check -r ci/requirements.txt
  cp ci/requirements.txt "$stamp"
fi

step "tritonserver 2.51 (wheel nvidia-pytriton==0.7.0) and ONNX Runtime $ONNXRS_ORT_VERSION (wheel onnxruntime)"
fetch_wheel nvidia-pytriton==0.7.0 'nvidia_pytriton-0.7.0-*.whl'
fetch_wheel "onnxruntime==$ONNXRS_ORT_VERSION" "onnxruntime-$ONNXRS_ORT_VERSION-*.whl"
if [ ! -x "$ONNXRS_TRITONSERVER" ]; then
  rm -rf "$ONNXRS_DEPS/triton" && mkdir -p "$ONNXRS_DEPS/triton"
  unzip -q "$ONNXRS_DEPS"/wheels/nvidia_pytriton-0.7.0-*.whl 'pytriton/tritonserver/*' 'nvidia_pytriton.libs/*' \
    -d "$ONNXRS_DEPS/triton"
  chmod +x "$ONNXRS_TRITONSERVER"
fi
if [ ! -f "$ONNXRS_ORT_LIBRARY" ]; then
  rm -rf "$ONNXRS_DEPS/ort" && mkdir -p "$ONNXRS_DEPS/ort"
  unzip -q "$ONNXRS_DEPS"/wheels/onnxruntime-"$ONNXRS_ORT_VERSION"-*.whl 'onnxruntime/capi/libonnxruntime*' \
    -d "$ONNXRS_DEPS/ort"
fi

step "build and install the backend (cmake, delegating to cargo)"
cmake -S cmake -B build/cmake -DCMAKE_INSTALL_PREFIX="$ONNXRS_DEPS/install" \
  -DONNXRUNTIME_LIBRARY="$ONNXRS_ORT_LIBRARY" -DCARGO_TARGET_DIR="$ONNXRS_ROOT/target" >/dev/null
cmake --build build/cmake --target install
test -f "$ONNXRS_BACKEND_DIR/onnxrs/libtriton_onnxrs.so"
echo "backend installed in $ONNXRS_BACKEND_DIR/onnxrs:"
ls -1 "$ONNXRS_BACKEND_DIR/onnxrs"
