"""Past one machine, on loopback: three `bot serve` instances behind nginx (deploy/nginx.conf), one llama.cpp
`llama-server --parallel 4` (built from the vendored source, as `make bench` builds it), one PostgreSQL log
(Debian's server in a temporary folder), and the Telegram fake delivering webhooks through nginx, retrying
what is not acknowledged as Telegram does. Under load: an instance killed with SIGKILL, PostgreSQL restarted,
the inference service restarted. Every question must be answered and delivered once and logged once.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from bot.text import phrases
from tests.fakes.telegram_server import FakeTelegram
from tests.helpers import ROOT
from tests.postgres import PostgresServer
from tests.test_serve import SMALL, Serve, free_port, port_open

pytestmark = pytest.mark.model
QUESTIONS = ("科大讯飞董事长是谁？", "刘庆峰认为应当加快推进什么建设？", "文心一言是哪家公司开发的？")
SECRET = "cluster-webhook-secret"
# What a placeholder shows before the answer: thinking, the queue position, a hidden step's progress.
PROGRESS = re.compile("|".join([re.escape(phrases.message("queued", "zh", n=0)).replace("0", r"\d+")]
                               + [re.escape(texts["zh"]) for key, texts in phrases.MESSAGES.items()
                                  if key == "thinking" or key.startswith("progress_")]))
DONE_TIMEOUT_S = 600.0


def llama_server_binary() -> Path:
    """llama.cpp's server, built once from llama-cpp-python's vendored source (scripts/llama-tools.sh)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "llama-tools.sh")], check=True, capture_output=True,
                         text=True, timeout=1800)
    return Path(out.stdout.strip().splitlines()[-1]) / "llama-server"


class Process:
    """A service in a subprocess, its output in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def wait_http(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False) as client:
        while True:
            try:
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} not up within {timeout:.0f} s"
            await asyncio.sleep(0.5)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def inference(tmp_path: Path) -> Iterator[Process]:
    port = free_port()
    model = ROOT / "models" / f"{SMALL}-instruct-q4_k_m.gguf"
    proc = Process([str(llama_server_binary()), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                    "--parallel", "4", "-c", "32768", "-t", "2", "--alias", SMALL], tmp_path / "llama-server.log")
    proc.port = port  # type: ignore[attr-defined]
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


def nginx_config(tmp_path: Path, listen: int, upstreams: list[int]) -> Path:
    """deploy/nginx.conf with this run's ports and folders."""
    text = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    lines = [f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams]
    kept = [ln for ln in text.splitlines() if "server 127.0.0.1:84" not in ln]
    at = next(i for i, ln in enumerate(kept) if "upstream bot_webhooks" in ln) + 2
    kept[at:at] = lines
    text = "\n".join(kept).replace("127.0.0.1:8080", f"127.0.0.1:{listen}")
    text = text.replace("/run/bot-nginx.pid", str(tmp_path / "nginx.pid"))
    path = tmp_path / "nginx.conf"
    path.write_text(text, encoding="utf-8")
    return path


class Cluster:
    """The instances, nginx, and Telegram's side: updates posted through nginx until acknowledged."""

    def __init__(self, tmp_path: Path, telegram: FakeTelegram, url: str, inference_port: int) -> None:
        self.tmp, self.telegram, self.url = tmp_path, telegram, url
        self.ports = [free_port() for _ in range(3)]
        self.listen = free_port()
        self.instances: list[Serve] = []
        data = tmp_path / "data"
        for i, port in enumerate(self.ports):
            folder = tmp_path / f"instance{i}"
            folder.mkdir()
            settings = {
                "model": {"backend": "openai", "base_url": f"http://127.0.0.1:{inference_port}/v1", "name": SMALL,
                          "dir": str(ROOT / "models")},
                "log": {"database_url": url, "lease_s": 6},
                "telegram": {"mode": "webhook", "webhook_listen": f"127.0.0.1:{port}", "webhook_path": "/telegram",
                             "webhook_url": "https://bot.example.org/telegram", "rate_limit_per_minute": 30,
                             "edit_interval_s": 0.5},
            }
            env = {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_BASE_URL": telegram.base_url,
                   "TELEGRAM_WEBHOOK_SECRET": SECRET}
            self.instances.append(Serve(folder, data / str(i), "telegram", env, settings=settings))
        self.nginx = Process(["nginx", "-c", str(nginx_config(tmp_path, self.listen, self.ports)), "-g",
                              "daemon off;"], tmp_path / "nginx.log")
        self.retries = 0

    async def start(self) -> None:
        for serve in self.instances:
            serve.start()
        for serve, port in zip(self.instances, self.ports, strict=True):
            await serve.wait_port(port)
        self.nginx.start()
        deadline = time.monotonic() + 30
        while not await port_open(self.listen):
            assert time.monotonic() < deadline, self.nginx.log.read_text(errors="replace")
            await asyncio.sleep(0.1)

    async def deliver(self, update: dict[str, Any]) -> None:
        """POST an update through nginx as Telegram does: again after a second until it gets a 200."""
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                try:
                    resp = await client.post(f"http://127.0.0.1:{self.listen}/telegram", json=update, timeout=10,
                                             headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
                    if resp.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                self.retries += 1
                await asyncio.sleep(1.0)

    async def ask(self, user: int, text: str) -> tuple[int, asyncio.Task[None]]:
        mid = self.telegram.private(user, text, language_code="zh")
        update = self.telegram.updates[-1]
        return mid, asyncio.create_task(self.deliver(update))

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row, connect_timeout=3) as conn:
            return list(conn.execute(sql, args or None).fetchall())

    def stop(self) -> None:
        self.nginx.stop()
        for serve in self.instances:
            serve.kill()


@pytest.fixture
async def cluster(tmp_path: Path, postgres: PostgresServer, inference: Process,
                  telegram: FakeTelegram) -> AsyncIterator[Cluster]:
    await wait_http(f"http://127.0.0.1:{inference.port}/health")  # type: ignore[attr-defined]
    c = Cluster(tmp_path, telegram, postgres.new_database(), inference.port)  # type: ignore[attr-defined]
    try:
        await c.start()
        yield c
    except BaseException:
        for serve in c.instances:
            print(f"---- {serve.stderr_path} ----\n{serve.stderr_tail()}")
        raise
    finally:
        c.stop()


def settled(cluster: Cluster, asked: list[tuple[int, int]]) -> bool:
    """Every asked message has its turn logged and delivered (or given up), as far as the log can be read."""
    try:
        rows = cluster.rows("SELECT message_id, delivery FROM turns")
    except psycopg.Error:
        return False
    done = {r["message_id"] for r in rows if r["delivery"] in ("delivered", "failed")}
    return all(str(mid) in done for _, mid in asked)


async def wait_settled(cluster: Cluster, asked: list[tuple[int, int]], what: str) -> None:
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while not settled(cluster, asked):
        assert time.monotonic() < deadline, f"{what}: not every question answered and delivered"
        await asyncio.sleep(1.0)


def check_once(cluster: Cluster, asked: list[tuple[int, int]]) -> dict[str, int]:
    """Each question: one turn in the log, delivered, and one reply in the chat. Counts for the report."""
    rows = cluster.rows("SELECT message_id, chat_id, status, delivery, refused, error, lease_owner FROM turns")
    by_message: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_message.setdefault(r["message_id"], []).append(r)
    doubled = [m for m, rs in by_message.items() if len(rs) > 1]
    assert not doubled, f"turns logged twice: {doubled}"
    replies = {mid: [m.text for m in cluster.telegram.bot_messages(user) if m.reply_to == mid] for user, mid in asked}
    finals = {mid: [t for t in texts if not PROGRESS.match(t)] for mid, texts in replies.items()}
    twice = {mid: texts for mid, texts in finals.items() if len(texts) != 1}
    assert not twice, f"questions without exactly one answer: {twice}"
    states = [by_message[str(mid)][0] for _, mid in asked]
    assert all(r["delivery"] == "delivered" for r in states), [r for r in states if r["delivery"] != "delivered"]
    return {"questions": len(asked), "answered": sum(1 for r in states if r["status"] == "answered"
                                                     and not r["refused"]),
            "declined": sum(1 for r in states if r["refused"]), "errors": sum(1 for r in states if r["error"]),
            # A dead instance's placeholder is edited into the answer by the instance taking the turn over.
            "stale_placeholders": sum(len(texts) - 1 for texts in replies.values())}


async def test_cluster_answers_each_question_once_through_a_kill_and_restarts(
        cluster: Cluster, postgres: PostgresServer, inference: Process) -> None:
    t0 = time.monotonic()
    # 30 users x 3 questions through nginx; one instance is killed with SIGKILL once a third are answered.
    asked: list[tuple[int, int]] = []
    sends: list[asyncio.Task[None]] = []
    for round_ in range(3):
        for u in range(30):
            user = 700000 + u
            mid, task = await cluster.ask(user, QUESTIONS[(u + round_) % 3])
            asked.append((user, mid))
            sends.append(task)
        await asyncio.sleep(0.5)
    killed = cluster.instances[2]
    while len(cluster.rows("SELECT id FROM turns WHERE delivery='delivered'")) < 30:
        await asyncio.sleep(0.2)
    orphaned = cluster.rows("SELECT id FROM turns WHERE lease_owner LIKE %s AND delivery IS DISTINCT FROM "
                            "'delivered'", f"%:{killed.proc.pid}:%")  # type: ignore[union-attr]
    killed.kill()
    await asyncio.gather(*sends)
    await wait_settled(cluster, asked, "after the SIGKILL")
    load = check_once(cluster, asked)
    load_s = time.monotonic() - t0
    taken_over = cluster.rows("SELECT id FROM turns WHERE id = ANY(%s) AND delivery='delivered'",
                              [r["id"] for r in orphaned]) if orphaned else []
    assert len(taken_over) == len(orphaned)
    assert load["stale_placeholders"] == 0  # every placeholder was sent and logged long before the kill

    # PostgreSQL restarted under load: answers wait (kept writes) or are refused plainly; none lost or doubled.
    second = [await cluster.ask(700100 + u, QUESTIONS[u % 3]) for u in range(10)]
    await asyncio.sleep(1.0)
    postgres.restart(down_s=3.0)
    await asyncio.gather(*(task for _, task in second))
    pg_asked = [(700100 + u, mid) for u, (mid, _) in enumerate(second)]
    await wait_settled(cluster, pg_asked, "after the PostgreSQL restart")
    pg = check_once(cluster, pg_asked)

    # The inference service restarted under load: queued turns are answered after it or fail plainly.
    third = [await cluster.ask(700200 + u, QUESTIONS[u % 3]) for u in range(10)]
    await asyncio.sleep(1.0)
    inference.stop()
    await asyncio.sleep(2.0)
    inference.start()
    await asyncio.gather(*(task for _, task in third))
    llm_asked = [(700200 + u, mid) for u, (mid, _) in enumerate(third)]
    await wait_settled(cluster, llm_asked, "after the inference service restart")
    llm = check_once(cluster, llm_asked)
    for serve in cluster.instances[:2]:
        serve.check_alive()
        assert serve.non_loopback() == []
    print(f"\ncluster: {load} in {load_s:.0f} s ({len(asked) / load_s:.2f} questions/s), {len(orphaned)} turns "
          f"of the killed instance taken over; PostgreSQL restart: {pg}; inference restart: {llm}; "
          f"{cluster.retries} webhook deliveries retried; {os.cpu_count()} cores")
