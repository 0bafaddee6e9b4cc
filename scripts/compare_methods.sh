#!/usr/bin/env bash
# HashNet's comparison (every method, every ablation, the shallow baselines)
# under one protocol: python -m scripts.compare_methods with the settings of
# one scale.
#   demo        the demo set at the demo's scale (64 px crops of 72 px images,
#               batch 16, 2 epochs, β raised every epoch, seed 0: scripts/demo.sh's
#               settings); its data and backbone are the demo's (bash
#               scripts/demo.sh runs first when they are missing); a 2-core CPU
#   imagenet | nuswide_81 | coco
#               the paper's data at the recipe's scale (224 px crops, each
#               method's official lr, epochs and optimizer, batch 64, the
#               ImageNet AlexNet backbone); the lists via python -m scripts.get_data
#               (ImageNet and NUS-WIDE images are your copy: DATA_PATH); a GPU
# Usage: bash scripts/compare_methods.sh demo|imagenet|nuswide_81|coco [bits...]
# Environment: DATA_PATH, LISTS (default datasets/<dataset>, data/<dataset>),
#   COMPARE_OUT (default output/compare_<dataset>), METHODS (default all).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?usage: bash scripts/compare_methods.sh demo|imagenet|nuswide_81|coco [bits...]}
shift
BITS=("$@")
METHODS=${METHODS:-all}
case "$SCALE" in
  demo)
    DATASET=demo
    [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 64)
    BACKBONE=output/demo/alexnet_demo_backbone.pdparams
    if [ ! -f "$BACKBONE" ] || [ ! -f data/demo/database.txt ]; then bash scripts/demo.sh; fi
    FLAGS=(--crop_size 64 --resize_size 72 -bs 16 -e 2 -ee 1 --step_continuation 1 --seed 0)
    ;;
  imagenet|nuswide_81|coco)
    DATASET=$([ "$SCALE" = nuswide_81 ] && echo nuswide_81_m || echo "$SCALE")
    [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 48 64)
    BACKBONE=imagenet
    python -m scripts.get_data "$DATASET" --root "${DATA_PATH:-datasets/$DATASET}" \
      --list-dir "${LISTS:-data/$DATASET}" --with-backbone
    FLAGS=(--crop_size 224 --resize_size 256 -bs 64 -ee 10 --num_workers 4)
    ;;
  *) echo "error: unknown scale $SCALE (demo, imagenet, nuswide_81 or coco)" >&2; exit 2 ;;
esac
DATA_PATH=${DATA_PATH:-datasets/$DATASET}
LISTS=${LISTS:-data/$DATASET}
# shellcheck disable=SC2086  # METHODS is a list of names
python -m scripts.compare_methods --dataset "$DATASET" --data-path "$DATA_PATH" --list-dir "$LISTS" \
  --backbone "$BACKBONE" --bits "${BITS[@]}" --methods $METHODS \
  --out "${COMPARE_OUT:-output/compare_$SCALE}" -- "${FLAGS[@]}"
