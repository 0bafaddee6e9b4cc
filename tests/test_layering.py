"""The import graph of the project's own modules (tests excluded): no cycles,
and each library layer imports only itself and the layers below it; the
library (utils/, models/) never imports deploy/, scripts/, benchmarks or an
entry point. Every import counts, including those inside functions.

README's "Layout" table shows the layers; this test is their definition.
"""
import ast
import os
import subprocess

import pytest

from support.paths import REPO

# Library layers, lowest first: a module may import modules of its own layer
# and of the layers before it. A layer is a folder; the package ``utils``
# itself (its __init__) is the base. A module outside these folders (a loose
# utils/x.py) has no layer, and the test below refuses it.
LAYERS = [
    ("base", ["utils.base"]),
    ("data", ["utils.data"]),
    ("retrieval", ["utils.retrieval"]),
    ("models", ["models"]),
    ("methods", ["utils.methods"]),
    ("inference", ["utils.inference"]),
    ("training", ["utils.training"]),
]
LIBRARY = ("utils", "models")


def module_name(path):
    name = path[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def project_modules(repo=REPO):
    """{module name: file} of every tracked non-test Python file."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=repo, capture_output=True, text=True,
                           check=True).stdout.split()
    return {module_name(f): os.path.join(repo, f) for f in files
            if not f.startswith("tests/") and f != "conftest.py"}


def imported_modules(source, module, is_package, modules):
    """The project modules the import statements in ``source`` name (absolute
    and relative, at any depth of the file): ``from utils.training import
    engine`` names the module utils.training.engine, ``from utils.retrieval.metrics
    import x`` names utils.retrieval.metrics (as import-graph tools count them)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in modules else base


def import_graph(modules):
    """{module: set of project modules it imports}."""
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        targets = set(imported_modules(source, name, path.endswith("__init__.py"), modules))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module):
    """Index of the library layer ``module`` belongs to, None outside the layers."""
    if module == "utils":
        return 0
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return i
    return None


def layering_violations(graph):
    """(importer, imported, why) for each import against the layering."""
    bad = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module)
        if mine is None:
            continue   # entry points, deploy/, scripts/, benchmarks may import the library
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs is None:
                bad.append((module, target, "library code imports a tool or an entry point"))
            elif theirs > mine:
                bad.append((module, target, f"layer {LAYERS[mine][0]} imports the higher layer "
                                            f"{LAYERS[theirs][0]}"))
    return bad


def test_every_library_module_has_a_layer():
    unplaced = [m for m in project_modules() if m.split(".")[0] in LIBRARY and layer_of(m) is None]
    assert not unplaced, f"modules outside LAYERS: {unplaced}"


def test_no_import_cycles():
    found = cycles(import_graph(project_modules()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_library_imports_only_its_own_and_lower_layers():
    bad = layering_violations(import_graph(project_modules()))
    assert not bad, "\n".join(f"{a} imports {b}: {why}" for a, b, why in bad)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
])
def test_cycle_finder(graph, expected):
    assert cycles(graph) == expected


def test_an_injected_cycle_and_an_upward_import_are_caught(tmp_path):
    """The same checks on a copy of two real modules with a cycle injected."""
    modules = project_modules()
    graph = import_graph(modules)
    graph["utils.base.io"] = graph["utils.base.io"] | {"utils.training.engine"}
    assert any("utils.base.io" in c and "utils.training.engine" in c for c in cycles(graph))
    assert ("utils.base.io", "utils.training.engine",
            "layer base imports the higher layer training") in layering_violations(graph)
    graph["models.alexnet"] = graph["models.alexnet"] | {"deploy.search"}
    assert ("models.alexnet", "deploy.search",
            "library code imports a tool or an entry point") in layering_violations(graph)
    graph["utils.methods.hashnet"] = graph["utils.methods.hashnet"] | {"utils.training.engine"}
    assert ("utils.methods.hashnet", "utils.training.engine",
            "layer methods imports the higher layer training") in layering_violations(graph)
    graph["utils.training.recipes"] = graph["utils.training.recipes"] | {"utils.methods.registry"}
    assert not [v for v in layering_violations(graph) if v[0] == "utils.training.recipes"]


def test_a_loose_module_has_no_layer():
    assert layer_of("utils.tools") is None and layer_of("utils.loss") is None
    assert layer_of("utils") == 0 and layer_of("utils.methods.registry") == 4
