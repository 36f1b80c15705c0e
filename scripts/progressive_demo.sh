#!/usr/bin/env bash
# Progressive learning (ABAW7 winner) end to end on the SYNTHETIC temporal sample, a few
# minutes on 2 cores: stage 1 (one task model per task) -> feature stores -> stage 2 (the
# joint model) -> strategy search -> per-video predictions. Run after scripts/setup.sh.
#   bash scripts/progressive_demo.sh [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
A=.venv/bin/affectkit
SAMPLE=${1:-affectkit-temporal}
OUT=runs/progressive-demo
TRACE=../shared/data/affwild2_va_sample/sample_labelfile_132-30-426x240.csv
trace=()
if [ -f "$TRACE" ]; then trace=(--va-trace "$TRACE"); fi  # the real Aff-Wild2 VA trace
$A data sample "$SAMPLE" --temporal --videos 8 --frames 300 "${trace[@]}"

# stage 1: one task model per task, each trained on its task's labels alone
S1=(progressive-demo-stage1 "data.root=$SAMPLE")
$A train "${S1[@]}" loss.au_weight=1 loss.expr_weight=0 loss.au_pos_weight=true \
  run.select_by=au_f1 "run.out_dir=$OUT/stage1-au"
$A train "${S1[@]}" "run.out_dir=$OUT/stage1-expr"
$A train "${S1[@]}" loss.expr_weight=0 loss.va_weight=1 run.select_by=va \
  "run.out_dir=$OUT/stage1-va"

# feature stores (stage 2 would extract them on first use; done here as its own step)
for t in au expr va; do
  for split in train val; do
    $A features "$OUT/stage1-$t" --data "$SAMPLE" --split "$split" \
      --out "$OUT/features/stage1-$t/$split"
  done
done

# stage 2: the joint model, then the strategy search over fusion / temporal / window /
# task-combination variants (each point a normal run; rerun to continue a killed search)
$A train progressive-demo "data.root=$SAMPLE"
$A search examples/search-progressive-demo.yaml

# predictions of the joint model for the validation videos, per video (ABAW format)
$A evaluate "$OUT/joint" --data "$SAMPLE" --split val
$A predict "$OUT/joint" --data "$SAMPLE" --split val --out "$OUT/predictions-val.txt"
