"""The retrieval service: a warm model and index behind HTTP, images added and
removed live, and a web page.

    python -m deploy.serve --bit 64 --dataset coco --data_path datasets/coco \\
        --pretrained output/coco_64/model_best_64 --index faiss:ivf,nlist=4096,nprobe=32

Endpoints (their schema: ``/openapi.json``): ``GET /health``, ``POST
/search``, ``POST /images``, ``DELETE /images/{id}`` and ``DELETE /images``
(a batch), ``GET /images/{id}``, ``GET /thumbs/{id}``, ``GET /metrics``
(Prometheus) and ``GET /`` (the page, deploy/web/). Every error is JSON
``{"error": {"code": <HTTP status>, "message": <one line>}}``.

It binds 127.0.0.1 unless --host says otherwise, and then only with a token
(--token or the environment variable HASHNET_TOKEN), which adds and
removals must carry (``Authorization: Bearer <token>``). The model is opened
before the port is bound; the database (encoded, or read from its cache)
after, while ``/health`` answers ``"ready": false``.
"""
import argparse
import ipaddress
import os
import socket
import sys
import threading
import time
import traceback

import utils  # noqa: F401  (first: silences Paddle's import-time ccache warning)
import paddle

import models
from deploy.cli import (add_database_args, check_arch_sizes, default_resize, fit_arch_to_model,
                        fit_sizes_to_model, parse_retrieval_args, set_pipeline)
from deploy.retrieve import Encoder
from deploy.service import Service
from utils.base.errors import UserError, run_cli
from utils.base.flags import AT_LEAST_1, BATCH, Range, add
from utils.base.runtime import set_num_threads

TOKEN_ENV = "HASHNET_TOKEN"
PORTS = Range(low=1, high=65535)
MIB = 1 << 20


def build_parser():
    p = argparse.ArgumentParser(description="HashNet retrieval service (HTTP + web page)")
    add_database_args(p, crop_default=None)   # --model-dir: the export's; else 224

    def a(*names, **kwargs):
        return add(p, *names, **kwargs)
    a("--pretrained", default=None, help="checkpoint path without .pdparams, run on Paddle "
      "Inference (default output/model_best_<bit>, else output/weights_<bit>)")
    a("--model-dir", "--model_dir", dest="model_dir", default=None,
      help="instead of --pretrained: a folder of inference_<bit>.* from export_model.py")
    a("--use-onnx", "--use_onnx", dest="use_onnx", action="store_true",
      help="with --model-dir: run inference_<bit>.onnx on onnxruntime")
    a("--host", default="127.0.0.1", help="address to bind (not a loopback one: needs a token)")
    a("--port", type=int, default=8000, valid=PORTS)
    a("--token", default=None, help=f"the token adds and removals must carry (default: the "
      f"environment variable {TOKEN_ENV}; none: they are open, on loopback only)")
    a("--max-body-mb", "--max_body_mb", dest="max_body_mb", type=int, default=20,
      valid=AT_LEAST_1, help="refuse request bodies over this many MiB")
    a("--thumb-size", "--thumb_size", dest="thumb_size", type=int, default=160, valid=Range(16, 1024),
      help="longest side of a thumbnail, px")
    a("-bs", "--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
      valid=BATCH, help="batch size for encoding the database and added images")
    return p


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(args):
    """The token, and an address that may be bound with it: refuses a
    non-loopback address without a token, and a port already in use."""
    args.token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not args.token:
        raise UserError(f"--host {args.host} is reachable from other machines: give --token (or "
                        f"set {TOKEN_ENV}) so that only its holders can add and remove images, "
                        "or bind 127.0.0.1")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((args.host, args.port))
        except OSError as err:
            raise UserError(f"cannot bind {args.host}:{args.port} ({err.strerror}): pick "
                            "another --port, or stop what listens there") from None


def open_encoder(args):
    """The model as an Encoder: --model-dir's export (Paddle Inference or
    onnxruntime), else --pretrained's weights exported once to Paddle Inference
    (its database cache is predict.py's)."""
    if args.model_dir:
        from utils.inference.export import load_exported
        from utils.inference.predictor import read_export_info, resolve_use_gpu
        use_gpu = False if args.use_onnx else resolve_use_gpu(None)
        fmt, tag = ("onnx", "_onnx") if args.use_onnx else ("paddle", "_inference")
        model = load_exported(args.model_dir, args.bit, fmt, use_gpu, args.num_threads)
        fit_arch_to_model(args, read_export_info(args.model_dir, args.bit), model.files[0])
        fit_sizes_to_model(args, model.image_size, model.files[0])
        set_pipeline(args)
        return Encoder(query=model.run, database=lambda n: model.run, files=tuple(model.files),
                       tag=tag, device="gpu" if use_gpu else "cpu")
    if args.use_onnx:
        raise UserError("--use-onnx runs an exported model: give --model-dir")
    from utils.inference.checkpoints import load_trained_model
    from utils.inference.encoder import MIN_IMAGES_TO_EXPORT, fastest_forward
    args.arch = args.arch or models.DEFAULT_ARCH
    args.crop_size = args.crop_size or models.DEFAULT_CROP
    args.resize_size = args.resize_size or default_resize(args.crop_size)
    check_arch_sizes(args)
    set_pipeline(args)
    model, weights = load_trained_model(args.bit, args.pretrained, args.arch)
    print(f"weights: {weights}", flush=True)
    with paddle.no_grad():
        # a warm service repays the export at once: queries run on Paddle Inference
        query = fastest_forward(model, MIN_IMAGES_TO_EXPORT)
    return Encoder(query=query, database=lambda n: fastest_forward(model, n), files=(weights,))


class ServerState:
    """What the app serves: the Service once the database is open."""

    def __init__(self, args, token):
        self.args, self.token = args, token
        self.service, self.failure = None, None
        self.status = "opening the database"


def open_database(state, args, encoder, server):
    """Open the database in the background; a failure stops the server and
    becomes the command's one-line error."""
    try:
        with paddle.no_grad():
            state.service = Service(args, encoder, args.batch_size, args.thumb_size)
        print(f"ready: {len(state.service.live):,} images, --index "
              f"{state.service.live.db.index.spec}, http://{args.host}:{args.port}/", flush=True)
    except UserError as err:
        state.failure = str(err)
        server.should_exit = True
    except Exception as err:   # noqa: BLE001 - reported, and the server stops
        traceback.print_exc()
        state.failure = f"opening the database failed: {type(err).__name__}: {err}"
        server.should_exit = True


def main(argv):
    args = parse_retrieval_args(build_parser(), argv)
    check_bind(args)
    set_num_threads(args.num_threads)
    encoder = open_encoder(args)
    import uvicorn
    from deploy.http_app import create_app
    state = ServerState(args, args.token)
    server = uvicorn.Server(uvicorn.Config(create_app(state, args.max_body_mb * MIB),
                                           host=args.host, port=args.port, log_level="warning",
                                           access_log=False))
    threading.Thread(target=open_database, args=(state, args, encoder, server),
                     daemon=True).start()
    print(f"serving on http://{args.host}:{args.port}/ ({state.status})", flush=True)
    started = time.time()
    server.run()
    if state.failure:
        raise UserError(state.failure)
    print(f"stopped after {time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
