"""Admin work through the Telegram channel and the loopback Bot API: a document upload (getFile, then the
file URL), a web link, the Confirm and Cancel buttons (callback queries), progress while the content
reloads, and what a non-admin's file does (nothing)."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import docx
import matplotlib.image
import pytest

from bot.channels.telegram import file_url
from bot.core.runtime import Core
from bot.log.store import LogStore
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.telegram_server import FakeTelegram
from tests.helpers import ROOT, make_core
from tests.test_library import PAGE, web  # noqa: F401 - the loopback web page fixture
from tests.test_telegram import ADMIN, ALICE, replies_to, running

NEW_FACT = "科大讯飞总部位于安徽合肥，成立于1999年。"


def word_file() -> bytes:
    document = docx.Document()
    document.add_heading("讯飞简介", 0)
    document.add_heading("总部", 1)
    document.add_paragraph(NEW_FACT)
    data = io.BytesIO()
    document.save(data)
    return data.getvalue()


@pytest.fixture
async def admin_bot(tmp_path: Path) -> AsyncIterator[tuple[FakeTelegram, Core, LogStore, Path]]:
    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    core, store = await make_core(tmp_path / "run", FakeBackend(""), content_dir=folder)
    server = FakeTelegram()
    await server.start()
    yield server, core, store, folder
    await server.stop()
    await store.close()


def last_bot_message(server: FakeTelegram, chat: int):  # noqa: ANN201 - the fake's Msg
    return server.bot_messages(chat)[-1]


async def test_an_admin_uploads_a_word_file_previews_it_and_confirms(
        admin_bot: tuple[FakeTelegram, Core, LogStore, Path]) -> None:
    server, core, _, folder = admin_bot
    version = core.content.version
    async with running(server, core):
        chat = server.private_chat(ADMIN)
        server.user_sends_document(chat, ADMIN, "讯飞简介.docx", word_file())
        await server.wait_for(lambda: any(m.buttons for m in server.bot_messages(ADMIN)))
        preview = last_bot_message(server, ADMIN)
        assert "《讯飞简介》" in preview.text and "讯飞简介.docx.md" in preview.text, preview.text
        assert [b["text"] for b in preview.buttons[0]] == ["确认 / Confirm", "取消 / Cancel"]
        assert server.calls_of("getFile") and core.content.version == version  # downloaded, not yet added

        query = server.press(preview.message_id, ADMIN, "Confirm")
        await server.wait_for(lambda: any("新增" in t for t in server.bot_texts(ADMIN)), timeout=20)
    assert query in server.answered_queries and preview.buttons == []  # pressed once: buttons gone
    assert core.content.version != version and NEW_FACT in (folder / "讯飞简介.docx.md").read_text(encoding="utf-8")
    progress = [c for c in server.calls_of("sendMessage") if "模型正在阅读新内容" in str(c.params.get("text"))]
    assert progress, [c.params.get("text") for c in server.calls_of("sendMessage")]
    assert "新增 1，删除 0" in last_bot_message(server, ADMIN).text


async def test_a_web_link_is_previewed_and_cancel_changes_nothing(
        admin_bot: tuple[FakeTelegram, Core, LogStore, Path], web: str) -> None:  # noqa: F811
    server, core, _, folder = admin_bot
    before = sorted(p.name for p in folder.iterdir())
    async with running(server, core):
        server.private(ADMIN, f"{web}/news/xinghuo.html", language_code="zh")
        await server.wait_for(lambda: any(m.buttons for m in server.bot_messages(ADMIN)))
        preview = last_bot_message(server, ADMIN)
        assert "讯飞星火发布会" in preview.text
        server.press(preview.message_id, ADMIN, "Cancel")
        await server.wait_for(lambda: phrases.message("cancelled", "zh") in server.bot_texts(ADMIN))
    assert sorted(p.name for p in folder.iterdir()) == before


async def test_a_non_admins_file_is_not_downloaded_and_changes_nothing(
        admin_bot: tuple[FakeTelegram, Core, LogStore, Path]) -> None:
    server, core, _, folder = admin_bot
    version = core.content.version
    async with running(server, core):
        server.user_sends_document(server.private_chat(ALICE), ALICE, "mine.md", b"# x\n\nsome text here, long enough")
        await server.wait_for(lambda: server.bot_texts(ALICE))
    assert server.bot_texts(ALICE) == [phrases.message("admin_files_only", "zh")]
    assert not server.calls_of("getFile") and core.content.version == version
    assert not (folder / "mine.md").exists()


def test_the_file_url_follows_the_bot_api_base_url() -> None:
    assert file_url("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert file_url("http://127.0.0.1:8081/bot") == "http://127.0.0.1:8081/file/bot"
    assert file_url("http://bot-api.internal:8081/bot/") == "http://bot-api.internal:8081/file/bot"
    assert PAGE  # the page the link test serves


async def test_stats_is_a_photo_of_the_chart_with_the_numbers_as_its_caption(
        admin_bot: tuple[FakeTelegram, Core, LogStore, Path]) -> None:
    server, core, _, _ = admin_bot
    n = next(p.order + 1 for p in core.content.passages if "科大讯飞董事长刘庆峰" in p.text)
    core.engine.backend.answer = f"科大讯飞董事长是刘庆峰。[{n}]"  # type: ignore[attr-defined]
    async with running(server, core):
        asked = server.private(ALICE, "科大讯飞董事长是谁？", language_code="zh")
        await server.wait_for(lambda: any("[1]" in t for t in replies_to(server, asked)))
        server.private(ADMIN, "/stats", language_code="zh")
        await server.wait_for(lambda: server.photos(ADMIN))
    (photo,) = server.photos(ADMIN)
    image = matplotlib.image.imread(io.BytesIO(photo.photo or b""), format="png")
    assert image.shape[:2] == (750, 1100)
    assert photo.text.startswith("最近 24 小时：1 位用户共 1 轮，拒答 0，出错 0。")
    assert "telegram: 1" in photo.text and "[1] 全国人大代表刘庆峰" in photo.text and "(1×)" in photo.text
