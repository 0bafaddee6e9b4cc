"""scripts/gpu_check.py: the comparison catches wrong losses and wrong updates,
the checks planned per GPU count reach training and inference with the right
device and process count, and the CPU part runs end to end and passes
against the recorded reference (on this CPU-only machine: GPU part skipped)."""
import copy
import json
import os

import pytest

from support.cli import run_in_process
from support.errors import assert_cli_error
from support.paths import REPO
from scripts import gpu_check


@pytest.fixture(scope="module")
def reference():
    with open(gpu_check.REFERENCE) as f:
        return json.load(f)


def passed(verdicts):
    return [ok for ok, _ in verdicts]


def test_reference_passes_against_itself(reference):
    assert passed(gpu_check.compare(reference, reference)) == [True, True]


def test_wrong_loss_fails(reference):
    wrong = copy.deepcopy(reference)
    wrong["losses"][-1] *= 1 + 2 * gpu_check.LOSS_RTOL
    assert passed(gpu_check.compare(wrong, reference)) == [False, True]


@pytest.mark.parametrize("change", ["scale", "sign"])
def test_wrong_update_fails(reference, change):
    """A gradient 10% too large changes the norm; one of the wrong sign only
    the projection (same norm)."""
    wrong = copy.deepcopy(reference)
    update = wrong["updates"]["features.0.weight"]
    if change == "scale":
        update["norm"] *= 1.1
    else:
        update["projection"] *= -1
    verdicts = gpu_check.compare(wrong, reference)
    assert passed(verdicts) == [True, False] and "features.0.weight" in verdicts[1][1]


def test_plan_per_gpu_count():
    assert gpu_check.plan(0) == [("CPU", "cpu", 1)]
    assert gpu_check.plan(1) == [("CPU", "cpu", 1), ("1 GPU", "gpu", 1)]
    assert gpu_check.plan(4) == [("CPU", "cpu", 1), ("1 GPU", "gpu", 1), ("2 GPUs", "gpu", 2)]


def test_checks_reach_training_and_inference_with_their_devices(reference, monkeypatch,
                                                                 tmp_path, capsys):
    """With 2 GPUs (faked): CPU, 1 GPU and 2 GPUs trained, inference on CPU
    and GPU; one verdict line per check; a failing one makes the result False."""
    trained, inferred = [], []

    def fake_train(device, data, out, gpus=1, arch="alexnet"):
        trained.append((device, gpus))
        return reference if device == "cpu" else dict(reference, losses=[1.0] * 2)

    def fake_inference(prefix, out, use_gpu, arch="alexnet"):
        inferred.append((os.path.basename(os.path.dirname(os.path.dirname(prefix))), use_gpu))
        return True, "ok"
    monkeypatch.setattr(gpu_check, "train", fake_train)
    monkeypatch.setattr(gpu_check, "check_inference", fake_inference)
    monkeypatch.setattr(gpu_check, "make_tiny_set", lambda root: None)
    assert gpu_check.run_checks(gpu_check.REFERENCE, str(tmp_path), 2) is False
    assert trained == [("cpu", 1), ("gpu", 1), ("gpu", 2)]
    assert inferred == [("CPU", False), ("2_GPUs", True)]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "PASS CPU", "PASS CPU", "FAIL 1 GPU", "PASS 1 GPU", "FAIL 2 GPUs", "PASS 2 GPUs",
        "PASS CPU", "PASS 1 GPU"]


def test_two_processes_match_the_one_process_reference(reference, tmp_path):
    """The 2-GPU branch's premise, on 2 CPU (gloo) processes: 2 x 8 images
    reproduce the recorded 1 x 16 losses and updates within the tolerances."""
    data = gpu_check.make_tiny_set(str(tmp_path / "data"))
    measured = gpu_check.train("cpu", data, str(tmp_path / "two"), gpus=2)
    assert passed(gpu_check.compare(measured, reference)) == [True, True]


def test_more_gpus_than_visible_is_one_line(tmp_path):
    # in-process; scripts/gpu_check.sh (test_cpu_part_end_to_end) runs its __main__
    assert_cli_error(run_in_process(gpu_check.main, "--gpus", "1"), "--gpus 1: only 0 GPU(s)")
    assert_cli_error(run_in_process(gpu_check.main, "--reference", str(tmp_path / "no.json")),
                     "no.json not found", "--record")


def test_cpu_part_end_to_end():
    """scripts/gpu_check.sh on this CPU-only machine: the CPU training matches
    the recorded reference, export + CPU inference pass, GPU part skipped."""
    import subprocess
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [v.split(":")[0] for v in verdicts] == ["PASS CPU"] * 3, verdicts
    assert "(tolerance 0.0001 x max(1, max |z|) = " in verdicts[2], verdicts   # the export check's
    assert "no GPU visible" in proc.stdout


def test_docs_state_the_check_settings():
    with open(os.path.join(REPO, "docs", "training.md")) as f:
        page = " ".join(f.read().split())
    steps = gpu_check.N_TRAIN // gpu_check.BATCH
    assert (f"Trains {gpu_check.EPOCHS * steps} steps ({gpu_check.EPOCHS} epochs × {steps} steps "
            f"of {gpu_check.BATCH} images, lr 0.1, no weight decay)") in page
    assert '"-lr", "0.1", "-wd", "0"' in open(gpu_check.__file__).read()
    assert gpu_check.HASH_INIT_SCALE == 100 and "std raised from 0.01 to 1" in page
    assert f"relative tolerance {gpu_check.LOSS_RTOL:g}" in page
    assert f"within {gpu_check.UPDATE_RTOL:.0%}".replace("%", " %") in page
    from utils.inference.export import TOLERANCE
    assert f"with the dygraph model ({TOLERANCE:g} × max(1, max |z|), the export check's" in page
