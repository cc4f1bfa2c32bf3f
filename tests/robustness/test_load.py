"""Load through the real channels: 50 users x 5 messages at once through the loopback Telegram server, and a
burst through the WeCom callback. Every message is answered or told busy, none is lost, none is answered
twice, every turn ends delivered, and memory stays flat (RSS at start and end in the printed report).

The model is the canned-token FakeBackend with a queue limit like model.queue_limit, so the channel, core,
engine, store and HTTP traffic are the real ones and the run takes seconds.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

from bot.channels.wecom import WecomChannel
from bot.config import WecomConfig
from bot.core.gate import Gate, Policy
from bot.errors import BackendBusy
from tests.fakes.backend import FakeBackend
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.wecom_server import AES_KEY, AGENT_ID, CORP_ID, CORP_SECRET, TOKEN, CallbackClient, FakeWecomApi
from tests.helpers import make_core
from tests.test_telegram import marker, running

USERS, MESSAGES = 50, 5
QUEUE_LIMIT = 4
BUSY = BackendBusy.user_message


def rss_mb() -> float:
    """This process's resident memory, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def burst(server: FakeTelegram, first_user: int, users: int = USERS,
                messages: int = MESSAGES) -> dict[int, int]:
    """Every user sends every message at once; message id -> user."""
    return {server.private(first_user + u, f"科大讯飞董事长是谁？（第{m + 1}问）", language_code="zh"): first_user + u
            for m in range(messages) for u in range(users)}


def finals(server: FakeTelegram, asked: dict[int, int], answer_mark: str) -> dict[int, list[str]]:
    """Per user message, the bot's replies to it that are a final answer or the busy note."""
    out: dict[int, list[str]] = {mid: [] for mid in asked}
    for m in server.messages.values():
        if m.from_bot and m.reply_to in out and (answer_mark in m.text or m.text == BUSY):
            out[m.reply_to].append(m.text)
    return out


async def test_fifty_users_five_messages_each_through_telegram(tmp_path: Path) -> None:
    backend = FakeBackend("", delay=0.01, queue_limit=QUEUE_LIMIT)  # ~0.15 s an answer: the queue fills
    core, store = await make_core(tmp_path, backend)
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    server = FakeTelegram()
    await server.start()
    try:
        async with running(server, core, rate_limit_per_minute=MESSAGES + 1, edit_interval_s=0.2) as channel:
            channel.api.backoff_s = 0.01
            warm = await burst(server, 1000, 10, 1)  # a first round, so the start RSS holds the code and caches
            await server.wait_for(lambda: all(finals(server, warm, "[1] ").values()), timeout=240)
            gc.collect()
            start_rss = rss_mb()
            asked = await burst(server, 5000)
            await server.wait_for(lambda: all(finals(server, asked, "[1] ").values()), timeout=240)
            await asyncio.sleep(0.5)  # a late duplicate would show up now
            gc.collect()
            end_rss = rss_mb()
        got = finals(server, asked, "[1] ")
        assert all(len(texts) == 1 for texts in got.values()), [t for t in got.values() if len(t) != 1][:3]
        busy = sum(texts == [BUSY] for texts in got.values())
        answered = len(asked) - busy
        with sqlite3.connect(store.path) as db:
            rows = db.execute("SELECT status, delivery, count(*) FROM turns WHERE CAST(user_id AS INTEGER) >= 5000 "
                              "GROUP BY status, delivery").fetchall()
        expected = {("answered", "delivered"): answered, ("error", "delivered"): busy}
        assert dict(((s, d), n) for s, d, n in rows) == {k: n for k, n in expected.items() if n}
        assert answered >= QUEUE_LIMIT and busy and sum(n for *_, n in rows) == USERS * MESSAGES  # none lost
        assert end_rss - start_rss < 60, (start_rss, end_rss)
        print(f"\ntelegram load: {USERS} users x {MESSAGES} messages: {answered} answered, {busy} told busy, "
              f"0 lost, 0 twice; RSS {start_rss:.0f} -> {end_rss:.0f} MB")
    finally:
        await server.stop()
        await store.close()


async def wecom_burst(client: CallbackClient, api: FakeWecomApi, prefix: str, users: int,
                      messages: int) -> tuple[int, int]:
    """Every user posts every message at once; (answered, told busy) once each has one reply."""
    api.sent.clear()
    acks = await asyncio.gather(*(client.post(client.text_xml(f"{prefix}{u}", f"科大讯飞董事长是谁？（第{m + 1}问）"))
                                  for m in range(messages) for u in range(users)))
    assert all(resp.status_code == 200 for resp, _, _ in acks)  # every callback acknowledged at once
    await api.wait_sent(users * messages, timeout=120)
    await asyncio.sleep(0.3)  # a duplicate would show up now
    texts = [m["text"]["content"] for m in api.sent]
    assert len(texts) == users * messages, len(texts)
    return sum("刘庆峰" in t for t in texts), sum(t == BUSY for t in texts)


async def test_a_burst_through_the_wecom_callback(tmp_path: Path) -> None:
    users, messages = 20, 5
    backend = FakeBackend("", delay=0.01, queue_limit=QUEUE_LIMIT)
    core, store = await make_core(tmp_path, backend)
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    api = FakeWecomApi()
    await api.start()
    cfg = WecomConfig(listen="127.0.0.1:0", api_base_url=api.base_url, corp_id=CORP_ID, agent_id=AGENT_ID,
                      corp_secret=CORP_SECRET, token=TOKEN, aes_key=AES_KEY, rate_limit_per_minute=messages + 1)
    core.gate = Gate(800, {"wecom": Policy.of(cfg)})
    channel = WecomChannel(cfg, core, retry_delays=(0.05, 0.05))
    await channel.start()
    client = CallbackClient(f"http://127.0.0.1:{channel.port}{cfg.path}")
    try:
        first = await wecom_burst(client, api, "a", users, messages)  # the first burst grows pools and arenas
        gc.collect()
        start_rss = rss_mb()
        second = await wecom_burst(client, api, "b", users, messages)
        gc.collect()
        end_rss = rss_mb()
        for user_prefix, (answered, busy) in (("a", first), ("b", second)):
            assert answered + busy == users * messages and answered >= QUEUE_LIMIT and busy
            with sqlite3.connect(store.path) as db:
                logged = db.execute("SELECT count(*), sum(delivery = 'delivered') FROM turns WHERE user_id LIKE ?",
                                    (f"{user_prefix}%",)).fetchone()
            assert logged == (users * messages,) * 2  # every one logged and delivered: none lost
        assert end_rss - start_rss < 30, (start_rss, end_rss)  # a second burst needs no more memory
        print(f"\nwecom burst, twice: {users} users x {messages} messages: {second[0]} answered, {second[1]} told "
              f"busy, 0 lost, 0 twice; RSS after the first {start_rss:.0f} MB, after the second {end_rss:.0f} MB")
    finally:
        await channel.stop()
        await api.stop()
        await store.close()
