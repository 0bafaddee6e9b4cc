"""The authors' Caffe recipe (``--recipe caffe``, spec §8): only what differs
from the reference recipe — two streams of batches whose pairs the method's
loss takes (``--method hashnet_caffe``: their PairwiseLoss), and iterations
instead of epochs. Its lr schedule and optimizer groups are in
utils/training/schedules.py; evaluation, checkpoints, logging, stop and
resume are the run skeleton's (utils/training/engine.py).

Source: github.com/thuml/HashNet, ``caffe/`` (the code behind the paper's
table): models/train/<dataset>/{train_val,solver}.prototxt.
"""
import math

import numpy as np
import paddle

from utils.base import distributed as dist
from utils.base.errors import UserError
from utils.base.flags import AT_LEAST_1, POSITIVE_FLOAT, add
from utils.data.loaders import BatchLoader
from utils.training.recipes import Recipe, register, scale_of
from utils.training.schedules import build_caffe_optimizer, caffe_lr
from utils.training.step import seed_epoch, stop_agreed, train_step

# dataset -> base_lr of the authors' solver.prototxts (other datasets: COCO's)
BASE_LR = {"coco": 5e-5, "nuswide_81_m": 5e-5, "imagenet": 2e-4}
STREAM_BATCH = 256  # images per stream (train_val.prototxt image_data_param batch_size)


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
    (the Caffe gradient depends on row order: utils/methods/hashnet_caffe.py)."""

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


# ---------------------------------------------------------------- the recipe
@register("caffe")
class CaffeRecipe(Recipe):
    """--max_iter iterations of two streams of --batch-size each; evaluate
    every --eval_iter and at the last, save ``last`` every --snapshot_iter.
    A period runs up to the next of those iterations."""
    unit = "iter"
    default_method = "hashnet_caffe"
    default_batch = STREAM_BATCH

    def __init__(self, args, method):
        super().__init__(args, method)
        self.batches = None   # the two-stream iterator, opened where the run stands

    @classmethod
    def add_flags(cls, parser):
        c = parser.add_argument_group("--recipe caffe (iteration-based: -e, -ee, -lr, --de_step "
                                      "do not apply; SGD only)")
        add(c, "--max_iter", type=int, default=10000, valid=AT_LEAST_1,
            help="iterations (default 10000)")
        add(c, "--eval_iter", type=int, default=None, valid=AT_LEAST_1,
            help="evaluate every N iterations and at the last (default: at the last)")
        add(c, "--snapshot_iter", type=int, default=1000, valid=AT_LEAST_1,
            help="save last_{bit} every N")
        add(c, "--base_lr", type=float, default=None, valid=POSITIVE_FLOAT,
            help="lr of iterations 0-1999, halved every 2000, not scaled by the batch "
                 "(default: the dataset's solver.prototxt, BASE_LR: COCO and NUS-WIDE 5e-5, "
                 "ImageNet 2e-4, else 5e-5)")

    @classmethod
    def resolve(cls, args):
        if args.base_lr is None:
            args.base_lr = BASE_LR.get(args.dataset, BASE_LR["coco"])
        if args.eval_iter is None:
            args.eval_iter = args.max_iter
        if args.optimizer != "sgd":
            raise UserError(f"-op {args.optimizer}: --recipe caffe is the authors' momentum "
                            "SGD only")
        if args.skip_bad_images:
            raise UserError("--skip-bad-images does not work with --recipe caffe: a skipped "
                            "image would leave the two streams of unequal size; fix or drop "
                            "the image")

    def initial_state(self):
        return {"iter": 0, "best_map": 0.0, "best_iter": 0, "history": [], "loss_sum": 0.0,
                "world_size": dist.world_size()}

    def optimizer(self, model):
        args = self.args
        return build_caffe_optimizer(model, caffe_lr(0, args.base_lr), args.weight_decay,
                                     args.momentum)

    def periods(self, state):
        args = self.args
        ends = {args.max_iter}
        for every in (args.eval_iter, args.snapshot_iter):
            ends.update(range(every, args.max_iter, every))
        return sorted(i for i in ends if i > state["iter"])

    def train_period(self, model, criterion, optimizer, loader, log, state, end):
        args = self.args
        if self.batches is None:
            self.batches = iter(stream_loader(loader.dataset, args, state["iter"]))
        while state["iter"] < end:
            x, y, ind = next(self.batches)
            it = state["iter"]
            model.train()
            seed_epoch(args.seed, it)  # dropout: a function of (seed, iteration, rank)
            self.set_period_parameters(criterion, it)
            lr = caffe_lr(it, args.base_lr)
            optimizer.set_lr(lr)
            value = train_step(model, criterion, optimizer, x, y, ind)
            if not math.isfinite(value):
                raise UserError(f"non-finite loss {value} at iteration {it}: lower --base_lr; "
                                "the last checkpoint is intact")
            state.update(iter=it + 1, loss_sum=state["loss_sum"] + value)
            done = state["iter"]
            if done % args.debug_steps == 0 or done == args.max_iter:
                log.info(f"Iter[{done:05d}/{args.max_iter:05d}], lr:{lr:.9f}, "
                         f"scale:{scale_of(criterion):.3f}, Loss: {value:.4f}")
                self.run_log.step(done, value, lr, scale_of(criterion), iter=done)
            if stop_agreed(done):
                break
        return state["iter"] == end

    def global_step(self, done, loader):
        return done   # iterations are the steps

    def close_period(self, state, end, criterion, loader, log):
        """An evaluation's record holds the mean loss since the previous one."""
        if not self.evaluation_due(end):
            return None
        since = end - (state["history"][-1]["iter"] if state["history"] else 0)
        record = {"iter": end, "loss": state["loss_sum"] / max(since, 1), "map": None}
        state.update(history=state["history"] + [record], loss_sum=0.0)
        return record

    def evaluation_due(self, end):
        return end % self.args.eval_iter == 0 or end == self.args.max_iter

    def save_due(self, end):
        return end % self.args.snapshot_iter == 0 or end == self.args.max_iter

    def position(self, state):
        return f"iteration {state['iter']}"

    def restore(self, saved, state, prefix):
        """Data order, augmentation and dropout are functions of the
        iteration, so the iteration count is all a resume needs."""
        global_batch = saved["config"]["batch_size"] * saved["world_size"]
        if global_batch != self.args.batch_size * dist.world_size():
            raise UserError(f"{prefix} was trained with {global_batch} images per stream and "
                            "iteration: resume it with the same -bs x processes")
        state.update({k: saved[k] for k in state if k != "world_size"})  # this run's stays
        return f"iteration {state['iter']}"
