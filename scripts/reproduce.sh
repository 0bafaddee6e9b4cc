#!/usr/bin/env bash
# From a bare GPU machine to the COCO table in one command:
#   1. data step: the authors' COCO lists, the COCO 2014 images and the
#      ImageNet AlexNet weights, verified (python -m scripts.get_data)
#   2. train each bit length with the recipe (scripts/recipe.sh, one GPU, batch 128)
#   3. evaluate its best checkpoint (mAP@5000)
#   4. a table of measured mAP next to the reference Paddle reproduction and the paper
# Usage: bash scripts/reproduce.sh [16 32 48 64 ...]
# Environment: COCO_PATH (default datasets/coco), COCO_LISTS (default data/coco),
#   REPRODUCE_OUT (default output);
#   HASHNET_DOWNLOAD_BASE / HASHNET_CHECKSUMS fetch from a mirror or a local
#   fixture server (utils/base/download.py); REPRODUCE_PRESET=tiny swaps in toy
#   training settings for that fixture data, to run the whole chain on a CPU.
source "$(dirname "$0")/recipe.sh"
OUT=${REPRODUCE_OUT:-output}
LISTS=${COCO_LISTS:-data/coco}
RECIPE+=(--list-dir "$LISTS")
SIZES=(-bs 128)
if [ "${REPRODUCE_PRESET:-recipe}" = tiny ]; then
  SIZES=(-bs 8 -e 1 -ee 1 --crop_size 64 --resize_size 72 --num_workers 0 --topK 10 --debug_steps 1)
fi
python -m scripts.get_data coco --root "$COCO_PATH" --list-dir "$LISTS" --with-backbone
EVALS=()
for B in "${BITS[@]}"; do
  python main_single_gpu.py "${RECIPE[@]}" "${SIZES[@]}" --bit "$B" --seed "${SEED[$B]}" \
    --backbone imagenet --output-dir "$OUT/coco_$B" --log_path "$OUT/logs"
  python main_single_gpu.py --eval "${RECIPE[@]}" "${SIZES[@]}" --bit "$B" --seed "${SEED[$B]}" \
    --pretrained "$OUT/coco_$B/model_best_$B" --log_path "$OUT/logs"
  EVALS+=("$(ls -d "$OUT/logs/eval-$B-"* | tail -n 1)")
done
python -m scripts.compare_runs "${EVALS[@]}" --out "$OUT/compare" --reference coco
