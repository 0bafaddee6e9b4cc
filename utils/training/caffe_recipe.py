"""The authors' Caffe recipe (``--recipe caffe``, spec §8): only what differs
from the reference recipe — two streams of batches, the loss on their pairs,
iteration schedules, and the loop over iterations. Evaluation, checkpoints,
logging and the training step itself are the engine's (utils/training/engine.py).

Source: github.com/thuml/HashNet, ``caffe/`` (the code behind the paper's
table): models/train/<dataset>/{train_val,solver}.prototxt and the layers
src/caffe/layers/{pairwise_loss,scale_tanh}_layer.*.
"""
import math
import time

import numpy as np
import paddle
import paddle.nn as nn

from utils import distributed as dist
from utils.training import engine
from utils.base.checkpoint import load_training_state, load_weights, newest_checkpoint
from utils.datasets import BatchLoader
from utils.base.errors import UserError
from utils.base.io import ensure_writable_dir
from utils.loss import CaffePairwiseLoss

# train_val.prototxt "continuation" (ScaleTanH) and solver.prototxt "step" policy
BETA_STEP, BETA_GAMMA, BETA_POWER = 200, 0.005, 0.5
LR_STEP, LR_GAMMA = 2000, 0.5
# lr_mult / decay_mult of train_val.prototxt: conv1-fc7, then the hash layer (fc8_flickr)
BACKBONE_MULT = {"weight": (1.0, 1.0), "bias": (2.0, 0.0)}
HASH_MULT = {"weight": (10.0, 1.0), "bias": (20.0, 0.0)}


# ---------------------------------------------------------------- schedules
def caffe_beta(iteration):
    """β of training forward ``iteration`` (from 0). ScaleTanH counts its
    Reshape calls: one in Layer::SetUp, one per Forward (layer.hpp lines 72,
    456), and sets β = (1 + 0.005·iter)^0.5 when iter % 200 == 0, so forward
    k sees iter = k + 2: β = 1 for k < 198, √2 from k = 198, √51 at 9999."""
    layer_iter = iteration + 2
    return (1 + BETA_GAMMA * (layer_iter // BETA_STEP * BETA_STEP)) ** BETA_POWER


def caffe_lr(iteration, base_lr):
    """lr = base_lr · 0.5^⌊iter/2000⌋ (solver.prototxt), for any batch size."""
    return base_lr * LR_GAMMA ** (iteration // LR_STEP)


def build_caffe_optimizer(model, lr, weight_decay, momentum):
    """Momentum SGD with the prototxt's per-parameter multipliers: lr × 1
    (weights) / 2 (biases) for conv1-fc7, × 10 / 20 for the hash layer;
    weight decay on weights only. A group's learning_rate replaces the hash
    layer's ParamAttr(learning_rate=10) of the reference recipe, so the
    multipliers are exactly these."""
    hash_params = {id(p) for p in model.classifier_plus[-1].parameters()}
    groups = {}
    for name, p in model.named_parameters():
        kind = "bias" if name.endswith("bias") else "weight"
        mult = (HASH_MULT if id(p) in hash_params else BACKBONE_MULT)[kind]
        groups.setdefault(mult, []).append(p)
    return paddle.optimizer.Momentum(
        learning_rate=lr, momentum=momentum,
        parameters=[{"params": ps, "learning_rate": lr_mult, "weight_decay": weight_decay * decay}
                    for (lr_mult, decay), ps in groups.items()])


# ---------------------------------------------------------------- two streams
class TwoStreams(paddle.io.Dataset):
    """The training set read as two endless streams (the prototxt's data1 and
    data2, two ImageData layers with shuffle: true over one train.txt).

    Stream s is its passes one after another, pass r a permutation drawn from
    (seed, s, r); a batch may span two passes, as in Caffe, which reshuffles
    when a layer reaches the end of its list. Item (s, position) is the
    image at that position, augmented with draws of its own (s, r)."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed
        self._orders = {}

    def order(self, stream, rounds):
        key = (stream, rounds)
        if key not in self._orders:
            if len(self._orders) > 8:  # a stream only ever needs its current pass or the next
                self._orders.clear()
            rng = np.random.default_rng([self.seed, stream, rounds])
            self._orders[key] = rng.permutation(len(self.dataset))
        return self._orders[key]

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        stream, position = key
        rounds, offset = divmod(int(position), len(self.dataset))
        self.dataset.set_epoch(2 * rounds + stream)  # the augmentation draws of this pass
        return self.dataset[int(self.order(stream, rounds)[offset])]


class StreamBatches(paddle.io.Sampler):
    """Iteration k's batch: ``batch_size`` positions of stream 1, then the
    same positions of stream 2. The global batch of W processes is positions
    [k·W·b, (k+1)·W·b) and process r holds the r-th contiguous block of it,
    so the gathered batch is the one-process batch in the same row order
    (the Caffe gradient depends on row order, see CaffePairwiseLoss)."""

    def __init__(self, batch_size, start, stop, rank=0, world_size=1):
        self.batch_size, self.start, self.stop = batch_size, start, stop
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for k in range(self.start, self.stop):
            first = (k * self.world_size + self.rank) * self.batch_size
            positions = range(first, first + self.batch_size)
            yield [(stream, p) for stream in (0, 1) for p in positions]

    def __len__(self):
        return self.stop - self.start


def stream_loader(train_set, args, start):
    """Batches [x; y; ind] of 2·b rows (stream 1, then stream 2) for
    iterations start .. max_iter-1."""
    batches = StreamBatches(args.batch_size, start, args.max_iter, dist.rank(), dist.world_size())
    return BatchLoader(TwoStreams(train_set, args.seed), batches, args.num_workers)


class TwoStreamLoss(nn.Layer):
    """u = tanh(β·z), then CaffePairwiseLoss(stream 1, stream 2) on the
    gathered batch. Gathered, it is W blocks [stream 1 (b rows); stream 2
    (b rows)] in rank order; the streams are regrouped into [W·b] each."""

    def __init__(self, args):
        super().__init__()
        self.beta = 1.0  # set every iteration by the loop (caffe_beta)
        self.pairwise = CaffePairwiseLoss(args.sigmoid_param, class_num=args.class_num)

    def forward(self, z, y, ind):                               # z [W·2b, bit], y [W·2b, C]
        u = paddle.tanh(self.beta * z)
        (u1, u2), (y1, y2) = split_streams(u), split_streams(y)  # [W·b, bit], [W·b, C]
        return self.pairwise(u1, y1, u2, y2)


def split_streams(x):
    """[W·2b, d] of W blocks [stream 1; stream 2] -> (stream 1, stream 2), [W·b, d] each."""
    blocks = x.reshape([dist.world_size(), 2, -1, x.shape[-1]])  # [W, 2, b, d]
    return tuple(blocks[:, s].reshape([-1, x.shape[-1]]) for s in (0, 1))


# ---------------------------------------------------------------- the run
def run_train(args):
    """Train for --max_iter iterations of two streams of --batch-size each;
    evaluate every --eval_iter and at the last, keep the best-mAP weights,
    save ``last`` every --snapshot_iter (and on a stop signal)."""
    ensure_writable_dir(args.output_dir, "--output-dir")
    log, log_dir = engine.start_log(args, "train")
    loaders = engine.make_loaders(args, ("train", "test", "database"))
    model = engine.build_model(args)
    train_model = dist.wrap_model(model)
    criterion = TwoStreamLoss(args)
    optimizer = build_caffe_optimizer(model, caffe_lr(0, args.base_lr), args.weight_decay,
                                      args.momentum)
    state = {"iter": 0, "best_map": 0.0, "best_iter": 0, "history": [], "loss_sum": 0.0,
             "world_size": dist.world_size()}
    if args.resume:
        resume(args, model, optimizer, state, log)
    start = time.time()
    for x, y, ind in stream_loader(loaders["train"].dataset, args, state["iter"]):
        it = state["iter"]
        train_model.train()
        engine.seed_epoch(args.seed, it)  # dropout: a function of (seed, iteration, rank)
        criterion.beta, lr = caffe_beta(it), caffe_lr(it, args.base_lr)
        optimizer.set_lr(lr)
        value = engine.train_step(train_model, criterion, optimizer, x, y, ind)
        if not math.isfinite(value):
            raise UserError(f"non-finite loss {value} at iteration {it}: lower --base_lr; "
                            "the last checkpoint is intact")
        state.update(iter=it + 1, loss_sum=state["loss_sum"] + value)
        done = state["iter"]
        if done % args.debug_steps == 0 or done == args.max_iter:
            log.info(f"Iter[{done:05d}/{args.max_iter:05d}], lr:{lr:.9f}, "
                     f"scale:{criterion.beta:.3f}, Loss: {value:.4f}")
        if done % args.eval_iter == 0 or done == args.max_iter:
            evaluate_and_keep_best(args, model, loaders, optimizer, criterion, state, log, log_dir)
        stopped = engine.stop_agreed(done)
        if done % args.snapshot_iter == 0 or done == args.max_iter or stopped:
            engine.save(args, "last", model, optimizer, criterion, state)
            log.info(f"saved {args.output_dir}/last_{args.bit} (iteration {done}, "
                     f"{time.time() - start:.1f}s)")
        if stopped:
            signum = engine.STOP.signum
            log.info(f"stopped by signal {signum} at iteration {done}: "
                     f"saved {args.output_dir}/last_{args.bit}; continue with --resume")
            raise SystemExit(128 + signum)
    return state


def evaluate_and_keep_best(args, model, loaders, optimizer, criterion, state, log, log_dir):
    """mAP now; a new best is saved as model_best. The history gets the mean
    loss since the previous evaluation."""
    done = state["iter"]
    since = done - (state["history"][-1]["iter"] if state["history"] else 0)
    metrics = engine.evaluate(model, loaders["test"], loaders["database"], args)
    record = {"iter": done, "loss": state["loss_sum"] / max(since, 1), "map": metrics["map"]}
    state.update(history=state["history"] + [record], loss_sum=0.0)
    if metrics["map"] > state["best_map"]:
        state.update(best_map=metrics["map"], best_iter=done)
        engine.save(args, "model_best", model, optimizer, criterion, state)
    metrics.update(iter=done, checkpoint=(f"{args.output_dir}/model_best_{args.bit}"
                                          if state["best_iter"] == done else None))
    engine.write_evaluation(metrics, log_dir)
    log.info(f"HashNet iter:{done}, bit:{args.bit}, dataset:{args.dataset}, "
             f"MAP:{metrics['map']:.3f}, Best MAP(i{state['best_iter']}): {state['best_map']:.3f}")


def resume(args, model, optimizer, state, log):
    """Continue a --recipe caffe run from its checkpoint (``--resume`` alone:
    the newest in --output-dir). Data order, augmentation and dropout are
    functions of the iteration, so the iteration count is all it needs."""
    prefix = newest_checkpoint(args.output_dir, args.bit) if args.resume == "auto" else args.resume
    load_weights(model, prefix)
    saved = load_training_state(prefix, model, optimizer)
    if "iter" not in saved:
        raise UserError(f"{prefix} is not a --recipe caffe checkpoint (no iteration count): "
                        "resume it without --recipe caffe")
    global_batch = saved["config"]["batch_size"] * saved["world_size"]
    if global_batch != args.batch_size * dist.world_size():
        raise UserError(f"{prefix} was trained with {global_batch} images per stream and "
                        "iteration: resume it with the same -bs x processes")
    state.update({k: saved[k] for k in state if k != "world_size"})  # this run's stays
    log.info(f"resumed from {prefix} at iteration {state['iter']}")
