"""Convert ImageNet AlexNet weights to this project's backbone file (models/convert.py):
``scripts.convert_backbone --arch alexnet``.

    python -m scripts.convert_alexnet alexnet-owt-7be5be79.pth models/AlexNet_pretrained.pdparams
    python -m scripts.convert_alexnet paddle_alexnet.pdparams models/AlexNet_pretrained.pdparams
"""
import sys

from scripts import convert_backbone
from utils.base.errors import run_cli


def main(argv):
    convert_backbone.main(["--arch", "alexnet", *argv])


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
