#!/usr/bin/env bash
# Evaluate trained (or the reference's released) COCO weights: mAP@5000.
# Usage: COCO_PATH=/data/coco bash scripts/test_single_gpu.sh [16|32|48|64 ...]
# Weights: output/coco_<bit>/model_best_<bit>.pdparams, or set WEIGHTS to a
# prefix containing {bit}, e.g. WEIGHTS=output/weights_{bit} for the released files.
source "$(dirname "$0")/recipe.sh"
for B in "${BITS[@]}"; do
  python main_single_gpu.py --eval "${RECIPE[@]}" --bit "$B" --seed "${SEED[$B]}" -bs 128 \
    --pretrained "${WEIGHTS//\{bit\}/$B}"
done
