#!/usr/bin/env bash
# HashNet on COCO, data-parallel: the reference recipe with 64 images per GPU
# (2 GPUs: global batch 128, lr 1e-3 x 128/64 = 0.002), 150 epochs, β raised
# every 20 epochs. Each process trains on its shard: 79 steps per epoch on 2 GPUs.
# Usage: COCO_PATH=/data/coco bash scripts/train_multi_gpu.sh [16|32|48|64 ...]
#   NPROCS=2          processes per machine (default: every visible GPU; 2 on a CPU machine)
#   MASTER=IP:PORT    several machines: run this same script on each of them, MASTER
#   NNODES=2          being a free port on one of them (paddle.distributed.launch)
# COCO_PATH is the root the paths in data/coco/*.txt are relative to; the
# ImageNet AlexNet backbone is read from models/AlexNet_pretrained.pdparams.
set -euo pipefail
cd "$(dirname "$0")/.."
COCO_PATH=${COCO_PATH:-datasets/coco}
NUM_WORKERS=${NUM_WORKERS:-4}  # JPEG decoding in worker processes keeps a GPU fed
declare -A SEED=([16]=0 [32]=2000 [48]=200 [64]=2000)  # seeds of the released runs
BITS=("$@"); [ ${#BITS[@]} -gt 0 ] || BITS=(16 32 48 64)
if [ -n "${MASTER:-}" ]; then
  RUN=(python -m paddle.distributed.launch --master "$MASTER" --nnodes "${NNODES:-2}"
       ${NPROCS:+--nproc_per_node "$NPROCS"} --log_dir logs/launch main_multi_gpu.py)
else
  RUN=(python main_multi_gpu.py ${NPROCS:+--nprocs "$NPROCS"})
fi
for B in "${BITS[@]}"; do
  "${RUN[@]}" --dataset coco --data-path "$COCO_PATH" --bit "$B" --seed "${SEED[$B]}" \
    -bs 64 -lr 1e-3 -e 150 -ee 10 --de_step 50 --step_continuation 20 -op sgd -wd 5e-4 \
    --momentum 0.9 --alpha 0.1 --crop_size 224 --resize_size 256 --num_workers "$NUM_WORKERS" \
    --log_path logs --output-dir "output/coco_$B"
done
