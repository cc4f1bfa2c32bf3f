"""The WeCom AI bot's callback transport on loopback: WeCom's side (tests/fakes/wecom_bot_callback.py, its own
crypto) posts encrypted JSON and polls the stream; the bot answers from the core with a fake backend."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.channels.wecom_bot import WecomBotChannel
from bot.channels.wecom_bot_callback import CallbackServer
from bot.config import WecomBotConfig
from bot.core.gate import Gate, Policy
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.wecom_bot_callback import AES_KEY, TOKEN, FakeCallbacks
from tests.helpers import make_core, turns
from tests.test_library import web  # noqa: F401 - the loopback web page fixture

ANSWER = "科大讯飞董事长是刘庆峰。"
QUESTION = "科大讯飞董事长是谁？"


@dataclass
class Bot:
    channel: WecomBotChannel
    wecom: FakeCallbacks
    store: Any


MakeBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def make_bot(tmp_path: Path) -> AsyncIterator[MakeBot]:
    started: list[Bot] = []

    async def factory(*, delay: float = 0.0, poll_interval_s: float = 0.05, stream_window_s: float = 360.0,
                      **overrides: Any) -> Bot:
        core, store = await make_core(tmp_path, FakeBackend(ANSWER, delay=delay))
        cfg = WecomBotConfig(**{"listen": "127.0.0.1:0", "token": TOKEN, "aes_key": AES_KEY, "admins": ["boss"],
                                "rate_limit_per_minute": 30, **overrides})
        core.gate = Gate(800, {"wecom_bot": Policy.of(cfg)})
        channel = WecomBotChannel(cfg, core)
        await channel.start()
        assert isinstance(channel.transport, CallbackServer)
        wecom = FakeCallbacks(f"http://127.0.0.1:{channel.transport.port}{cfg.path}", poll_interval_s=poll_interval_s,
                              stream_window_s=stream_window_s)
        await wecom.start()
        bot = Bot(channel, wecom, store)
        started.append(bot)
        return bot

    yield factory
    for bot in started:
        await bot.wecom.stop()
        await bot.channel.stop()
        await bot.store.close()


async def test_aibot_callback_url_verification_and_a_forged_signature_refused(make_bot: MakeBot) -> None:
    bot = await make_bot()
    ok = await bot.wecom.verify("echo-8452983")
    assert ok.status_code == 200 and ok.text == "echo-8452983"
    assert (await bot.wecom.verify("echo-8452983", forge=True)).status_code == 403
    forged, reply = await bot.wecom.message("zhangsan", QUESTION, forge=True)
    assert forged.status_code == 403 and reply is None
    assert turns(bot.store) == []


async def test_aibot_callback_question_streams_until_finished_with_its_citation(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02)
    resp, reply = await bot.wecom.message("zhangsan", QUESTION)
    assert resp.status_code == 200 and reply is not None
    first = reply["stream"]
    assert first["content"] == phrases.message("thinking", "zh") and not first["finish"]
    final = await bot.wecom.wait_finished(first["id"])
    answer, _, sources = final["content"].partition("\n\n[1] ")
    assert "刘庆峰" in answer and "[1]" in answer and sources, final
    assert len(bot.wecom.snapshots(first["id"])) >= 2 and bot.wecom.violations == []
    await bot.channel.stop()  # waits for the reply's delivery to be logged
    (row,) = turns(bot.store)
    assert (row["channel"], row["delivery"], row["delivered_via"]) == ("wecom_bot", "delivered", "stream")


async def test_aibot_callback_repeated_message_learns_the_same_stream(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02)
    _, reply = await bot.wecom.message("zhangsan", QUESTION, msgid="m-1")
    _, again = await bot.wecom.message("zhangsan", QUESTION, msgid="m-1")  # WeCom got no reply: it repeats
    assert reply and again and again["stream"]["id"] == reply["stream"]["id"]
    await bot.wecom.wait_finished(reply["stream"]["id"])
    await bot.channel.stop()
    assert len(turns(bot.store)) == 1


async def test_aibot_callback_answer_nobody_polls_goes_by_response_url(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.05, stream_window_s=0.1, stream_deadline_s=0.5)
    _, reply = await bot.wecom.message("zhangsan", QUESTION)
    assert reply is not None
    await bot.channel.stop()
    assert bot.wecom.expired == [reply["stream"]["id"]]
    (sent,) = bot.wecom.responses
    assert "刘庆峰" in sent["markdown"]["content"] and "[1]" in sent["markdown"]["content"]
    (row,) = turns(bot.store)
    assert (row["delivery"], row["delivered_via"]) == ("delivered", "response_url")


async def test_aibot_callback_admin_link_card_press_updates_it_and_reports_by_response_url(
        make_bot: MakeBot, web: str) -> None:  # noqa: F811
    bot = await make_bot()
    _, reply = await bot.wecom.message("boss", f"{web}/news/xinghuo.html")
    assert reply is not None
    preview = await bot.wecom.wait_finished(reply["stream"]["id"])
    assert "讯飞星火发布会" in preview["content"], preview
    (card,) = bot.wecom.cards
    keys = {b["text"]: b["key"] for b in card["button_list"]}
    _, update = await bot.wecom.click("boss", card["task_id"], keys[phrases.message("cancel", "zh")])
    assert update is not None and update["template_card"]["task_id"] == card["task_id"]
    await bot.channel.stop()
    (said,) = bot.wecom.responses
    assert said["markdown"]["content"] == phrases.message("cancelled", "zh")
    assert bot.wecom.violations == []


async def test_aibot_callback_enter_chat_is_welcomed_in_the_reply(make_bot: MakeBot) -> None:
    bot = await make_bot(welcome="欢迎使用知识助手")
    _, reply = await bot.wecom.event("zhangsan", "enter_chat")
    assert reply == {"msgtype": "text", "text": {"content": "欢迎使用知识助手"}}
    assert bot.wecom.violations == []


async def test_aibot_callback_answer_after_the_deadline_goes_once_by_response_url(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.08, stream_deadline_s=0.3)  # WeCom still polls; the answer comes too late
    _, reply = await bot.wecom.message("zhangsan", QUESTION)
    assert reply is not None
    closing = await bot.wecom.wait_finished(reply["stream"]["id"])
    await bot.channel.stop()
    assert phrases.message("continued", "zh") in closing["content"] and "刘庆峰" not in closing["content"]
    assert all("刘庆峰" not in s["content"] for s in bot.wecom.snapshots(reply["stream"]["id"]))
    (sent,) = bot.wecom.responses
    assert "刘庆峰" in sent["markdown"]["content"]
    (row,) = turns(bot.store)
    assert (row["delivery"], row["delivered_via"]) == ("delivered", "response_url")


async def test_aibot_callback_answer_carries_wecoms_feedback_and_a_thumbs_down_is_logged(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02)
    _, reply = await bot.wecom.message("zhangsan", QUESTION)
    assert reply is not None
    first = reply["stream"]
    await bot.wecom.wait_finished(first["id"])
    assert first["feedback"] == {"id": first["id"]}
    assert not any("feedback" in s for s in bot.wecom.snapshots(first["id"])[1:])
    resp, answer = await bot.wecom.feedback("zhangsan", first["id"], 2, reasons=(1,))
    assert resp.status_code == 200 and answer is None  # only an empty reply is allowed
    await bot.channel.stop()
    with sqlite3.connect(bot.store.path) as db:
        assert db.execute("SELECT user_id, rating, reason FROM ratings").fetchall() == [("zhangsan", -1, "与问题无关")]
    assert bot.wecom.violations == []


async def test_aibot_callbacks_cannot_start_a_conversation_so_no_digest_is_sent(make_bot: MakeBot) -> None:
    bot = await make_bot()
    assert await bot.channel.notify_admins("本期内容缺口摘要（2026-W50）", {"boss"}) == 0
