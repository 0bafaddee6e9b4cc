"""Convert ImageNet weights to an arch's backbone file (models/convert.py):
torchvision's .pth (torch is needed for this step only) or paddle.vision's
.pdparams, of every arch in models.convert.BACKBONES.

    python -m scripts.convert_backbone --arch vgg16 vgg16-397923af.pth models/vgg16_torchvision.pdparams
    python -m scripts.convert_backbone --arch resnet50 resnet50-19c8e357.pth models/resnet50_torchvision.pdparams

Then train with ``--arch vgg16 --backbone models/vgg16_torchvision.pdparams``.
"""
import argparse
import sys

from models.convert import BACKBONES, read_state
from utils.base.errors import run_cli


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="alexnet", choices=sorted(BACKBONES),
                        help="the --arch the backbone file is for")
    parser.add_argument("src", help="torchvision .pth or paddle.vision .pdparams")
    parser.add_argument("dst", help="output .pdparams (pass it to training as --backbone)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    import paddle
    from utils.base.io import atomic_save
    state = BACKBONES[args.arch](read_state(args.src))
    atomic_save({k: paddle.to_tensor(v) for k, v in state.items()}, args.dst)
    print(f"wrote {args.dst} ({len(state)} tensors, --arch {args.arch})")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
