"""paddle.hub on this repo (hubconf.py at the root, source='local')."""
import numpy as np
import paddle

import models
from support.paths import REPO


def test_hub_lists_the_entry_points_only():
    assert paddle.hub.list(REPO, source="local") == ["hashnet"]


def test_hub_load_returns_the_checkpoint_in_eval_mode(tmp_path):
    paddle.seed(3)
    trained = models.build("alexnet", 64)
    prefix = str(tmp_path / "model_best_64")
    paddle.save(trained.state_dict(), prefix + ".pdparams")
    model = paddle.hub.load(REPO, "hashnet", source="local", bit=64, pretrained=prefix)
    assert not model.training
    x = paddle.to_tensor(np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    trained.eval()
    with paddle.no_grad():   # exact: the same weights through the same kernels in this process
        np.testing.assert_array_equal(model(x).numpy(), trained(x).numpy())
    assert model(x).shape == [2, 64]


def test_hub_load_without_weights_is_untrained_and_in_eval_mode():
    model = paddle.hub.load(REPO, "hashnet", source="local", bit=16)
    assert not model.training and model.bit == 16
