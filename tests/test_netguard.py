"""tests/netguard/loopback_only.py: no test reaches past 127.0.0.1, in the
test process and in every Python it starts."""
import os
import socket
import subprocess
import sys

import pytest

import loopback_only  # tests/netguard/, put on sys.path by tests/conftest.py
from support.paths import GUARD_DIR


def test_guard_refuses_other_addresses_in_process(monkeypatch, tmp_path):
    log = tmp_path / "refused.txt"
    monkeypatch.setenv(loopback_only.LOG_ENV, str(log))
    with pytest.raises(loopback_only.NetworkGuardError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(loopback_only.NetworkGuardError):
        socket.getaddrinfo("images.cocodataset.org", 80)
    assert len(log.read_text().splitlines()) == 2


def test_guard_reaches_subprocesses(tmp_path):
    log = tmp_path / "refused.txt"
    env = dict(os.environ, **{loopback_only.LOG_ENV: str(log)})
    code = "import urllib.request; urllib.request.urlopen('http://example.org', timeout=2)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "NetworkGuardError" in proc.stderr
    assert "example.org" in log.read_text()
    assert GUARD_DIR in os.environ["PYTHONPATH"].split(os.pathsep)
