"""A LiveDatabase (deploy/live_database.py) on a copy of the demo set with
the tiny test net, in this process (``open_live``) or in a process that
kills itself with SIGKILL at one step of an add (``python
tests/support/live_database.py STEP FOLDER PREFIX SPEC``, run by
``killed_during_add``)."""
import argparse
import os
import signal
import sys

import tiny_model
from support.cli import run_test_script
from support.demo_set import CROP, RESIZE

# the steps of an add (deploy/live_database.py) after which the process is killed
STEPS = ("journal", "list", "cache", "index")
ADDED = ["images/000060.jpg", "images/000061.jpg"]   # already under the root: no upload


def live_args(folder, spec, save="out"):
    """The database flags of the service, for the copy under ``folder``."""
    from deploy.cli import parse_retrieval_args
    from deploy.serve import build_parser
    folder = str(folder)
    return parse_retrieval_args(build_parser(), [
        "--bit", "16", "--dataset", "demo", "--data_path", os.path.join(folder, "root"),
        "--list-dir", os.path.join(folder, "lists"), "--crop_size", str(CROP),
        "--resize_size", str(RESIZE), "--save_path", os.path.join(folder, save),
        "--index", spec, "--num_threads", "2", "--arch", tiny_model.TINY])


def open_live(folder, prefix, spec, save="out", log=print, rebuild=False):
    """The LiveDatabase of the copy under ``folder``, weights at ``prefix``."""
    from deploy.cli import set_pipeline
    from deploy.live_database import LiveDatabase
    from deploy.retrieve import Encoder
    from utils.inference.checkpoints import load_trained_model
    from utils.inference.encoder import dygraph_forward
    args = set_pipeline(live_args(folder, spec, save))
    args.rebuild_cache = rebuild
    model, weights = load_trained_model(16, prefix, tiny_model.TINY)
    forward = dygraph_forward(model)
    encoder = Encoder(query=forward, database=lambda n: forward, files=(weights,))
    return LiveDatabase(args, encoder, batch_size=16, log=log)


def kill_after(owner, name):
    """Make ``owner.name`` SIGKILL this process once it has returned."""
    original = getattr(owner, name)

    def then_die(*args, **kwargs):
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(owner, name, then_die)


def killed_during_add(step, folder, prefix, spec):
    """Run an add of ADDED in another process, killed after ``step``."""
    return run_test_script(os.path.abspath(__file__), step, str(folder), prefix, spec)


def main(argv):
    parser = argparse.ArgumentParser()
    for name in ("step", "folder", "prefix", "spec"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    from deploy import live_database
    from utils.retrieval.code_cache import DatabaseCodeCache
    live = open_live(args.folder, args.prefix, args.spec)
    target = {"journal": (live_database, "write_journal"), "list": (live_database, "write_list"),
              "cache": (DatabaseCodeCache, "write"), "index": (live_database, "save_index")}
    kill_after(*target[args.step])
    live.add(ADDED, [[0] * 10, [1] + [0] * 9])
    print("the add finished: the step was never reached")


if __name__ == "__main__":
    main(sys.argv[1:])
