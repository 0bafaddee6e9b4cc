#!/usr/bin/env bash
# Evaluate trained (or the reference's released) COCO weights data-parallel:
# each process encodes its shard of queries and database; mAP@5000 is
# computed on all codes, the same value as scripts/test_single_gpu.sh.
# Usage: COCO_PATH=/data/coco bash scripts/test_multi_gpu.sh [16|32|48|64 ...]
#   NPROCS=2   processes (default: every visible GPU; 2 on a CPU machine)
# Weights: output/coco_<bit>/model_best_<bit>.pdparams, or set WEIGHTS to a
# prefix containing {bit}, e.g. WEIGHTS=output/weights_{bit} for the released files.
set -euo pipefail
cd "$(dirname "$0")/.."
COCO_PATH=${COCO_PATH:-datasets/coco}
DEFAULT_WEIGHTS='output/coco_{bit}/model_best_{bit}'  # (a literal } would end ${WEIGHTS:-...})
WEIGHTS=${WEIGHTS:-$DEFAULT_WEIGHTS}
declare -A SEED=([16]=0 [32]=2000 [48]=200 [64]=2000)
BITS=("$@"); [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 48 64)
for B in "${BITS[@]}"; do
  python main_multi_gpu.py ${NPROCS:+--nprocs "$NPROCS"} --eval --dataset coco \
    --data-path "$COCO_PATH" --bit "$B" --seed "${SEED[$B]}" -bs 64 --crop_size 224 \
    --resize_size 256 --pretrained "${WEIGHTS//\{bit\}/$B}" --log_path logs --num_workers "${NUM_WORKERS:-4}"
done
