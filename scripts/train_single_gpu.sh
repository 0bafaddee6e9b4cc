#!/usr/bin/env bash
# HashNet on COCO, one GPU: the reference recipe (batch 128, lr 1e-3 for a
# batch of 64 scaled linearly, 150 epochs, β raised every 20 epochs).
# Usage: COCO_PATH=/data/coco bash scripts/train_single_gpu.sh [16|32|48|64 ...]
# COCO_PATH is the root the paths in data/coco/*.txt are relative to
# (python -m scripts.get_data coco puts both there); the ImageNet AlexNet
# backbone is --backbone imagenet, downloaded and converted on first use.
source "$(dirname "$0")/recipe.sh"
for B in "${BITS[@]}"; do
  python main_single_gpu.py "${RECIPE[@]}" --bit "$B" --seed "${SEED[$B]}" -bs 128 \
    --output-dir "output/coco_$B"
done
