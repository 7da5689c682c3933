#!/usr/bin/env bash
# On a GPU host, in a checkout of this repository with the parts that ci/gpu-bundle.sh made in
# build/gpu-bundle/: unpacks them, starts tritonserver with the GPU test models (explicit model
# control, loopback, free ports), runs tests/gpu/gpu_check.py and writes its report to
# ${ONNXRS_GPU_REPORT:-build/gpu-report.md}. Needs python3 with numpy, nvidia-smi and the CUDA 13
# libraries as pip packages (nvidia-*), as listed in ../shared/GPU.md.
set -euo pipefail
source "$(dirname "$0")/env.sh"
root=$ONNXRS_ROOT
cd "$root"
bundle="$root/build/gpu-bundle"
host="$root/build/gpu-host"
report="${ONNXRS_GPU_REPORT:-$root/build/gpu-report.md}"

step "what this host has"
nvidia-smi || { echo "nvidia-smi failed: no usable GPU here"; exit 1; }
python3 -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'

step "unpack the bundle"
if [ ! -x "$host/triton/pytriton/tritonserver/bin/tritonserver" ]; then
  (cd "$bundle" && sha256sum -c SHA256SUMS)
  rm -rf "$host" && mkdir -p "$host"
  cat "$bundle"/onnxrs-gpu.tar.xz.part-* | xz -d | tar -C "$host" -xf -
fi

step "CUDA libraries from the Python packages"
site=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')
libs=$(find "$site/nvidia" -maxdepth 2 -type d -name lib | paste -sd: -)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "$LD_LIBRARY_PATH" | tr ':' '\n'
ldd "$host/backends/onnxrs/libonnxruntime_providers_cuda.so" | grep -E "not found|cuda|cublas|cudnn" || true

step "tritonserver with the GPU models"
read -r http grpc metrics < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
log="$root/build/gpu-tritonserver.log"
"$host/triton/pytriton/tritonserver/bin/tritonserver" --model-repository="$host/models" \
  --backend-directory="$host/backends" --model-control-mode=explicit \
  --http-address=127.0.0.1 --http-port="$http" --grpc-address=127.0.0.1 --grpc-port="$grpc" \
  --metrics-address=127.0.0.1 --metrics-port="$metrics" --exit-timeout-secs=5 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 240); do
  curl -sf "127.0.0.1:$http/v2/health/live" >/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "tritonserver exited:"; tail -50 "$log"; exit 1; }
  sleep 0.5
done
curl -sf "127.0.0.1:$http/v2/health/live" >/dev/null || { echo "tritonserver not live after 120 s:"; tail -50 "$log"; exit 1; }

step "GPU check"
status=0
python3 tests/gpu/gpu_check.py --url="http://127.0.0.1:$http" --pid=$pid --report="$report" \
  --shared-model=mlp_gpu_shared --generator-model=decoder_gpu --generator-cpu-model=decoder_tiny || status=$?
if [ $status -ne 0 ]; then echo "== tritonserver log (tail)"; tail -80 "$log"; fi
exit $status
