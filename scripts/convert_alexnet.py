"""Convert ImageNet AlexNet weights to this project's backbone file (models/convert.py).

    python -m scripts.convert_alexnet alexnet-owt-7be5be79.pth models/AlexNet_pretrained.pdparams
    python -m scripts.convert_alexnet paddle_alexnet.pdparams models/AlexNet_pretrained.pdparams
"""
import argparse
import sys

from models.convert import convert, read_state
from utils.base.errors import run_cli


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="torchvision .pth or paddle.vision .pdparams")
    parser.add_argument("dst", help="output .pdparams (e.g. models/AlexNet_pretrained.pdparams)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    import paddle
    from utils.base.io import atomic_save
    state = convert(read_state(args.src))
    atomic_save({k: paddle.to_tensor(v) for k, v in state.items()}, args.dst)
    print(f"wrote {args.dst} ({len(state)} tensors)")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
