"""The reference Paddle recipe (spec §1-3, the default ``--recipe``): epochs
over the training set, the method's parameters (HashNet's β) set once per
epoch, lr halved every ``--de_step``, the hash layer at the method's lr
multiplier; evaluate every ``-ee`` epochs and save ``last`` every epoch.

Only what differs from the Caffe recipe is here; the run skeleton is
utils/training/engine.py, the objective utils/methods/.
"""
import dataclasses
import itertools
import math

from utils.base import distributed as dist
from utils.base.errors import UserError
from utils.data.loaders import set_epoch
from utils.training.recipes import Recipe, register, scale_of
from utils.training.schedules import base_lr, build_optimizer, hash_layer_groups, step_lr
from utils.training.step import restore_rng, seed_epoch, stop_agreed, train_step


def epoch_lr(args, epoch):
    return step_lr(epoch, base_lr(args.learning_rate, args.batch_size, dist.world_size()),
                   args.de_step, args.de_gamma)


@dataclasses.dataclass
class EpochProgress:
    """How far an epoch got: steps done and their summed loss."""
    epoch: int
    step: int = 0
    loss_sum: float = 0.0


def train_one_epoch(recipe, model, criterion, optimizer, loader, log, epoch_progress):
    """Train one epoch from ``epoch_progress.step`` on (0, or where an interrupted
    run stopped); returns ``epoch_progress``, short of the last step if a stop
    signal came. Each logged step also goes to the recipe's run log."""
    args, epoch = recipe.args, epoch_progress.epoch
    model.train()
    set_epoch(loader, epoch, skip=epoch_progress.step)
    if epoch_progress.step == 0:
        seed_epoch(args.seed, epoch)  # mid-epoch resumes restore the RNG instead
    recipe.set_period_parameters(criterion, epoch)
    optimizer.set_lr(epoch_lr(args, epoch))
    steps = len(loader)
    # a bank keeps a row per image: one that could not be read leaves it
    wanted = (loader.batch_sampler.global_batches()
              if args.skip_bad_images and recipe.method.uses_bank else itertools.repeat(None))
    for (x, y, ind), global_batch in zip(loader, wanted):
        value = train_step(model, criterion, optimizer, x, y, ind, global_batch)
        epoch_progress.step += 1
        if not math.isfinite(value):
            raise UserError(f"non-finite loss {value} at epoch {epoch}, step "
                            f"{epoch_progress.step}: lower --learning_rate; the last "
                            "checkpoint is intact")
        epoch_progress.loss_sum += value
        if epoch_progress.step % args.debug_steps == 0 or epoch_progress.step == steps:
            log.info(f"Epoch[{epoch:03d}/{args.epoch:03d}], "
                     f"Step[{epoch_progress.step:04d}/{steps:04d}], Loss: {value:.4f}")
            recipe.run_log.step((epoch - 1) * steps + epoch_progress.step, value,
                                optimizer.get_lr(), scale_of(criterion), epoch=epoch)
        if stop_agreed((epoch - 1) * steps + epoch_progress.step):
            break
    return epoch_progress


@register("reference")
class ReferenceRecipe(Recipe):
    unit = "epoch"
    default_method = "hashnet"

    def initial_state(self):
        return {"epoch": self.args.last_epoch, "best_map": 0.0, "best_epoch": 0, "history": []}

    def optimizer(self, model):
        args = self.args
        return build_optimizer(args.optimizer, hash_layer_groups(model, self.method.hash_lr),
                               epoch_lr(args, 1), args.weight_decay, args.momentum)

    def periods(self, state):
        return range(state["epoch"] + 1, self.args.epoch + 1)

    def train_period(self, model, criterion, optimizer, loader, log, state, epoch):
        # A run resumed mid-epoch holds that epoch's progress in state["partial"].
        progress = state.setdefault("partial", EpochProgress(epoch))
        train_one_epoch(self, model, criterion, optimizer, loader, log, progress)
        return progress.step == len(loader)

    def close_period(self, state, epoch, criterion, loader, log):
        loss = state.pop("partial").loss_sum / len(loader)
        log.info(f"HashNet[{epoch:2d}/{self.args.epoch}] bit:{self.args.bit}, "
                 f"lr:{epoch_lr(self.args, epoch):.9f}, scale:{scale_of(criterion):.3f}, "
                 f"train loss:{loss:.3f}")
        record = {"epoch": epoch, "loss": loss, "map": None}
        state.update(epoch=epoch, history=state["history"] + [record])
        return record

    def evaluation_due(self, epoch):
        return epoch % self.args.eval_epoch == 0 or epoch == self.args.epoch

    def save_due(self, epoch):
        return True

    def position(self, state):
        if "partial" in state:
            return f"epoch {state['partial'].epoch}, step {state['partial'].step}"
        return f"epoch {state['epoch']}"

    def restore(self, saved, state, prefix):
        if "partial" in saved and saved["config"]["batch_size"] != self.args.batch_size:
            raise UserError(f"{prefix} stopped mid-epoch at batch size "
                            f"{saved['config']['batch_size']}: resume it with the same -bs")
        state.update(saved)
        if "partial" in state:
            # Mid-epoch: continue that epoch's RNG streams where they stopped.
            state["partial"] = EpochProgress(**state["partial"])
            restore_rng(state["rng"])
            return f"epoch {state['partial'].epoch}, step {state['partial'].step}"
        return f"the end of epoch {state['epoch']}"
