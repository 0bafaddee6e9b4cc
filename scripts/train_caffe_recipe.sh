#!/usr/bin/env bash
# HashNet on COCO with the authors' Caffe recipe (--recipe caffe; docs/training.md "The authors'
# Caffe recipe"): two streams of 256 images per iteration, their loss and gradient
# (α = 10/bit, class_num 1), β raised every 200 iterations, base_lr 5e-5 halved every
# 2000 iterations, 10,000 iterations, mAP@5000 over the queries that have a relevant
# database item. Settings from caffe/models/train/coco/{solver,train_val}.prototxt.
# Usage: COCO_PATH=/data/coco bash scripts/train_caffe_recipe.sh [16|32|48|64 ...]
#   NPROCS=2   data-parallel: 256/NPROCS images per stream per process (same global batch)
# COCO_PATH is the root the paths in data/coco/*.txt are relative to
# (python -m scripts.get_data coco puts both there); the ImageNet AlexNet
# backbone is --backbone imagenet, downloaded and converted on first use.
# IMAGE_CACHE as in scripts/recipe.sh (decoded images, docs/data.md: Image cache).
source "$(dirname "$0")/recipe.sh"
CAFFE=(--recipe caffe --dataset coco --data-path "$COCO_PATH" --max_iter 10000
       --eval_iter 10000 --snapshot_iter 1000 --base_lr 5e-5 --class_num 1
       -op sgd -wd 5e-4 --momentum 0.9 --crop_size 224 --resize_size 256
       --skip_no_relevant_in_database --num_workers "$NUM_WORKERS"
       ${IMAGE_CACHE:+--image_cache "$IMAGE_CACHE"} --log_path logs)
if [ -n "${NPROCS:-}" ]; then
  RUN=(python main_multi_gpu.py --nprocs "$NPROCS" -bs $((256 / NPROCS)))
else
  RUN=(python main_single_gpu.py -bs 256)
fi
for B in "${BITS[@]}"; do
  "${RUN[@]}" "${CAFFE[@]}" --bit "$B" --seed "${SEED[$B]}" --output-dir "output/coco_caffe_$B"
done
