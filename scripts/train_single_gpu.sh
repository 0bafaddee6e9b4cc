#!/usr/bin/env bash
# HashNet on COCO, one GPU: the reference recipe (batch 128, lr 1e-3 for a
# batch of 64 scaled linearly, 150 epochs, β raised every 20 epochs).
# Usage: COCO_PATH=/data/coco bash scripts/train_single_gpu.sh [16|32|48|64 ...]
# COCO_PATH is the root the paths in data/coco/*.txt are relative to; the
# ImageNet AlexNet backbone is read from models/AlexNet_pretrained.pdparams.
set -euo pipefail
cd "$(dirname "$0")/.."
COCO_PATH=${COCO_PATH:-datasets/coco}
NUM_WORKERS=${NUM_WORKERS:-4}  # JPEG decoding in worker processes keeps a GPU fed
declare -A SEED=([16]=0 [32]=2000 [48]=200 [64]=2000)  # seeds of the released runs
BITS=("$@"); [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 48 64)
for B in "${BITS[@]}"; do
  python main_single_gpu.py --dataset coco --data-path "$COCO_PATH" --bit "$B" --seed "${SEED[$B]}" \
    -bs 128 -lr 1e-3 -e 150 -ee 10 --de_step 50 --step_continuation 20 -op sgd -wd 5e-4 \
    --momentum 0.9 --alpha 0.1 --crop_size 224 --resize_size 256 --num_workers "$NUM_WORKERS" \
    --log_path logs --output-dir "output/coco_$B"
done
