#!/usr/bin/env bash
# From a bare GPU machine to the paper's table of one dataset in one command:
#   1. data step (python -m scripts.get_data): the authors' lists, verified;
#      COCO's 2014 images downloaded; ImageNet-100's and NUS-WIDE-81's images
#      found in your copy (IMAGENET_PATH: your ILSVRC-2012 folder; NUSWIDE_PATH:
#      the authors' NUS-WIDE images); the ImageNet AlexNet weights
#   2. train each bit length with the recipe (scripts/recipe.sh, one GPU, batch 128)
#   3. evaluate its best checkpoint (mAP@R: 5000 COCO and NUS-WIDE, 1000 ImageNet)
#   4. a table of measured mAP next to the paper's (and, for COCO, the
#      reference Paddle reproduction's)
# Usage: bash scripts/reproduce.sh [coco|imagenet|nuswide_81] [16 32 48 64 ...]
#   (no dataset: coco)
# Environment: COCO_PATH / IMAGENET_PATH / NUSWIDE_PATH (default datasets/<dataset>),
#   COCO_LISTS / IMAGENET_LISTS / NUSWIDE_LISTS (default data/<dataset>),
#   REPRODUCE_OUT (default output);
#   HASHNET_DOWNLOAD_BASE / HASHNET_CHECKSUMS fetch from a mirror or a local
#   fixture server (utils/base/download.py); REPRODUCE_PRESET=tiny swaps in toy
#   training settings for that fixture data, to run the whole chain on a CPU.
DATASET=coco
case "${1:-}" in coco|imagenet|nuswide_81) DATASET=$1; shift ;; esac
source "$(dirname "$0")/recipe.sh"
OUT=${REPRODUCE_OUT:-output}
case "$DATASET" in
  coco) PRESET=coco DATA=$COCO_PATH LISTS=${COCO_LISTS:-data/coco} ;;
  imagenet) PRESET=imagenet DATA=${IMAGENET_PATH:-datasets/imagenet}
            LISTS=${IMAGENET_LISTS:-data/imagenet} ;;
  nuswide_81) PRESET=nuswide_81_m DATA=${NUSWIDE_PATH:-datasets/nuswide_81_m}
              LISTS=${NUSWIDE_LISTS:-data/nuswide_81_m} ;;
esac
RECIPE+=(--dataset "$PRESET" --data-path "$DATA" --list-dir "$LISTS")  # the last of a flag wins
SIZES=(-bs 128)
if [ "${REPRODUCE_PRESET:-recipe}" = tiny ]; then
  SIZES=(-bs 8 -e 1 -ee 1 --crop_size 64 --resize_size 72 --num_workers 0 --topK 10 --debug_steps 1)
fi
# the tables python -m scripts.compare_runs --reference has (the paper's numbers)
REFERENCE=()
if [ "$PRESET" != nuswide_81_m ]; then REFERENCE=(--reference "$PRESET"); fi
python -m scripts.get_data "$PRESET" --root "$DATA" --list-dir "$LISTS" --with-backbone
EVALS=()
for B in "${BITS[@]}"; do
  python main_single_gpu.py "${RECIPE[@]}" "${SIZES[@]}" --bit "$B" --seed "${SEED[$B]}" \
    --backbone imagenet --output-dir "$OUT/${PRESET}_$B" --log_path "$OUT/logs"
  python main_single_gpu.py --eval "${RECIPE[@]}" "${SIZES[@]}" --bit "$B" --seed "${SEED[$B]}" \
    --pretrained "$OUT/${PRESET}_$B/model_best_$B" --log_path "$OUT/logs"
  EVALS+=("$(ls -d "$OUT/logs/eval-$B-"* | tail -n 1)")
done
python -m scripts.compare_runs "${EVALS[@]}" --out "$OUT/compare" "${REFERENCE[@]}"
