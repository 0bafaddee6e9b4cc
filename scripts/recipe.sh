# The COCO recipe shared by scripts/{train,test}_{single,multi}_gpu.sh (sourced).
# Sets COCO_PATH, NUM_WORKERS, IMAGE_CACHE, WEIGHTS, SEED[bit], BITS (the caller's
# arguments, default all four) and RECIPE (the training flags common to 1 and N GPUs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COCO_PATH=${COCO_PATH:-datasets/coco}
NUM_WORKERS=${NUM_WORKERS:-4}  # JPEG decoding in worker processes keeps a GPU fed
# Decoded images, built on first use (~21 GB for COCO; docs/data.md: Image cache). IMAGE_CACHE= turns it off.
IMAGE_CACHE=${IMAGE_CACHE-output/image_cache}
DEFAULT_WEIGHTS='output/coco_{bit}/model_best_{bit}'  # (a literal } would end ${WEIGHTS:-...})
WEIGHTS=${WEIGHTS:-$DEFAULT_WEIGHTS}
# Seeds of the released runs per bit, read from utils/training/config.py RECIPE_SEEDS (their one home).
declare -A SEED
while read -r bit seed; do SEED[$bit]=$seed; done < <(
  python -c 'from utils.training.config import RECIPE_SEEDS; [print(b, s) for b, s in RECIPE_SEEDS.items()]')
BITS=("$@"); [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 48 64)
RECIPE=(--dataset coco --data-path "$COCO_PATH" -lr 1e-3 -e 150 -ee 10 --de_step 50
        --step_continuation 20 -op sgd -wd 5e-4 --momentum 0.9 --alpha 0.1
        --crop_size 224 --resize_size 256 --num_workers "$NUM_WORKERS"
        ${IMAGE_CACHE:+--image_cache "$IMAGE_CACHE"} --log_path logs)
