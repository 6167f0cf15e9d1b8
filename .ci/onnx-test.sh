#!/usr/bin/env bash
# ONNX Runtime conformance (docs/onnx.md): convnet's exports must give
# convnet's probabilities in ONNX Runtime to 1e-5, and "PyTorch-style"
# models built with the onnx package must import and give ONNX Runtime's
# outputs. Sets up .venv-onnx (onnxruntime, onnx, numpy from PyPI) once.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-onnx
if ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy" >/dev/null 2>&1; then
    echo "== setting up $venv (onnxruntime, onnx, numpy)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime onnx numpy
fi

out=target/onnx-conformance
rm -rf "$out"
echo "== exporting the models with convnet's probabilities on test digits"
CONVNET_ONNX_OUT="$out" cargo test --quiet --test onnx conformance_fixtures
echo "== ONNX Runtime on convnet's exports; writing PyTorch-style models"
"$venv/bin/python" tests/onnx/check_onnxruntime.py "$out" "$@"
echo "== importing the PyTorch-style models into convnet"
CONVNET_ONNX_FOREIGN="$out/foreign" cargo test --quiet --test onnx foreign_models_match_onnxruntime
