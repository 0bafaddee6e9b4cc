#!/usr/bin/env bash
# HashNet on COCO, data-parallel: the reference recipe with 64 images per GPU
# (2 GPUs: global batch 128, lr 1e-3 x 128/64 = 0.002), 150 epochs, β raised
# every 20 epochs. Each process trains on its shard: 79 steps per epoch on 2 GPUs.
# Usage: COCO_PATH=/data/coco bash scripts/train_multi_gpu.sh [16|32|48|64 ...]
#   NPROCS=2          processes per machine (default: every visible GPU; 2 on a CPU machine)
#   MASTER=IP:PORT    several machines: run this same script on each of them, MASTER
#   NNODES=2          being a free port on one of them (paddle.distributed.launch)
# COCO_PATH is the root the paths in data/coco/*.txt are relative to
# (python -m scripts.get_data coco puts both there); the ImageNet AlexNet
# backbone is --backbone imagenet, downloaded and converted on first use.
source "$(dirname "$0")/recipe.sh"
if [ -n "${MASTER:-}" ]; then
  RUN=(python -m paddle.distributed.launch --master "$MASTER" --nnodes "${NNODES:-2}"
       ${NPROCS:+--nproc_per_node "$NPROCS"} --log_dir logs/launch main_multi_gpu.py)
else
  RUN=(python main_multi_gpu.py ${NPROCS:+--nprocs "$NPROCS"})
fi
for B in "${BITS[@]}"; do
  "${RUN[@]}" "${RECIPE[@]}" --bit "$B" --seed "${SEED[$B]}" -bs 64 --output-dir "output/coco_$B"
done
