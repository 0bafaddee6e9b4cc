"""``--arch tiny``: a small conv net registered for the tests.

The engine's invariants (bit-exact resume, stop and resume, 2 x b == 1 x 2b,
bad-input handling that trains) do not depend on the network, so the tests
check them on this model: its checkpoint is a few MB where AlexNet's is
~460 MB written, hashed and fsynced, and a step takes milliseconds. AlexNet
stays in the end-to-end tests (the CLI run, the short training that must
raise mAP, export and inference).

tests/conftest.py (pytest_configure) and tests/support/cli.py import this
module, which registers the arch in the test process; a subprocess runs an
entry point with it (and without the engine's figures: ``skip_engine_plots``)
through ``TINY_PREFIX``:

    python -c "$TINY_PREFIX" main_single_gpu.py --arch tiny ...
"""
import os

import paddle
import paddle.nn as nn

import models
from models.backbone import HashModel, hash_linear

TINY = "tiny"
HIDDEN = 32


@models.register(TINY)
class TinyHashNet(HashModel):
    """conv 5x5/4 -> ReLU -> 4x4 average pool -> fc (dropout) -> hash layer."""
    min_crop = 16
    label = "the tiny test net"
    signature = "conv.weight"   # a key only this arch's checkpoints have

    def __init__(self, bit):
        super().__init__()
        self.bit = bit
        self.conv = nn.Conv2D(3, 8, 5, stride=4)
        self.pool = nn.AdaptiveAvgPool2D((4, 4))
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(8 * 4 * 4, HIDDEN), nn.ReLU())
        self.hash = hash_linear(HIDDEN, bit)

    @property
    def hash_layer(self):
        return self.hash

    def load_backbone(self, path):
        """Only random init: there are no pretrained weights for this net."""
        if path != "random":
            raise ValueError(f"--arch tiny takes only --backbone random, got {path!r}")

    def forward(self, x):
        x = self.pool(nn.functional.relu(self.conv(x)))
        return self.hash(self.fc(paddle.flatten(x, 1)))


def skip_engine_plots():
    """Let the engine skip its PNG figures (pr_curve, precision@N, training
    curve): matplotlib takes ~0.5-1.5 s a figure, three figures an
    evaluation, more than the tiny training itself. The figures' content is
    tested by tests/training/test_plots.py, and the AlexNet CLI run in
    tests/entrypoints/test_main_single_gpu.py (a subprocess, unpatched)
    checks the engine writes them. metrics.json is still written."""
    from utils.training import engine
    engine.save_evaluation_plots = lambda metrics, out_dir, title=None: []
    engine.save_training_plot = lambda history, path, title=None, unit="epoch": path


# ``python -c TINY_PREFIX script.py args...`` runs an entry point with the
# tiny arch registered (sys.argv as ``python script.py args...`` would set it).
TINY_PREFIX = (
    f"import sys, runpy; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
    "import tiny_model; tiny_model.skip_engine_plots(); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
