"""Readers rate answers (bot/core/feedback.py): 👍 / 👎 buttons under a Telegram answer, the reason asked as
a reply, the rating changed; /good and /bad in the terminal; one rating per reader per answer."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.channels.console import Console
from bot.core.runtime import Core
from bot.log.store import LogStore
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.telegram_server import FakeTelegram
from tests.helpers import copying, make_core
from tests.test_console import reader
from tests.test_telegram import ADMIN, ALICE, BOB, GROUP, running


def ratings(store: LogStore) -> list[tuple]:
    with sqlite3.connect(store.path) as db:
        return db.execute("SELECT turn_id, user_id, channel, rating, reason FROM ratings ORDER BY at").fetchall()


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[tuple[FakeTelegram, Core, LogStore]]:
    core, store = await make_core(tmp_path, FakeBackend(copying("刘庆峰")))
    server = FakeTelegram()
    await server.start()
    yield server, core, store
    await server.stop()
    await store.close()


async def asked(server: FakeTelegram, chat: int, user: int, question: str, group: bool = False) -> int:
    """The bot message holding the answer, once it carries its buttons."""
    mid = (server.group(chat, user, f"/ask {question}", language_code="zh") if group
           else server.private(user, question, language_code="zh"))
    await server.wait_for(lambda: any(m.reply_to == mid and m.buttons for m in server.bot_messages(chat)))
    return next(m.message_id for m in server.bot_messages(chat) if m.reply_to == mid)


async def test_a_reader_rates_an_answer_down_with_a_reason_then_changes_it_to_up(
        bot: tuple[FakeTelegram, Core, LogStore]) -> None:
    server, core, store = bot
    async with running(server, core):
        answer = await asked(server, ALICE, ALICE, "科大讯飞董事长是谁？")
        shown = server.messages[answer]
        assert "刘庆峰" in shown.text and [b["text"] for b in shown.buttons[0]] == ["👍", "👎"]

        server.press(answer, ALICE, "👎")
        why = phrases.message("rated_down", "zh")
        await server.wait_for(lambda: why in server.bot_texts(ALICE))
        assert [b["text"] for b in shown.buttons[0]] == ["👍", "✓ 👎"]  # marked, and still changeable
        ask = next(m for m in server.bot_messages(ALICE) if m.text == why)
        sent = next(c for c in server.calls_of("sendMessage") if why in str(c.params.get("text")))
        assert sent.params["reply_markup"]["force_reply"] is True  # the client opens a reply to it

        server.private(ALICE, "只给了名字，没说他是哪家公司的", reply_to=ask.message_id, language_code="zh")
        await server.wait_for(lambda: phrases.message("reason_kept", "zh") in server.bot_texts(ALICE))
        turn_id = int(shown.buttons[0][0]["callback_data"].split()[1])
        assert ratings(store) == [(turn_id, str(ALICE), "telegram", -1, "只给了名字，没说他是哪家公司的")]

        query = server.press(answer, ALICE, "👍")
        await server.wait_for(lambda: query in server.toasts)
    assert server.toasts[query] == phrases.message("rated_up", "zh")  # a toast, not another message
    assert [b["text"] for b in shown.buttons[0]] == ["✓ 👍", "👎"]
    assert ratings(store) == [(turn_id, str(ALICE), "telegram", 1, None)]  # one row per reader, changed
    assert server.bot_texts(ALICE).count(phrases.message("reason_kept", "zh")) == 1
    with sqlite3.connect(store.path) as db:  # the reason was not taken for a question
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 1


async def test_in_a_group_each_reader_rates_once_quietly_and_a_reply_to_the_answer_stays_a_question(
        bot: tuple[FakeTelegram, Core, LogStore]) -> None:
    server, core, store = bot
    async with running(server, core):
        answer = await asked(server, GROUP, ALICE, "科大讯飞董事长是谁？", group=True)
        before = len(server.bot_messages(GROUP))
        queries = [server.press(answer, ALICE, "👎"), server.press(answer, BOB, "👎")]
        await server.wait_for(lambda: all(q in server.toasts for q in queries))
        mid = server.group(GROUP, BOB, "那他是哪一年出生的？", reply_to=answer, language_code="zh")
        await server.wait_for(lambda: any(m.reply_to == mid and m.buttons for m in server.bot_messages(GROUP)))
    assert [server.toasts[q] for q in queries] == [phrases.message("rated_down_group", "zh")] * 2
    assert len(server.bot_messages(GROUP)) == before + 1  # no "why?" posted to the group: BOB's answer only
    assert [b["text"] for b in server.messages[answer].buttons[0]] == ["👍", "👎"]  # everyone's: unmarked
    rows = ratings(store)
    assert sorted((r[1], r[3], r[4]) for r in rows) == [(str(ALICE), -1, None), (str(BOB), -1, None)]
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 2


async def test_gaps_in_a_group_is_refused_and_a_sticker_in_reply_to_the_bot_is_ignored(
        bot: tuple[FakeTelegram, Core, LogStore]) -> None:
    server, core, _ = bot
    async with running(server, core):
        answer = await asked(server, GROUP, ALICE, "科大讯飞董事长是谁？", group=True)
        sticker = server.push_update({"message": {
            "message_id": 9001, "date": 0, "chat": server.group_chat(GROUP), "from": server.user(BOB),
            "sticker": {"file_id": "s1", "file_unique_id": "s1", "type": "regular", "width": 1, "height": 1,
                        "is_animated": False, "is_video": False},
            "reply_to_message": server.messages[answer].as_api()}})
        server.group(GROUP, ADMIN, "/gaps", language_code="zh")
        await server.wait_for(lambda: phrases.message("gaps_private", "zh") in server.bot_texts(GROUP))
    assert sticker and len(server.bot_messages(GROUP)) == 2  # the answer and the refusal; nothing for the sticker


async def test_a_stale_or_foreign_rating_is_refused(bot: tuple[FakeTelegram, Core, LogStore]) -> None:
    server, core, store = bot
    async with running(server, core):
        await asked(server, ALICE, ALICE, "科大讯飞董事长是谁？")
        server.private(BOB, "/rate 1 down", language_code="zh")  # ALICE's answer, not in BOB's chat
        await server.wait_for(lambda: server.bot_texts(BOB))
    assert server.bot_texts(BOB) == [phrases.message("nothing_to_rate", "zh")]
    assert ratings(store) == []


async def test_the_terminal_rates_the_last_answer_with_good_and_bad(tmp_path: Path) -> None:
    core, store = await make_core(tmp_path, FakeBackend(copying("刘庆峰")))
    try:
        read, _ = reader(["/bad", "科大讯飞董事长是谁？", "/bad 没有说明出处", "/good"])
        out = io.StringIO()
        assert await Console(core, out=out, read=read, user="tester").run() == 0
        text = out.getvalue()
        assert phrases.message("nothing_to_rate", "zh") in text  # nothing answered yet
        assert phrases.message("rated_down_reason", "zh") in text and phrases.message("rated_up", "zh") in text
        (row,) = ratings(store)
        assert row[1:] == ("tester", "cli", 1, None)
        read, _ = reader(["/bad 还是不对"])
        await Console(core, out=io.StringIO(), read=read, user="tester").run()
        assert [r[3:] for r in ratings(store)] == [(-1, "还是不对")]
    finally:
        await store.close()
