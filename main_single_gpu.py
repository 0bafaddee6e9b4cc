"""Train or evaluate HashNet in one process (one GPU, or the CPU).

    python main_single_gpu.py --dataset coco --data-path datasets/coco --bit 64 --seed 2000
    python main_single_gpu.py --eval --pretrained output/model_best_64 --bit 64
"""
import sys

from utils.training.config import parse_args
from utils.training.engine import run
from utils.base.errors import run_cli


def main(argv):
    run(parse_args(argv, batch_size=128))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
