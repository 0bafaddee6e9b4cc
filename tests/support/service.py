"""The retrieval service (deploy/serve.py) in its own process on a copy of the
tiny demo set, for the endpoint and page tests: one per test module."""
import os
import shutil
import subprocess
import sys
import time
import types

import httpx

from support.demo_set import CROP, RESIZE
from support.paths import GUARD_DIR, REPO
from support.ports import closed_port

TOKEN = "test-token"


def service_argv(root, list_dir, save_path, prefix, port, *extra):
    return ["-m", "deploy.serve", "--bit", "16", "--dataset", "demo", "--data_path", root,
            "--list-dir", list_dir, "--pretrained", prefix, "--crop_size", str(CROP),
            "--resize_size", str(RESIZE), "--save_path", save_path, "--num_threads", "2",
            "--port", str(port), *extra]


def copy_demo(demo, folder):
    """The demo's images and lists under ``folder``: adds and removals change
    only these."""
    root, lists = os.path.join(folder, "root"), os.path.join(folder, "lists")
    shutil.copytree(demo.image_dir, root)
    shutil.copytree(demo.list_dir, lists)
    return root, lists


def start_service(demo, prefix, folder, *extra, token=TOKEN, timeout=300):
    """Start the service on a copy of the demo set with the weights at
    ``prefix``; returns it once /health says ready (``stop`` ends it)."""
    folder = str(folder)
    root, lists = copy_demo(demo, folder)
    save = os.path.join(folder, "out")
    port = closed_port()
    log = open(os.path.join(folder, "service.log"), "w")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, GUARD_DIR]), PYTHONUNBUFFERED="1",
               HASHNET_TOKEN=token or "")
    proc = subprocess.Popen([sys.executable, *service_argv(root, lists, save, prefix, port,
                                                             *extra)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    service = types.SimpleNamespace(proc=proc, url=f"http://127.0.0.1:{port}", token=token,
                                    root=root, list_dir=lists, save_path=save, log=log.name,
                                    auth={"Authorization": f"Bearer {token}"})
    wait_ready(service, timeout)
    return service


def wait_ready(service, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if service.proc.poll() is not None:
            raise AssertionError(f"the service exited ({service.proc.returncode}): "
                                 + open(service.log).read()[-3000:])
        try:
            if httpx.get(service.url + "/health", timeout=5).json().get("ready"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(service)
    raise AssertionError("the service was not ready in time: " + open(service.log).read()[-3000:])


def stop(service):
    service.proc.kill()
    service.proc.wait(timeout=60)


def predicted_ranking(service, demo, prefix, img, folder, capsys, *extra):
    """predict.py's (index, distance) ranking of ``img`` over a copy of the
    service's list as it is now (its own cache under ``folder``)."""
    from support.cli import run_predict_inprocess
    from support.demo_set import predict_argv
    lists = os.path.join(str(folder), "lists_now")
    shutil.copytree(service.list_dir, lists)
    argv = predict_argv(demo, prefix, img, os.path.join(str(folder), "predict"), *extra)
    argv[argv.index("--list-dir") + 1] = lists
    argv[argv.index("--data_path") + 1] = service.root
    result, _ = run_predict_inprocess(capsys, argv)
    return [(t["index"], t["distance"]) for t in result["topk"]]
