"""The WeCom AI bot over its long connection, end to end on loopback: the fake gateway (tests/fakes/
wecom_bot_gateway.py, as strict as the documented protocol) -> the channel -> the core with a fake backend."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.channels.wecom_bot import WecomBotChannel
from bot.channels.wecom_bot_stream import WsExchange
from bot.config import WecomBotConfig
from bot.core.gate import Gate, Policy
from bot.core.runtime import Core
from bot.errors import ConfigError
from bot.text import phrases
from bot.types import Incoming, Notice
from tests.fakes.backend import FakeBackend
from tests.fakes.wecom_bot_gateway import BOT_ID, BOT_SECRET, FakeGateway
from tests.helpers import make_core, turns

ANSWER = "科大讯飞董事长是刘庆峰。"
QUESTION = "科大讯飞董事长是谁？"
NAME = "知识助手"


@dataclass
class Bot:
    channel: WecomBotChannel
    gw: FakeGateway
    core: Core
    store: Any
    cfg: WecomBotConfig

    async def finished(self, req_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The finishing stream frame of a callback."""
        await self.gw.wait_for(lambda: any(s.get("finish") for s in self.gw.streams(req_id)), timeout,
                               f"a finished stream for {req_id}")
        return self.gw.streams(req_id)[-1]

    async def settled(self) -> None:
        """Every reply in flight done (the channel's background tasks)."""
        for _ in range(200):
            if not self.channel._tasks:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("replies still running")


MakeBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def gw() -> AsyncIterator[FakeGateway]:
    gateway = FakeGateway(heartbeat_timeout_s=5.0)
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
async def make_bot(tmp_path: Path, gw: FakeGateway) -> AsyncIterator[MakeBot]:
    started: list[Bot] = []

    async def factory(answer: str = ANSWER, *, delay: float = 0.0, **overrides: Any) -> Bot:
        core, store = await make_core(tmp_path, FakeBackend(answer, delay=delay))
        settings: dict[str, Any] = dict(gateway_url=gw.url, bot_id=BOT_ID, secret=BOT_SECRET, admins=["boss"],
                                        names=[NAME], stream_interval_s=0.05, reconnect_max_s=0.2,
                                        heartbeat_s=1.0, ack_timeout_s=2.0, offline_wait_s=5.0,
                                        rate_limit_per_minute=30)
        settings.update(overrides)
        cfg = WecomBotConfig(**settings)
        core.gate = Gate(800, {"wecom_bot": Policy.of(cfg)})  # as the composition root builds it
        channel = WecomBotChannel(cfg, core)
        await channel.start()
        bot = Bot(channel, gw, core, store, cfg)
        started.append(bot)
        return bot

    yield factory
    for bot in started:
        await bot.channel.stop()
        await bot.store.close()


def delivery(store: Any) -> list[tuple[str, str, str | None]]:
    """(message id, delivery, delivered_via) of every logged turn."""
    return [(r["message_id"], r["delivery"], r["delivered_via"]) for r in turns(store)]


# ---- streaming ----


async def test_aibot_private_question_streams_growing_frames_then_finishes_with_its_citation(
        make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02)
    req = bot.gw.message("zhangsan", QUESTION)
    final = await bot.finished(req)
    frames = bot.gw.streams(req)
    assert len(frames) >= 2 and len({f["id"] for f in frames}) == 1, frames
    assert frames[0]["content"] == phrases.message("thinking", "zh") and not frames[0]["finish"]
    answer, _, sources = final["content"].partition("\n\n[1] ")
    assert "刘庆峰" in answer and "[1]" in answer and sources, final
    assert not bot.gw.errors, bot.gw.errors
    await bot.settled()
    assert delivery(bot.store) == [(bot.gw.msgid_of(req), "delivered", "stream")]
    (row,) = turns(bot.store)
    assert row["channel"] == "wecom_bot" and row["chat_id"] == row["user_id"] == "zhangsan"
    assert json.loads(row["citations"])


async def test_aibot_shows_hidden_progress_while_no_sentence_is_ready(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.05)
    req = bot.gw.message("zhangsan", QUESTION)
    await bot.finished(req)
    shown = [f["content"] for f in bot.gw.streams(req)]
    progress = {phrases.message(f"progress_{s}", "zh") for s in ("answering", "extracting", "rechecking")}
    assert any(s.split(" ")[0] in progress for s in shown), shown


async def test_aibot_answer_past_the_stream_limit_continues_in_new_messages(make_bot: MakeBot) -> None:
    bot = await make_bot()
    long_text = "。".join(f"第{i}段内容" * 60 for i in range(40))  # well over 20480 bytes

    class LongTurn:  # a turn whose reply is this long text
        incoming, lang, is_question, turn_id = None, "zh", False, None
        delivered_with: tuple[Any, ...] = ()

        async def events(self) -> AsyncIterator[Any]:
            yield Notice(long_text)

        async def delivered(self, error: str | None = None, *, final: bool = False, via: str = "") -> None:
            LongTurn.delivered_with = (error, via)

    req = bot.gw.message("zhangsan", "@someone else", chat_id="grp1")  # not for the bot: its req_id unused
    await asyncio.sleep(0.2)
    conn = bot.channel.transport
    bubble = WsExchange(conn, req, conn.generation, "grp1", req).bubble("n-long")  # type: ignore[arg-type, attr-defined]
    await bot.channel._render(LongTurn(), bubble)  # type: ignore[arg-type]
    (final,) = [s for s in bot.gw.streams(req) if s["finish"]]
    pushed = [p["markdown"]["content"] for p in bot.gw.pushes("grp1")]
    sizes = [len(t.encode()) for t in [final["content"], *pushed]]
    assert len(pushed) >= 1 and max(sizes) <= 20480, sizes
    assert "".join([final["content"], *pushed]).replace("\n", "") == long_text.replace("\n", "")
    assert LongTurn.delivered_with == (None, "stream") and not bot.gw.errors


# ---- groups, duplicates, reconnects ----


async def test_aibot_group_answers_only_when_mentioned_and_keeps_members_apart(make_bot: MakeBot) -> None:
    bot = await make_bot()
    ignored = bot.gw.message("lisi", QUESTION, chat_id="grp1")
    asked = bot.gw.message("lisi", f"@{NAME} {QUESTION}", chat_id="grp1")
    await bot.finished(asked)
    await bot.settled()
    assert bot.gw.replies(ignored) == [] and bot.gw.pushes("grp1") == []
    (row,) = turns(bot.store)
    assert row["question"] == QUESTION and row["chat_id"] == "grp1" and row["conversation"] == "wecom_bot:grp1:lisi"


async def test_aibot_message_redelivered_after_a_reconnect_is_answered_once(make_bot: MakeBot) -> None:
    bot = await make_bot()
    first = bot.gw.message("zhangsan", QUESTION)
    await bot.finished(first)
    await bot.settled()
    await bot.gw.drop()
    await bot.gw.wait_subscribed(2)
    again = bot.gw.redeliver(bot.gw.msgid_of(first))
    sentinel = bot.gw.message("wangwu", "/help")
    await bot.finished(sentinel)
    await bot.settled()
    assert bot.gw.replies(again) == [] and bot.gw.pushes("zhangsan") == []
    assert len(turns(bot.store)) == 1


async def test_aibot_connection_lost_mid_answer_delivers_the_answer_once_as_a_new_message(
        make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.05)
    req = bot.gw.message("zhangsan", QUESTION)
    bot.gw.drop_on[req] = 2  # the connection dies under the second frame
    await bot.gw.wait_subscribed(2)
    await bot.gw.wait_for(lambda: bot.gw.pushes("zhangsan"), 20, "the answer as a new message")
    bot.gw.redeliver(bot.gw.msgid_of(req))  # WeCom's redelivery after the reconnect changes nothing
    await bot.settled()
    (pushed,) = bot.gw.pushes("zhangsan")
    assert "刘庆峰" in pushed["markdown"]["content"] and "[1]" in pushed["markdown"]["content"]
    assert not any(s.get("finish") for s in bot.gw.streams(req))
    assert delivery(bot.store) == [(bot.gw.msgid_of(req), "delivered", "message")]


async def test_aibot_stream_near_its_deadline_is_closed_and_the_answer_follows(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.1, stream_deadline_s=0.3)
    req = bot.gw.message("zhangsan", QUESTION)
    await bot.gw.wait_for(lambda: bot.gw.pushes("zhangsan"), 20, "the answer as a new message")
    await bot.settled()
    closing = bot.gw.streams(req)[-1]
    assert closing["finish"] and phrases.message("continued", "zh") in closing["content"]
    assert "刘庆峰" in bot.gw.pushes("zhangsan")[0]["markdown"]["content"]


async def test_aibot_keeps_its_heartbeat_and_reconnects_with_backoff(make_bot: MakeBot) -> None:
    bot = await make_bot(heartbeat_s=0.2)
    await asyncio.sleep(0.7)
    assert len([f for f in bot.gw.frames if f.cmd == "ping" and f.errcode == 0]) >= 2
    await bot.gw.drop()
    await bot.gw.wait_subscribed(2)
    await bot.gw.kick()  # another process took the bot over: no storm, one calm retry
    await bot.gw.wait_subscribed(3, timeout=5)
    subscribes = [f.at for f in bot.gw.frames if f.cmd == "aibot_subscribe"]
    assert len(subscribes) == 3


async def test_aibot_refused_credentials_stop_the_start_with_the_fix(tmp_path: Path, gw: FakeGateway) -> None:
    core, store = await make_core(tmp_path, FakeBackend(ANSWER))
    channel = WecomBotChannel(WecomBotConfig(gateway_url=gw.url, bot_id=BOT_ID, secret="wrong"), core)
    with pytest.raises(ConfigError, match="WECOM_BOT_SECRET"):
        await channel.start()
    await store.close()
    assert [f.errcode for f in gw.frames] == [853000]


def test_aibot_config_names_the_missing_credential(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WECOM_BOT_SECRET"):
        WecomBotChannel(WecomBotConfig(bot_id="x"), None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not both|all set"):
        WecomBotChannel(WecomBotConfig(bot_id="x", secret="y", token="t", aes_key="k"), None)  # type: ignore[arg-type]


async def test_aibot_question_left_by_a_restart_is_answered_as_a_new_message(make_bot: MakeBot) -> None:
    bot = await make_bot()
    await bot.finished(bot.gw.message("zhangsan", "/help"))  # the chat has written to the bot before
    turn = await bot.core.receive(Incoming("wecom_bot", "zhangsan", "zhangsan", QUESTION, "m-crash"))
    assert turn is not None  # logged, never answered: the process died here
    (pending,) = await bot.core.pending(["wecom_bot"])
    await bot.channel.resume(pending)
    await bot.gw.wait_for(lambda: bot.gw.pushes("zhangsan"), 10, "the answer as a new message")
    await bot.settled()
    (pushed,) = bot.gw.pushes("zhangsan")
    assert "刘庆峰" in pushed["markdown"]["content"] and "[1]" in pushed["markdown"]["content"]
    assert delivery(bot.store)[-1] == ("m-crash", "delivered", "message")


async def test_aibot_unacknowledged_frame_counts_as_a_lost_connection(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02, ack_timeout_s=0.5)
    req = bot.gw.message("zhangsan", QUESTION)
    bot.gw.unacked.add(req)  # the gateway takes the frames but never answers them
    await bot.gw.wait_subscribed(2)  # the bot gave up on the connection and made a new one
    await bot.gw.wait_for(lambda: bot.gw.pushes("zhangsan"), 10, "the answer as a new message")
    await bot.settled()
    assert len(bot.gw.pushes("zhangsan")) == 1 and "刘庆峰" in bot.gw.pushes("zhangsan")[0]["markdown"]["content"]
    assert delivery(bot.store) == [(bot.gw.msgid_of(req), "delivered", "message")]


# ---- ratings ----


async def test_aibot_answers_carry_wecoms_feedback_and_a_rating_with_its_reasons_is_logged(
        make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02)
    req = bot.gw.message("zhangsan", QUESTION)
    await bot.finished(req)
    frames = bot.gw.streams(req)
    feedback = frames[0]["feedback"]["id"]  # on the first frame only, as WeCom takes it
    assert feedback == frames[0]["id"] and not any("feedback" in f for f in frames[1:])
    await bot.settled()
    (row,) = turns(bot.store)

    event = bot.gw.feedback("zhangsan", feedback, 2, content="没说是哪家公司", reasons=(2, 3))
    await bot.gw.wait_for(lambda: ratings_of(bot.store), what="the rating logged")
    assert ratings_of(bot.store) == [(row["id"], "zhangsan", -1, "内容不完整；内容有错误；没说是哪家公司")]
    assert not bot.gw.replies(event) and not bot.gw.pushes("zhangsan")  # WeCom shows the rating itself
    bot.gw.feedback("zhangsan", feedback, 3)  # withdrawn
    await bot.gw.wait_for(lambda: not ratings_of(bot.store), what="the rating withdrawn")
    bot.gw.feedback("zhangsan", feedback, 1)
    await bot.gw.wait_for(lambda: ratings_of(bot.store), what="the new rating")
    assert ratings_of(bot.store) == [(row["id"], "zhangsan", 1, None)]
    assert not bot.gw.errors, bot.gw.errors


def ratings_of(store: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as db:
        return db.execute("SELECT turn_id, user_id, rating, reason FROM ratings").fetchall()


async def test_aibot_sends_the_gaps_digest_to_its_admins_who_have_talked_to_it(make_bot: MakeBot) -> None:
    bot = await make_bot(admins=["boss", "deputy"])
    await bot.finished(bot.gw.message("boss", "/help"))  # WeCom lets a bot write only to who wrote to it
    assert await bot.channel.notify_admins("本期内容缺口摘要（2026-W50）", {"boss", "deputy"}) == 1
    (body,) = bot.gw.pushes("boss")
    assert body["msgtype"] == "markdown" and body["markdown"]["content"] == "本期内容缺口摘要（2026-W50）"
    assert bot.gw.pushes("deputy") == []
