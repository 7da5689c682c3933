#!/usr/bin/env bash
# The long load/unload soak: the storms of tests/test_lifecycle.py at full length, apart from the
# test command (which runs them short enough to stay deterministic). A server that dies prints its
# log and the faulting thread's frames; say in the reliability report whether they are ours.
#   bash ci/soak.sh [CYCLES per storm, default 20000] [more pytest arguments]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ONNXRS_ROOT"
bash ci/setup.sh
export ONNXRS_TEST_MODELS="$ONNXRS_ROOT/build/test-models"
"$ONNXRS_PYTHON" tests/models/make_models.py "$ONNXRS_TEST_MODELS"
export ONNXRS_LIFECYCLE_CYCLES="${1:-20000}"
shift || true
step "load/unload soak: $ONNXRS_LIFECYCLE_CYCLES cycles per storm"
"$ONNXRS_PYTHON" -m pytest -q -ra tests/test_lifecycle.py -k storm "$@"
