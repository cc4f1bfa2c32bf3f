"""Faults an operator meets, each with what the user (or operator) sees: broken model files and log databases
end in one `error:` line and exit 2, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

BOT = str(Path(sys.executable).parent / "bot")


def run_bot(tmp_path: Path, config: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`bot --config <file>` in a subprocess, as an operator types it."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "TELEGRAM_", "WECOM_"))}
    return subprocess.run([BOT, "--config", str(cfg), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path, env=env)


def one_error_line(run: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run ended with exit 2 and a single `error:` line on stderr holding every needle (and a fix)."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    assert "fix:" in lines[0] and all(n in lines[0] for n in needles), lines[0]
    assert run.stdout == ""
    return lines[0]


def config(tmp_path: Path, *, database: str | None = None, model: str = "qwen2.5-coder-0.5b") -> str:
    return (f"data_dir: {tmp_path / 'data'}\ndatabase: {database or tmp_path / 'data' / 'bot.sqlite3'}\n"
            f"model:\n  name: {model}\n  dir: {ROOT / 'models'}\ncontent:\n  dir: {ROOT / 'content'}\n")


@pytest.mark.parametrize("body", [os.urandom(300_000), b"GGUF\x03\x00\x00\x00" + b"\x00" * 64],
                         ids=["random-bytes", "cut-short-header"])
def test_a_corrupt_model_file_is_one_error_line(tmp_path: Path, body: bytes) -> None:
    model = tmp_path / "broken.gguf"
    model.write_bytes(body)
    run = run_bot(tmp_path, config(tmp_path, model=str(model)), "ask", "--json", "刘庆峰是谁？")
    one_error_line(run, "could not load the model file", str(model))


def test_a_missing_model_file_is_one_error_line(tmp_path: Path) -> None:
    run = run_bot(tmp_path, config(tmp_path, model=str(tmp_path / "nowhere.gguf")), "ask", "刘庆峰是谁？")
    one_error_line(run, "not found", "model.name")


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_an_unwritable_database_path_is_one_error_line(tmp_path: Path, where: str) -> None:
    # Tests may run as root, for whom file modes do not stop a write: these paths fail for root too.
    if where == "under-a-file":
        (tmp_path / "plain-file").write_text("x")
        database = tmp_path / "plain-file" / "bot.sqlite3"
    else:
        database = Path("/proc/bot-test.sqlite3")
    run = run_bot(tmp_path, config(tmp_path, database=str(database)), "ask", "刘庆峰是谁？")
    one_error_line(run, "cannot open the log database", str(database), "$BOT_DATABASE")


def test_a_database_locked_by_another_writer_is_one_error_line(tmp_path: Path) -> None:
    database = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another program in the middle of a long write
    try:
        started = time.monotonic()
        run = run_bot(tmp_path, config(tmp_path, database=str(database)), "logs")
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_error_line(run, "locked by another process", str(database))
    assert waited >= 4.0  # it waited out the busy timeout before giving up
