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

from deploy.cli import BATCH, add, add_retrieval_args, parse_retrieval_args, query_pipeline_of
from deploy.database import (database_code_cache, database_index, database_loader,
                             database_search_index, database_tail, open_database)
from deploy.report import write_retrieval_report
from deploy.search import search_database
from models.hashnet import load_hashnet, sign_codes
from utils.datasets import load_query_image
from utils.inference.encoder import encode_batches, fastest_forward
from utils.base.errors import run_cli
from utils.base.runtime import set_num_threads


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
    args = parse_retrieval_args(build_parser(), argv)
    set_num_threads(args.num_threads)
    db = open_database(args)
    query = load_query_image(args.img, args.resize_size, args.crop_size,
                             upright=not args.ignore_exif_orientation,
                             pipeline=query_pipeline_of(args))
    model, weights = load_hashnet(args.bit, args.pretrained, args.arch or "alexnet")
    query_code = sign_codes(model(paddle.to_tensor(query)))
    print(f"weights: {weights}")

    def build(start=0):   # the forward a full rebuild uses, also for appended images
        loader = database_loader(database_tail(db, start), args.batch_size)
        codes, labels, _ = encode_batches(fastest_forward(model, len(db)), loader,
                                          "encoding database")
        return codes, labels

    cache = database_code_cache(args, [weights])
    packed, labels, source = cache.get(build, len(db), args.rebuild_cache, (db.paths, db.labels))
    index = database_search_index(args, cache, packed)
    indices, distances = search_database(query_code, packed, args.topk,
                                         database_index(args.img, db), index)
    return write_retrieval_report(args, db, indices[0], distances[0],
                                  db.labels if labels is None else labels, source)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
