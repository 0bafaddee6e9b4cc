"""Reading the docs and what they describe: a file of the repo, the settings
scripts/demo.sh assigns, an entry point's argparse parser (captured, nothing run)."""
import argparse
import importlib
import os
import re

from support.paths import REPO


def read(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def demo_sh_settings(text):
    """{NAME: default} of scripts/demo.sh's ``NAME=${DEMO_X:-default}`` and
    ``NAME=value`` assignments."""
    found = {}
    for name, value in re.findall(r"\b([A-Z_]+)=(\$\{[A-Z_]+:-[^}]*\}|[^\s$(]+)", text):
        m = re.match(r"\$\{[A-Z_]+:-(.*)\}$", value)
        found.setdefault(name, m.group(1) if m else value)
    return found


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def capture_parser(module_name, monkeypatch):
    """The argparse parser ``module.main`` builds, without running anything:
    ``parse_args`` raises the parser back to us."""
    def capture(self, *args, **kwargs):
        raise _Captured(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    module = importlib.import_module(module_name)
    for call in (lambda: module.main([]), lambda: module.main()):
        try:
            call()
        except _Captured as got:
            return got.parser
        except TypeError:
            continue
    raise AssertionError(f"{module_name}.main never parsed its arguments")
