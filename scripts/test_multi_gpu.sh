#!/usr/bin/env bash
# Evaluate trained (or the reference's released) COCO weights data-parallel:
# each process encodes its shard of queries and database; mAP@5000 is
# computed on all codes, the same value as scripts/test_single_gpu.sh.
# Usage: COCO_PATH=/data/coco bash scripts/test_multi_gpu.sh [16|32|48|64 ...]
#   NPROCS=2   processes (default: every visible GPU; 2 on a CPU machine)
# Weights: output/coco_<bit>/model_best_<bit>.pdparams, or set WEIGHTS to a
# prefix containing {bit}, e.g. WEIGHTS=output/weights_{bit} for the released files.
source "$(dirname "$0")/recipe.sh"
for B in "${BITS[@]}"; do
  python main_multi_gpu.py ${NPROCS:+--nprocs "$NPROCS"} --eval "${RECIPE[@]}" --bit "$B" \
    --seed "${SEED[$B]}" -bs 64 --pretrained "${WEIGHTS//\{bit\}/$B}"
done
