#!/usr/bin/env bash
# Create .venv (if absent) and install affectkit with its test extras.
# torch/torchvision are pinned to the releases CI uses; pip takes them from the
# local wheel cache where one exists, else from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test,onnx]"
# face detection (affectkit.faces.mtcnn) runs on the MTCNN weight files this wheel ships;
# --no-deps: its pins (torch<2.3, numpy<2) are for modules affectkit never imports
.venv/bin/python -m pip install -q --no-deps "facenet-pytorch==2.6.0"
.venv/bin/affectkit --version
