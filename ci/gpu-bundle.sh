#!/usr/bin/env bash
# Prepares what a GPU host needs to run the GPU checks (see ../shared/GPU.md): the backend built
# here, ONNX Runtime's CUDA build (wheel onnxruntime-gpu==1.31.1, CUDA 13), tritonserver 2.51 with
# its libraries, and the GPU test models, as build/gpu-bundle/onnxrs-gpu.tar.xz split into 60 MB
# parts (a transfer to the device carries at most 64 MiB). On the host: `bash ci/gpu-run.sh` in a
# checkout of this repository with the parts in build/gpu-bundle/.
# ONNXRS_GPU_XZ_LEVEL (default 9) trades bundle size for compression time.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
bash ci/setup.sh >/dev/null

step "wheel onnxruntime-gpu==$ONNXRS_ORT_VERSION (manylinux_2_28, CPython 3.12)"
fetch_wheel "onnxruntime-gpu==$ONNXRS_ORT_VERSION" "onnxruntime_gpu-$ONNXRS_ORT_VERSION-*.whl" \
  --python-version 3.12 --platform manylinux_2_28_x86_64

step "staging"
stage="$ONNXRS_ROOT/build/gpu-stage"
rm -rf "$stage" && mkdir -p "$stage/backends/onnxrs" "$stage/triton" "$stage/models"
cp "$ONNXRS_BACKEND_DIR/onnxrs/libtriton_onnxrs.so" "$stage/backends/onnxrs/"
unzip -q -j "$ONNXRS_DEPS"/wheels/onnxruntime_gpu-"$ONNXRS_ORT_VERSION"-*.whl \
  "onnxruntime/capi/libonnxruntime.so.$ONNXRS_ORT_VERSION" \
  'onnxruntime/capi/libonnxruntime_providers_cuda.so' 'onnxruntime/capi/libonnxruntime_providers_shared.so' \
  -d "$stage/backends/onnxrs"
ln -s "libonnxruntime.so.$ONNXRS_ORT_VERSION" "$stage/backends/onnxrs/libonnxruntime.so"
# tritonserver finds its libraries through its RPATH: keep the wheel's layout.
cp -a "$ONNXRS_DEPS/triton/pytriton" "$ONNXRS_DEPS/triton/nvidia_pytriton.libs" "$stage/triton/"
models="$ONNXRS_ROOT/build/test-models"
"$ONNXRS_PYTHON" tests/models/make_models.py "$models" >/dev/null
for m in mlp_gpu mlp_gpu_shared two_io_dyn_gpu mlp_fp32 decoder_gpu decoder_tiny; do cp -r "$models/$m" "$stage/models/"; done
du -sh "$stage"/*

step "compress (xz -${ONNXRS_GPU_XZ_LEVEL:-9}) and split"
out="$ONNXRS_ROOT/build/gpu-bundle"
rm -rf "$out" && mkdir -p "$out"
tar -C "$stage" -cf - . | xz -T2 "-${ONNXRS_GPU_XZ_LEVEL:-9}" | split -b 60M - "$out/onnxrs-gpu.tar.xz.part-"
(cd "$out" && sha256sum onnxrs-gpu.tar.xz.part-* > SHA256SUMS)
ls -l "$out"
