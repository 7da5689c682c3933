#!/usr/bin/env bash
# Serves the example model_repository/ with tritonserver and the onnxrs backend, installing and
# building whatever is missing first (ci/setup.sh). Ports: HTTP 8000, gRPC 8001, metrics 8002 on
# 127.0.0.1 (override with ONNXRS_HTTP_PORT / ONNXRS_GRPC_PORT / ONNXRS_METRICS_PORT). Extra
# arguments go to tritonserver. Ctrl-C stops it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
bash ci/setup.sh
"$ONNXRS_PYTHON" tests/models/make_models.py --example model_repository
http=${ONNXRS_HTTP_PORT:-8000}
cat <<MSG

== tritonserver on 127.0.0.1:$http. From another shell:
  curl -s -X POST 127.0.0.1:$http/v2/models/mlp/infer -H 'Content-Type: application/json' \\
    -d '{"inputs":[{"name":"X","shape":[1,16],"datatype":"FP32","data":[$(seq -s, 1 16)]}]}'
  curl -s 127.0.0.1:$http/v2/models/mlp/stats
  curl -s 127.0.0.1:${ONNXRS_METRICS_PORT:-8002}/metrics | grep nv_inference

MSG
exec "$ONNXRS_TRITONSERVER" --model-repository="$ONNXRS_ROOT/model_repository" \
  --backend-directory="$ONNXRS_BACKEND_DIR" \
  --http-address=127.0.0.1 --http-port="$http" \
  --grpc-address=127.0.0.1 --grpc-port="${ONNXRS_GRPC_PORT:-8001}" \
  --metrics-address=127.0.0.1 --metrics-port="${ONNXRS_METRICS_PORT:-8002}" "$@"
