#!/usr/bin/env bash
# Evaluate trained (or the reference's released) COCO weights: mAP@5000.
# Usage: COCO_PATH=/data/coco bash scripts/test_single_gpu.sh [16|32|48|64 ...]
# Weights: output/coco_<bit>/model_best_<bit>.pdparams, or set WEIGHTS to a
# prefix containing {bit}, e.g. WEIGHTS=output/weights_{bit} for the released files.
set -euo pipefail
cd "$(dirname "$0")/.."
COCO_PATH=${COCO_PATH:-datasets/coco}
DEFAULT_WEIGHTS='output/coco_{bit}/model_best_{bit}'
WEIGHTS=${WEIGHTS:-$DEFAULT_WEIGHTS}
declare -A SEED=([16]=0 [32]=2000 [48]=200 [64]=2000)
BITS=("$@"); [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 48 64)
for B in "${BITS[@]}"; do
  python main_single_gpu.py --eval --dataset coco --data-path "$COCO_PATH" --bit "$B" \
    --seed "${SEED[$B]}" -bs 128 --crop_size 224 --resize_size 256 \
    --pretrained "${WEIGHTS//\{bit\}/$B}" --log_path logs --num_workers "${NUM_WORKERS:-4}"
done
