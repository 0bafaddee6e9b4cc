"""utils/training/step.py: a step on a non-finite loss leaves the parameters
and the momentum as they were."""
import math

import numpy as np
import paddle

from support.weights import assert_same


def test_non_finite_loss_takes_no_step():
    """The real train_step on a batch with a NaN image: the loss is NaN, and
    neither the parameters nor the momentum move; the next finite batch
    trains normally (no NaN gradient left behind)."""
    from support.weights import state_numpy
    from utils.methods.hashnet import HashNetLoss
    from utils.training.schedules import build_optimizer
    from utils.training.step import train_step
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(12, 8))
    criterion = HashNetLoss(6, 8, 3)
    optimizer = build_optimizer("sgd", model.parameters(), 0.5, 5e-4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2, 2)).astype("float32")
    y = paddle.to_tensor(np.eye(3, dtype="float32")[[0, 1, 0, 2]])
    ind = paddle.to_tensor(np.array([0, 1, 2, 3]))
    value = train_step(model, criterion, optimizer, paddle.to_tensor(x), y, ind)
    assert math.isfinite(value)
    before = state_numpy(model), {k: np.asarray(v) for k, v in optimizer.state_dict().items()
                                  if "velocity" in k}
    poisoned = x.copy()
    poisoned[1, 0, 0, 0] = np.nan
    value = train_step(model, criterion, optimizer, paddle.to_tensor(poisoned), y, ind)
    assert math.isnan(value)
    after = state_numpy(model), {k: np.asarray(v) for k, v in optimizer.state_dict().items()
                                 if "velocity" in k}
    for was, now in zip(before, after):   # exact: untouched, the same bits
        assert was.keys() == now.keys() and was
        for key in was:
            assert_same(now[key], was[key], key)
    value = train_step(model, criterion, optimizer, paddle.to_tensor(x), y, ind)
    assert math.isfinite(value)
    moved = state_numpy(model)
    assert all(np.isfinite(v).all() for v in moved.values())
    assert any(not np.array_equal(moved[k], before[0][k]) for k in moved)
