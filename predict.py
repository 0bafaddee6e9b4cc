"""Retrieve the database images nearest to one query image (dygraph model).

    python predict.py --bit 64 --dataset coco --data_path datasets/coco --img query.jpg
    python predict.py --bit 64 --dataset demo --data_path datasets/demo \\
        --pretrained output/demo/model_best_64 --crop_size 64 --resize_size 72 \\
        --img datasets/demo/images/001000.jpg --topk 10

Encodes the query, loads the database codes from the cache in --save_path
(or encodes data/<dataset>/database.txt and caches it; a cache made by other
weights, another list or other sizes is rebuilt: utils/retrieval/code_cache.py;
a list that only appends images has only those encoded), opens the --index
over them (built once, reused, extended by appended images: utils/retrieval/index/),
and prints the top-k by Hamming distance, ties in database order. In --save_path
it writes a copy of the nearest image (as the reference did), a montage
``retrieval_<query>_<bit>.png`` and the same results as JSON.

--pretrained defaults to output/model_best_<bit> (what training writes),
else the reference's released output/weights_<bit>.
"""
import argparse
import sys

import utils  # noqa: F401  (first: silences Paddle's import-time ccache warning)
import paddle

import models
from deploy.cli import add_retrieval_args, parse_retrieval_args, set_pipeline
from deploy.retrieve import Encoder, load_query, open_coded_database, retrieve
from utils.base.errors import run_cli
from utils.base.flags import BATCH, add
from utils.base.runtime import set_num_threads
from utils.inference.checkpoints import load_trained_model
from utils.inference.encoder import dygraph_forward, fastest_forward


def build_parser():
    p = argparse.ArgumentParser(description="HashNet single-image retrieval (dygraph)")
    add_retrieval_args(p)
    p.add_argument("--pretrained", default=None,
                   help="checkpoint path without .pdparams (default output/model_best_<bit>, "
                        "else output/weights_<bit>)")
    add(p, "-bs", "--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
        valid=BATCH, help="batch size for encoding the database")
    return p


@paddle.no_grad()
def main(argv):
    args = set_pipeline(parse_retrieval_args(build_parser(), argv))
    set_num_threads(args.num_threads)
    load_query(args)   # an unreadable query fails before anything is encoded
    model, weights = load_trained_model(args.bit, args.pretrained,
                                        args.arch or models.DEFAULT_ARCH)
    print(f"weights: {weights}")
    encoder = Encoder(query=dygraph_forward(model), files=(weights,),
                      database=lambda n: fastest_forward(model, n))
    return retrieve(args, encoder, open_coded_database(args, encoder, args.batch_size))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
