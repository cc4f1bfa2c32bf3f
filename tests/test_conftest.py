"""The network guard (tests/netguard.py): in the test process, and in a `bot serve` under test."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_serve import NET_GUARD


def test_guard_rejects_public_address() -> None:
    s = socket.socket()
    try:
        with pytest.raises(AssertionError, match="non-loopback"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_guard_allows_loopback() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.socket()
    try:
        c.connect(srv.getsockname())
    finally:
        c.close()
        srv.close()


def test_a_bot_serve_under_test_refuses_and_records_a_public_address(tmp_path: Path) -> None:
    """The sitecustomize the `bot serve` tests install: the connection fails like a network error and the
    address is written where the test reads it."""
    (tmp_path / "sitecustomize.py").write_text(NET_GUARD, encoding="utf-8")
    log = tmp_path / "non-loopback.txt"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), BOT_TEST_NET_LOG=str(log))
    probe = ("import socket\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=1)\n"
             "except OSError as e:\n    print(e)")
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert "non-loopback" in run.stdout, run.stdout + run.stderr
    assert "93.184.216.34" in log.read_text(encoding="utf-8")
