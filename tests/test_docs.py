"""Docs that cannot drift from the code.

* Every setting docs/demo.md quotes for the demo (its mAP floor, the Caffe
  demo's streams, iterations and lr) equals what scripts/demo.sh sets.
* Every command in the code blocks of README.md, docs/*.md (and the
  deploy/TIPC READMEs) names a file that exists and, for Python entry points,
  only flags its argparse parser knows (parsers are captured, nothing is
  executed).
* docs/contributing.md's layout table names every module of the tree, and
  only paths that exist.
* README.md links every docs/ page, and every relative link of README.md and
  docs/*.md reaches an existing file (and heading, for a ``#anchor``).
* docs/deployment.md's ``paddle.hub`` example runs as written, from a folder
  outside the repository.
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from support.docs import capture_parser, demo_sh_settings, read
from support.paths import REPO
from support.threads import THREADS_ENV

PAGES = tuple(sorted(os.path.relpath(p, REPO)
                     for p in glob.glob(os.path.join(REPO, "docs", "*.md"))))
DOCS = ("README.md", "deploy/inference_python/README.md", "test_tipc/README.md") + PAGES
DEMO_PAGE = "docs/demo.md"         # the demo in full: its settings and floor
LAYOUT_PAGE = "docs/contributing.md"   # the "## Layout" table


# ---------------------------------------------------------------- demo settings
def demo_page_settings(text):
    """The demo settings the demo page states, by demo.sh name."""
    step2 = re.search(r"scripts\.demo\.backbone`, (\d+) epochs at lr ([0-9.e-]+) per 64 images",
                      text)
    step3 = re.search(r"(\d+) px crops of (\d+) px images, batch (\d+), lr ([0-9.e-]+), "
                      r"(\d+) epochs,\s+β raised every (\d+ )?epochs?", text)
    floor = re.search(r"must\s+end\s+at\s+mAP@100\s+≥\s+([0-9.]+)", text)
    assert step2 and step3 and floor, f"{DEMO_PAGE} no longer states the demo settings"
    return {"BACKBONE_EPOCHS": step2.group(1), "BACKBONE_LR": step2.group(2),
            "CROP": step3.group(1), "RESIZE": step3.group(2), "BATCH": step3.group(3),
            "LR": step3.group(4), "EPOCHS": step3.group(5),
            "STEP_CONTINUATION": (step3.group(6) or "1").strip(), "FLOOR": floor.group(1)}


def test_demo_page_settings_are_the_scripts():
    script = demo_sh_settings(read("scripts/demo.sh"))
    for name, value in demo_page_settings(read(DEMO_PAGE)).items():
        assert name in script, f"scripts/demo.sh no longer sets {name}"
        assert float(script[name]) == float(value), (
            f"{DEMO_PAGE} says {name} = {value}, scripts/demo.sh sets {script[name]}")


def test_demo_page_caffe_settings_are_the_scripts():
    """The DEMO_RECIPE=caffe paragraph of the demo page states what
    scripts/demo.sh sets."""
    script = demo_sh_settings(read("scripts/demo.sh"))
    stated = re.search(r"two streams\s+of (\d+) images, (\d+) iterations.*?"
                       r"their base_lr ([0-9.e-]+)", read(DEMO_PAGE), re.S)
    assert stated, f"{DEMO_PAGE} no longer states the Caffe demo settings"
    assert (int(script["CAFFE_BATCH"]), int(script["CAFFE_ITER"]), float(script["CAFFE_LR"])) ==\
        (int(stated[1]), int(stated[2]), float(stated[3]))


def test_drift_check_fails_on_a_one_sided_change():
    """The check above is able to fail: change one demo setting in the
    script only, and the demo page no longer agrees."""
    edited = read("scripts/demo.sh").replace("EPOCHS=${DEMO_EPOCHS:-2}", "EPOCHS=${DEMO_EPOCHS:-3}")
    assert edited != read("scripts/demo.sh")
    page = demo_page_settings(read(DEMO_PAGE))
    assert float(demo_sh_settings(edited)["EPOCHS"]) != float(page["EPOCHS"])


# ---------------------------------------------------------------- commands
def code_block_commands(text):
    """Shell commands of the ```bash / ``` blocks: continuation lines joined,
    comments dropped, ``&&``-chains split."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def test_ci_runs_the_readme_test_command():
    """README's command 2 is what .ci/run runs first, and it lists the slowest
    tests (``--durations``), so a slow newcomer shows in every CI log; the
    only other run is the float-sensitive tests' second pass, on other
    kernels (another instruction set, MKL's other path, one thread)."""
    readme = [c for c in code_block_commands(read("README.md")) if c.startswith("python -m pytest")]
    script = read(".ci/run")
    ci = [line.strip() for line in script.splitlines() if "pytest" in line]
    assert readme and ci[:1] == readme[:1], f"README runs {readme[:1]}, .ci/run runs {ci[:1]}"
    assert "--durations=" in ci[0]
    assert ci[1:] == [ci[0].replace("--durations=15", "-m float_sensitive")], ci[1:]
    for setting in ("ONEDNN_MAX_CPU_ISA=", "MKL_DEBUG_CPU_TYPE=5", f"{THREADS_ENV}=1"):
        assert setting in script, f".ci/run's second pass lacks {setting}"


def python_target(words):
    """(module name, its arguments) of a ``python …`` command, or None."""
    if words[:3] == ["python", "-m", "paddle.distributed.launch"]:
        script = next(i for i, w in enumerate(words) if w.endswith(".py"))
        return words[script][:-3].replace("/", "."), words[script + 1:]
    if words[1] == "-m":
        return words[2], words[3:]   # only the repo's own modules are checked
    assert words[1].endswith(".py"), words
    assert os.path.isfile(os.path.join(REPO, words[1])), f"{words[1]} does not exist"
    return words[1][:-3].replace("/", "."), words[2:]


def known_flags(parser, argv=()):
    """Flags of ``parser``; for a parser with sub-commands (``python -m
    scripts.lists make …``), those of the sub-command named first in argv."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert argv and argv[0] in action.choices, \
                f"{parser.prog}: no sub-command {argv[:1]} (choices {sorted(action.choices)})"
            return known_flags(action.choices[argv[0]], argv[1:])
    return set(parser._option_string_actions)


def check_command(command, monkeypatch):
    words = shlex.split(command.replace("{", "").replace("}", ""))
    while words and re.match(r"^[A-Z_]+=", words[0]):   # VAR=value prefixes
        words = words[1:]
    if not words:
        return
    if words[0] == "bash":
        assert os.path.isfile(os.path.join(REPO, words[1])), f"{command}: no {words[1]}"
    elif words[0] == "pip":
        for i, w in enumerate(words):
            if w == "-r":
                assert os.path.isfile(os.path.join(REPO, words[i + 1])), command
    elif words[0] == "python":
        module, argv = python_target(words)
        if not os.path.isfile(os.path.join(REPO, module.replace(".", "/") + ".py")):
            return   # pytest, paddle's launcher: not ours
        flags = known_flags(capture_parser(module, monkeypatch), argv)
        if "--" in argv:   # what follows a bare -- is passed on to another program
            argv = argv[:argv.index("--")]
        for word in argv:
            if word.startswith("-") and not re.match(r"^-\d", word):
                assert word.split("=")[0] in flags, f"{command}: {module} has no flag {word}"


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_name_real_files_and_flags(doc, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "deploy", "inference_python"))
    commands = code_block_commands(read(doc))
    # a docs/ page may hold no commands (docs/reliability.md); the READMEs must
    assert commands or doc in PAGES, f"no commands found in {doc}"
    for command in commands:
        with monkeypatch.context() as patch:
            check_command(command, patch)


HUB_PAGE = "docs/deployment.md"


def test_the_paddle_hub_example_runs_from_outside_the_repository(tmp_path):
    """The page's Python block, with the repository's path for its
    placeholder, in a fresh Python whose working folder (and sys.path) is
    elsewhere and holds the checkpoint the example names."""
    import paddle
    import models
    from support.paths import GUARD_DIR
    (block,) = re.findall(r"```python\n(.*?)```", read(HUB_PAGE), re.S)
    assert "path/to/this/repo" in block
    checkpoint = re.search(r'pretrained="([^"]+)"', block).group(1)
    os.makedirs(tmp_path / os.path.dirname(checkpoint))
    paddle.save(models.build("alexnet", 64).state_dict(), str(tmp_path / checkpoint) + ".pdparams")
    code = block.replace("path/to/this/repo", REPO) + (
        "\nprint(paddle.hub.list(%r, source='local'), type(model).__name__, model.training)\n"
        % REPO)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=GUARD_DIR))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "['hashnet'] AlexNetHash False"


def test_command_check_can_fail(monkeypatch):
    with pytest.raises(AssertionError, match="has no flag --no_such_flag"):
        check_command("python predict.py --bit 64 --no_such_flag 1", monkeypatch)
    with pytest.raises(AssertionError, match="does not exist"):
        check_command("python no_such_script.py --bit 64", monkeypatch)
    with pytest.raises(AssertionError, match="has no flag --preset"):
        check_command("python -m scripts.lists check --list-dir d --preset coco", monkeypatch)
    with pytest.raises(AssertionError, match="no sub-command"):
        check_command("python -m scripts.lists mend --list-dir d", monkeypatch)


# ---------------------------------------------------------------- layout table
def layout_paths(text):
    table = text[text.index("## Layout"):]
    table = table[:table.index("\n## ")]
    return re.findall(r"`([^`\s]+)`", "\n".join(line.split("|")[1] for line in
                                                 table.splitlines() if line.startswith("| `")))


def test_layout_table_matches_the_tree():
    paths = layout_paths(read(LAYOUT_PAGE))
    for path in paths:
        assert os.path.exists(os.path.join(REPO, path)), \
            f"{LAYOUT_PAGE}'s layout names missing {path}"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    modules = [f for f in tracked if f.endswith(".py") and f.split("/")[0] in ("models", "utils",
                                                                            "deploy")
               and not f.endswith("__init__.py")]
    for module in modules:
        assert any(module == p or (p.endswith("/") and module.startswith(p)) for p in paths), \
            f"{LAYOUT_PAGE}'s layout table does not name {module}"
    for top in sorted({f.split("/")[0] for f in tracked if "/" in f} - {".ci"}):
        assert any(p.split("/")[0] == top for p in paths), f"{LAYOUT_PAGE}'s layout lacks {top}/"


# ---------------------------------------------------------------- links
FENCED = re.compile(r"^```.*?^```", re.S | re.M)   # a code block: no links, no headings


def without_code(text):
    """``text`` without code blocks and inline code, whose brackets are no links."""
    return re.sub(r"`[^`\n]*`", "", FENCED.sub("", text))


def heading_anchors(text):
    """The ``#anchor`` of each heading, as GitHub makes them: lower case,
    punctuation dropped (inline code keeps its text), spaces to hyphens,
    ``-1``, ``-2`` … for repeats."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCED.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def relative_links(text):
    """Targets of the markdown links ``[text](target)`` that are not URLs."""
    return [t for t in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", without_code(text))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(doc, text):
    """The relative links of ``text`` (the file ``doc``) that reach no file,
    or no heading of the page they name."""
    broken = []
    for target in relative_links(text):
        path, _, anchor = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not os.path.exists(os.path.join(REPO, file)):
            broken.append(f"{doc}: {target} (no file {file})")
        elif anchor and file.endswith(".md"):
            page = text if file == doc else read(file)
            if anchor not in heading_anchors(page):
                broken.append(f"{doc}: {target} (no heading #{anchor} in {file})")
    return broken


def unlinked_pages(readme):
    """The docs/ pages the README text ``readme`` does not link."""
    linked = {os.path.normpath(t.partition("#")[0]) for t in relative_links(readme)}
    return [page for page in PAGES if page not in linked]


def test_readme_links_every_docs_page():
    assert PAGES, "no docs/*.md pages"
    missing = unlinked_pages(read("README.md"))
    assert not missing, f"README.md links no {missing}"


@pytest.mark.parametrize("doc", ("README.md",) + PAGES)
def test_relative_links_resolve(doc):
    broken = broken_links(doc, read(doc))
    assert not broken, "; ".join(broken)


def test_link_check_can_fail():
    """The link check is able to fail: a made-up page, a made-up heading."""
    assert broken_links("README.md", "see [a page](docs/no_such_page.md)") == \
        ["README.md: docs/no_such_page.md (no file docs/no_such_page.md)"]
    assert broken_links("docs/data.md", "[x](training.md#no-such-section)") == \
        ["docs/data.md: training.md#no-such-section "
         "(no heading #no-such-section in docs/training.md)"]
    assert broken_links("docs/data.md", "[x](#no-such-section), `[y](nowhere.md)`") == \
        ["docs/data.md: #no-such-section (no heading #no-such-section in docs/data.md)"]
    assert broken_links("docs/data.md", "[x](training.md#backbones---arch) [y](../README.md)") == []
    readme = read("README.md")
    assert unlinked_pages(readme) == []
    assert unlinked_pages(readme.replace("](docs/demo.md", "](docs/demo.txt")) == ["docs/demo.md"]
