"""utils/base/errors.py: what an entry point prints around its work."""
import io
import os
import sys

from utils.base.errors import run_cli


def test_a_name_that_is_not_utf8_prints_escaped(monkeypatch):
    """stdout as a UTF-8 locale opens it (strict): a path holding bytes that
    are not UTF-8 prints with the byte escaped, not a UnicodeEncodeError."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8"))
    run_cli(lambda argv: print(os.fsdecode(b"caf\xe9.jpg")), [])
    sys.stdout.flush()
    assert raw.getvalue() == b"caf\\udce9.jpg\n"
