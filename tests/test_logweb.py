"""`bot logs serve` in a real headless Chromium (Debian's package, installed by scripts/test-deps.sh): the
page renders a recent turn's question, a screenshot is kept, the log cannot be written through it, and
with a token nothing is shown without it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from bot.log.store import LogStore
from bot.log.web import is_local
from bot.types import Citation, Incoming, Reply
from tests.test_serve import free_port, port_open

BOT = str(Path(sys.executable).parent / "bot")
QUESTION = "科大讯飞董事长是谁？"
DECLINED = "文章提到了苹果公司吗？"
# No request of the browser's may leave this machine: every host name but the page's resolves to nothing,
# and the background services (updates, sync, metrics) are off.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                  "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture
async def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "bot.sqlite3"
    store = await LogStore.open(path)
    try:
        t = await store.start_turn(Incoming("telegram", "42", "7", QUESTION, message_id="1"))
        assert t is not None
        cited = [Citation("p1", "全国人大代表刘庆峰", "", 1)]
        await store.finish_turn(t, Reply("科大讯飞董事长是刘庆峰。[1]", False, cited, total_ms=2400))
        await store.delivered(t)
        assert await store.ratings.rate(t, "telegram", "42", "8", -1)
        await store.ratings.reason(t, "8", "REASON-只说了名字")
        t = await store.start_turn(Incoming("wecom", "zhang", "zhang", DECLINED, message_id="2"))
        assert t is not None
        await store.finish_turn(t, Reply("文章没有提到。", True, total_ms=900, decline_reason="no_key_term: 苹果公司"))
    finally:
        await store.close()
    return path


@pytest.fixture
def chromium() -> Iterator[str]:
    path = shutil.which("chromium")
    assert path, "headless Chromium is missing; fix: bash scripts/test-deps.sh (what `make test` runs first)"
    yield path


@asynccontextmanager
async def log_page(tmp_path: Path, database: Path, *args: str) -> AsyncIterator[str]:
    """`bot logs serve` in a subprocess; yields its base URL."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"data_dir": str(tmp_path / "data"), "database": str(database)}), encoding="utf-8")
    env = {**os.environ, "BOT_CONFIG": str(config)}
    env.pop("BOT_DATABASE", None)
    proc = subprocess.Popen([BOT, "logs", "serve", "--port", str(port), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if await port_open(port):
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def browse(chromium: str, tmp_path: Path, url: str, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran, as headless Chromium rendered it (and a screenshot)."""
    profile = ["--user-data-dir=" + str(tmp_path / "chromium-profile"), "--window-size=1280,520"]
    shot = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = await asyncio.create_subprocess_exec(chromium, *CHROMIUM_FLAGS, *profile, *shot, url,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out.decode("utf-8", "replace")


async def test_the_log_page_shows_recent_turns_in_a_real_browser(chromium: str, tmp_path: Path,
                                                                 log_file: Path) -> None:
    async with log_page(tmp_path, log_file) as base:
        dom = await browse(chromium, tmp_path, f"{base}/bot/recent_turns")
        assert QUESTION in dom and "科大讯飞董事长是刘庆峰" in dom and DECLINED in dom
        declines = await browse(chromium, tmp_path, f"{base}/bot/declines")
        assert DECLINED in declines and "no_key_term" in declines and QUESTION not in declines
        gaps = await browse(chromium, tmp_path, f"{base}/bot/gaps")  # declined, or rated 👎 with its reason
        assert DECLINED in gaps and QUESTION in gaps and "REASON-只说了名字" in gaps
        rated = await browse(chromium, tmp_path, f"{base}/bot/ratings")
        assert "👎" in rated and "REASON-只说了名字" in rated and DECLINED not in rated
        shot = tmp_path / "log-page.png"
        await browse(chromium, tmp_path, f"{base}/bot/recent_turns", screenshot=shot)
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
        print(f"\nscreenshot of the log page: {shot}")
        async with httpx.AsyncClient() as client:  # a write through the SQL box is refused
            r = await client.get(f"{base}/bot", params={"sql": "DELETE FROM turns"})
        assert r.status_code >= 400
    with sqlite3.connect(log_file) as db:
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 2


async def test_with_a_token_nothing_is_shown_without_it(chromium: str, tmp_path: Path, log_file: Path) -> None:
    async with log_page(tmp_path, log_file, "--token", "s3cret-token") as base:
        async with httpx.AsyncClient() as client:
            denied = await client.get(f"{base}/bot/recent_turns")
            assert denied.status_code == 401 and QUESTION not in denied.text
            wrong = await client.get(f"{base}/bot/recent_turns", params={"token": "guess"})
            assert wrong.status_code == 401
        dom = await browse(chromium, tmp_path, f"{base}/bot/recent_turns?token=s3cret-token")
        assert QUESTION in dom


def test_only_loopback_addresses_count_as_local() -> None:
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.5") and not is_local("example.org")


async def test_on_localhost_a_request_for_another_host_name_is_refused(tmp_path: Path, log_file: Path) -> None:
    async with log_page(tmp_path, log_file) as base, httpx.AsyncClient() as client:
        rebound = await client.get(f"{base}/bot/recent_turns", headers={"Host": "evil.example:8001"})
        assert rebound.status_code == 421 and QUESTION not in rebound.text
        assert (await client.get(f"{base}/bot/recent_turns")).status_code == 200
