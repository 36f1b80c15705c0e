#!/usr/bin/env bash
# Quick start: set up, then run the main job on an embedded SYNTHETIC sample:
# write it in the real ABAW layouts, check it, train the demo-cnn recipe on it,
# and score the sample's prediction file as the challenge would.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SAMPLE=${1:-affectkit-sample}
.venv/bin/affectkit data sample "$SAMPLE" --frames 150
.venv/bin/affectkit data check "$SAMPLE"
.venv/bin/affectkit train demo-cnn "data.root=$SAMPLE" run.out_dir=runs/demo-cnn
.venv/bin/affectkit score --task mtl \
  --truth "$SAMPLE/validation_set_annotations.txt" \
  --pred "$SAMPLE/predictions/validation_predictions.txt"
