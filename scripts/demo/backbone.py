"""Pretrain the demo's AlexNet backbone: the stand-in for ImageNet weights.

HashNet fine-tunes an ImageNet-pretrained AlexNet; from random init its
codes collapse within the first epoch (every image gets the same code). The
demo has no ImageNet, so it pretrains AlexNet briefly as a multi-label
classifier (sigmoid cross-entropy) on the demo's *training* labels and saves
it in the backbone format that ``--backbone`` reads, the same path real
ImageNet weights take.

    python -m scripts.demo.backbone --data-path datasets/demo --out output/demo/alexnet_demo.pdparams
"""
import argparse
import sys
import time

import paddle
import paddle.nn.functional as F

from models.alexnet import AlexNet, disable_dropout
from utils.data.loaders import ImageList, build_loader, set_epoch
from utils.base.errors import run_cli
from utils.base.flags import (AT_LEAST_1, BATCH, MIN_CROP, NUM_CLASS, POSITIVE_FLOAT, SEED, SIDE,
                         THREADS, add, check_ranges, check_sizes)
from utils.base.io import atomic_save
from utils.training.schedules import base_lr, build_optimizer
from utils.base.runtime import available_cores, set_num_threads, set_seed


def he_init(model):
    """Kaiming-normal weights, zero biases. The recipe's Uniform(±1/sqrt(fan_in))
    shrinks activations about 3x per ReLU layer, so a fresh 7-layer AlexNet
    barely learns in a demo's few hundred steps; He init keeps their scale."""
    for layer in model.sublayers():
        if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear)):
            paddle.nn.initializer.KaimingNormal()(layer.weight)
            paddle.nn.initializer.Constant(0.0)(layer.bias)


def pretrain(loader, num_class, epochs, lr, log=print):
    """AlexNet trained ``epochs`` epochs at learning rate ``lr`` (as given to
    the optimizer, not per 64 images)."""
    model = AlexNet(num_classes=num_class)
    he_init(model)
    disable_dropout(model)  # dropout only slows a few-epoch run down
    # Momentum SGD as in the recipe. (Paddle's CPU AdamW also slowed every
    # later conv about 2x in this process, measured on a 2-core machine.)
    optimizer = build_optimizer("sgd", model.parameters(), lr, weight_decay=5e-4)
    model.train()
    for epoch in range(1, epochs + 1):
        set_epoch(loader, epoch)
        start, total = time.time(), 0.0
        for x, y, _ in loader:
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad(set_to_zero=False)
            total += float(loss)
        log(f"backbone pretraining epoch {epoch}/{epochs}: BCE {total / len(loader):.4f} "
            f"({time.time() - start:.1f}s)")
    return model


def main(argv):
    p = argparse.ArgumentParser(description="pretrain the demo's AlexNet backbone")

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--data-path", default="datasets/demo")
    a("--list", default="data/demo/train.txt", help="training list")
    a("--num_class", type=int, default=10, valid=NUM_CLASS)
    a("--out", default="output/demo/alexnet_demo.pdparams")
    a("--epochs", type=int, default=3, valid=AT_LEAST_1)
    a("-lr", "--learning_rate", type=float, default=8e-2, valid=POSITIVE_FLOAT,
      help="for a batch of 64, scaled by the batch size (as in training)")
    a("-bs", "--batch-size", dest="batch_size", type=int, default=16, valid=BATCH)
    a("--crop_size", type=int, default=64, valid=SIDE, help=f"at least {MIN_CROP} for AlexNet")
    a("--resize_size", type=int, default=72, valid=SIDE, help="at least --crop_size")
    a("--seed", type=int, default=0, valid=SEED)
    a("--num_threads", type=int, default=available_cores(), valid=THREADS)
    a("--debug", action="store_true")
    args = check_ranges(p, p.parse_args(argv))
    check_sizes(args.crop_size, args.resize_size)
    set_num_threads(args.num_threads)
    set_seed(args.seed)
    data = ImageList(args.list, args.data_path, args.num_class, train=True,
                     resize_size=args.resize_size, crop_size=args.crop_size, seed=args.seed)
    data.check_files()
    loader = build_loader(data, args.batch_size, shuffle=True, seed=args.seed)
    model = pretrain(loader, args.num_class, args.epochs,
                     base_lr(args.learning_rate, args.batch_size))
    atomic_save(model.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
