"""scripts/compare_methods.py: a small comparison on the tiny net (a deep
method and a shallow one, two bit lengths) writes the paper-style table as
markdown and JSON and the plot; run again it skips what is done and ends
with the same table; a measured result that is gone is measured again, its
training resumed where it stopped."""
import dataclasses
import json
import os

import pytest

from scripts import compare_methods
from support.cli import TINY, run_in_process
from support.demo_set import CROP, RESIZE
from support.errors import assert_cli_error

METHODS = ("hashnet", "itq")


def argv(demo, out, *methods):
    return ["--dataset", "demo", "--data-path", demo.image_dir, "--list-dir", demo.list_dir,
            "--backbone", "random", *TINY, "--bits", "16", "32", "--methods", *methods,
            "--out", str(out), "--", "--crop_size", str(CROP), "--resize_size", str(RESIZE),
            "-bs", "8", "-e", "1", "--step_continuation", "1", "--num_threads", "2",
            "--seed", "0"]


@pytest.fixture(scope="module")
def compared(demo, tmp_path_factory):
    """The comparison run once: (out folder, its stdout, its comparison.md)."""
    out = tmp_path_factory.mktemp("compare")
    proc = run_in_process(compare_methods.main, *argv(demo, out, *METHODS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, (out / "comparison.md").read_text()


def test_table_json_and_plot(compared):
    out, stdout, table = compared
    assert "| method | mAP@48: 16 bits | 32 bits | P@H≤2: 16 bits | 32 bits |" in table
    rows = table.splitlines()[4:6]
    assert rows[0].startswith("| HashNet |") and rows[1].startswith("| ITQ |") and table in stdout
    report = json.loads((out / "comparison.json").read_text())
    assert list(report["methods"]) == list(METHODS)
    for name, row in zip(METHODS, rows):
        results = report["methods"][name]["results"]
        # exact: the table formats the mAPs read from comparison.json
        assert row.split(" | ")[1:3] == [f"{results[b]['map']:.4f}" for b in ("16", "32")]
        assert {"map_skip_topk", "map_skip_database", "precision_radius",
                "seconds"} <= set(results["16"])
    assert (out / "map_vs_bits.png").read_bytes()[:4] == b"\x89PNG"


def test_the_papers_imagenet_column_is_labelled_as_the_papers(compared):
    """The demo has no paper column: the paper's ImageNet-100 numbers follow,
    for the ordering, named as the paper's."""
    table = compared[2]
    assert "its ImageNet-100 numbers (mAP@1000), for the ordering only" in table
    assert "| HashNet | 0.442 | 0.606 |" in table and "| LSH | 0.101 | 0.235 |" in table


def test_paper_numbers_beside_ours_where_the_paper_has_the_dataset(compared):
    demo_run = compare_methods.Comparison("demo", "", "", "random", "tiny", [16, 32],
                                          str(compared[0]), [])
    table = compare_methods.collect(demo_run, METHODS)
    text = compare_methods.markdown(dataclasses.replace(demo_run, dataset="imagenet"), table, 1000)
    lines = text.splitlines()
    hashnet = lines.index(next(line for line in lines if line.startswith("| HashNet |")))
    assert lines[hashnet + 1] == "| HashNet, the paper's | 0.442 | 0.606 | – | – |"
    assert "| ITQ, the paper's | 0.326 | 0.462 | – | – |" in lines


def test_run_again_skips_what_is_done_and_ends_with_the_same_table(compared, demo):
    out, _, table = compared
    proc = run_in_process(compare_methods.main, *argv(demo, out, *METHODS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("measured before") == 4 and "Epoch[" not in proc.stdout
    # exact: the same mAPs, read back from the first run's results
    assert (out / "comparison.md").read_text() == table


def test_a_lost_result_is_measured_again_from_its_checkpoints(compared, demo):
    """hashnet at 32 bits has its checkpoints but no result: its training
    resumes (finished: nothing left to train) and the same weights give
    the same numbers."""
    out, _, table = compared
    os.remove(out / "results" / "hashnet-32.json")
    proc = run_in_process(compare_methods.main, *argv(demo, out, *METHODS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "nothing left to train" in proc.stdout
    assert proc.stdout.count("measured before") == 3
    assert (out / "comparison.md").read_text() == table


def test_a_method_flag_goes_only_to_the_methods_that_have_it():
    flags = ["-e", "2", "--step_continuation", "1", "--quantization_weight=0.5", "-bs", "8"]
    assert compare_methods.flags_for("hashnet", flags) == ["-e", "2", "--step_continuation", "1",
                                                             "-bs", "8"]
    assert compare_methods.flags_for("dhn", flags) == ["-e", "2", "--quantization_weight=0.5",
                                                         "-bs", "8"]
    assert compare_methods.flags_for("hashnet_no_continuation", flags) == ["-e", "2", "-bs", "8"]


def test_all_is_every_deep_method_of_the_recipe_then_every_shallow_one():
    names = compare_methods.chosen_methods(["all"])
    assert names[0] == "hashnet" and "hashnet_caffe" not in names
    assert names[-4:] == ["itq", "itq_cca", "lsh", "sh"]
    assert {"dhn", "csq", "dpsh", "dsh", "hashnet_no_weighting", "hashnet_no_continuation",
            "hashnet_continuous"} <= set(names)


def test_an_unknown_method_is_one_line(tmp_path):
    proc = run_in_process(compare_methods.main, "--dataset", "demo", "--methods", "hashnet",
                          "dhn2", "--out", tmp_path)
    assert_cli_error(proc, "--methods dhn2: unknown", "choose from all, hashnet")
