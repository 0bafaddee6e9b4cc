"""Train or evaluate HashNet data-parallel: one process per GPU, same engine
as main_single_gpu.py (it differs only in how the processes are started).

    python main_multi_gpu.py --dataset coco --data-path datasets/coco --bit 64 --seed 2000
    python main_multi_gpu.py --nprocs 2 ...          # CPU only: 2 gloo processes
    python -m paddle.distributed.launch --nproc_per_node 2 main_multi_gpu.py ...
    python -m paddle.distributed.launch --nnodes 2 --ips IP1,IP2 --nproc_per_node 2 \\
        main_multi_gpu.py ...                        # run the same on every node

--batch-size is per process (default 64); the learning rate is scaled by the
global batch (spec §3): 2 processes x 64 train at lr 0.002. Each process
trains on its shard of the data: 79 steps per epoch on COCO with 2 processes.
"""
import sys

from utils.training.config import parse_args
from utils.base.distributed import launch
from utils.training.engine import run
from utils.base.errors import run_cli


def main(argv):
    launch(run, parse_args(argv, batch_size=64))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
