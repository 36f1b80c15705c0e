#!/usr/bin/env bash
# .venv-fer: the `fer` package (the peer of benchmarks/bench_analyze.py) in an environment
# of its own: it needs TensorFlow, which affectkit never installs. fer itself goes in with
# --no-deps: it lists facenet-pytorch (so torch<2.3) for its optional MTCNN, which the peer
# does not use (fer's default detector is OpenCV's Haar cascade).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-fer/bin/python ]; then
  "$PY" -m venv .venv-fer
fi
.venv-fer/bin/python -m pip install -q tensorflow-cpu "opencv-contrib-python<5" pandas \
  "moviepy>=1.0.3,<2" "ffmpeg-python>=0.2.0" matplotlib requests "tqdm>=4.62.1" Pillow \
  "setuptools<81"  # fer imports pkg_resources
.venv-fer/bin/python -m pip install -q --no-deps "fer==25.10.3"
.venv-fer/bin/python -c "import fer, tensorflow as tf; print('fer peer ready: tensorflow', tf.__version__)"
