"""`bot logs --export` streams: exporting 100,000 turns needs no more memory than exporting 1,000."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bot.log.store import LogStore

BOT = str(Path(sys.executable).parent / "bot")


async def log_with(tmp_path: Path, turns: int) -> Path:
    """A migrated log holding `turns` answered turns (written directly: seconds, not a model run)."""
    path = tmp_path / f"log{turns}.sqlite3"
    store = await LogStore.open(path)
    await store.close()
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO turns (channel, chat_id, user_id, conversation, question, status, answer, draft, "
            "created_at, delivery) VALUES ('telegram', ?, ?, ?, ?, 'answered', ?, ?, ?, 'delivered')",
            ((str(i % 500), str(i % 500), f"telegram:{i % 500}", f"第{i}个问题：科大讯飞董事长是谁？",
              "科大讯飞董事长是刘庆峰。[1]" * 4, "草稿" * 20, now) for i in range(turns)))
    return path


def peak_rss_mb(tmp_path: Path, database: Path) -> float:
    """The peak RSS of one `bot logs --export jsonl` child (its output thrown away)."""
    cfg = tmp_path / f"{database.stem}.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ndatabase: {database}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    # A runner per size: RUSAGE_CHILDREN's peak is over all children waited for, so each gets its own.
    code = ("import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, check=True)"
            ".stdout; print(out.count(b'\\n'), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    run = subprocess.run([sys.executable, "-c", code, BOT, "--config", str(cfg), "logs", "--export", "jsonl"],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    lines, peak_kb = map(int, run.stdout.split())
    assert lines >= int(database.stem.removeprefix("log"))  # every turn came out
    return peak_kb / 1024


async def test_exporting_a_hundred_thousand_turns_keeps_memory_flat(tmp_path: Path) -> None:
    small, big = await log_with(tmp_path, 1_000), await log_with(tmp_path, 100_000)
    small_mb, big_mb = peak_rss_mb(tmp_path, small), peak_rss_mb(tmp_path, big)
    assert big_mb - small_mb < 25, (small_mb, big_mb)  # held as a list, the rows would take hundreds of MB
    print(f"\nexport peak RSS: 1,000 turns {small_mb:.0f} MB, 100,000 turns {big_mb:.0f} MB")
