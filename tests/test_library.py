"""Content from the chat, through the core as every channel reaches it: a document or a web link from an
admin gets a preview with Confirm and Cancel; Confirm writes the file and reloads; /content lists and
/remove drops documents; nothing changes for a non-admin, a bad file, a dead link or a failed reload."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from bot.core.runtime import Core
from bot.log.store import LogStore
from bot.text import phrases
from bot.types import Attachment, Incoming, Notice, Progress
from tests.fakes.backend import FakeBackend
from tests.helpers import ROOT, make_config, make_core

DOC = ("# 科大讯飞简介\n\n## 总部\n\n科大讯飞总部位于安徽合肥，成立于1999年。\n\n## 业务\n\n"
       "科大讯飞从事智能语音和人工智能研究。\n")
PAGE = """<html><head><title>讯飞星火发布会 - 科技新闻</title></head><body>
<nav><a href="/">首页</a> | <a href="/tech">科技</a> | <a href="/login">登录</a></nav>
<article><h1>讯飞星火发布会</h1><p>2023年5月6日，科大讯飞在合肥发布了讯飞星火认知大模型，展示了文本生成、语言理解等七大能力。</p>
<p>刘庆峰表示，讯飞星火将在年内持续升级，并向开发者开放。</p></article>
<footer>版权所有 © 2023 科技新闻网 京ICP备00000000号</footer></body></html>"""


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[tuple[Core, LogStore, Path]]:
    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    core, store = await make_core(tmp_path / "run", FakeBackend(""), content_dir=folder)
    yield core, store, folder
    await store.close()


def admin(text: str = "", *, user: str = "boss", attachment: Attachment | None = None,
          is_admin: bool = True) -> Incoming:
    kind = "document" if attachment else "text"
    return Incoming("telegram", user, user, text, is_admin=is_admin, kind=kind, attachment=attachment)


def document(name: str, data: bytes, fetched: list[str] | None = None) -> Attachment:
    async def fetch() -> bytes:
        if fetched is not None:
            fetched.append(name)
        return data

    return Attachment(name, len(data), fetch)


async def run(core: Core, msg: Incoming) -> tuple[Notice, list[Progress]]:
    """The notice of a message the core handles as a command, and the progress shown before it."""
    turn = await core.receive(msg)
    assert turn is not None and not turn.is_question
    events = [e async for e in turn.events()]
    assert isinstance(events[-1], Notice)
    return events[-1], [e for e in events if isinstance(e, Progress)]


def command_of(notice: Notice, label: str) -> str:
    return next(c.command for c in notice.choices if label in c.label)


async def test_an_admins_document_is_previewed_then_added_on_confirm(bot: tuple[Core, LogStore, Path]) -> None:
    core, _, folder = bot
    version = core.content.version
    preview, steps = await run(core, admin(attachment=document("讯飞简介.md", DOC.encode())))
    assert "科大讯飞简介" in preview.text and "2 个段落" in preview.text and "新文档" in preview.text
    assert [s.step for s in steps] == ["extracting"]
    assert [c.label for c in preview.choices] == ["确认 / Confirm", "取消 / Cancel"]
    assert core.content.version == version and not (folder / "讯飞简介.md").exists()  # nothing yet

    report, steps = await run(core, admin(command_of(preview, "Confirm")))
    assert "新增 2" in report.text and core.content.version != version
    assert (folder / "讯飞简介.md").read_text(encoding="utf-8") == DOC
    assert any(s.step == "reading_content" and s.fraction is not None for s in steps)
    listing, _ = await run(core, admin("/content"))
    assert "讯飞简介.md：《科大讯飞简介》，2 个段落" in listing.text and "article.txt" in listing.text
    again, _ = await run(core, admin(command_of(preview, "Confirm")))
    assert again.text == phrases.message("proposal_gone", "zh")  # a confirmation works once


async def test_nothing_changes_for_a_non_admin_a_cancel_or_another_admins_confirm(
        bot: tuple[Core, LogStore, Path]) -> None:
    core, _, folder = bot
    fetched: list[str] = []
    denied, _ = await run(core, admin(attachment=document("a.md", DOC.encode(), fetched), is_admin=False))
    assert denied.text == phrases.message("admin_files_only", "zh") and fetched == []  # not even downloaded
    preview, _ = await run(core, admin(attachment=document("a.md", DOC.encode())))
    other, _ = await run(core, admin(command_of(preview, "Confirm"), user="other-admin"))
    assert other.text == phrases.message("proposal_gone", "zh")
    cancelled, _ = await run(core, admin(command_of(preview, "Cancel")))
    assert cancelled.text == phrases.message("cancelled", "zh")
    late, _ = await run(core, admin(command_of(preview, "Confirm")))
    assert late.text == phrases.message("proposal_gone", "zh") and not (folder / "a.md").exists()


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("tool.exe", b"MZ\x90\x00", "not supported"),
    ("blank.txt", b"  \n\n  ", "no text found"),
    ("broken.docx", b"PK\x03\x04 not really a zip", "could not be read"),
    ("huge.txt", "科大讯飞。".encode() * 400_000, "content.max_mb"),
], ids=["unsupported", "empty", "damaged", "too big"])
async def test_a_file_the_bot_cannot_use_is_refused_plainly(bot: tuple[Core, LogStore, Path], name: str,
                                                            data: bytes, reason: str) -> None:
    core, _, folder = bot
    before = sorted(p.name for p in folder.iterdir())
    notice, _ = await run(core, admin(attachment=document(name, data)))
    assert notice.text.startswith("没有添加：") and reason in notice.text and not notice.choices, notice.text
    assert sorted(p.name for p in folder.iterdir()) == before


async def test_a_reload_that_fails_on_confirm_puts_the_folder_back(tmp_path: Path) -> None:
    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    cfg = make_config(tmp_path / "run", folder)
    cfg.content.max_mb = (sum(p.stat().st_size for p in folder.iterdir()) + 2000) / 1e6  # room for a little
    core, store = await make_core(tmp_path / "run", FakeBackend(""), cfg=cfg)
    try:
        core.knowledge.max_mb = cfg.content.max_mb
        big = ("# 大文档\n\n" + "科大讯飞总部位于安徽合肥。" * 100).encode()  # fits alone, not with the rest
        preview, _ = await run(core, admin(attachment=document("big.md", big)))
        version = core.content.version
        report, _ = await run(core, admin(command_of(preview, "Confirm")))
        assert report.text.startswith("内容没有改变：") and "content.max_mb" in report.text
        assert not (folder / "big.md").exists() and core.content.version == version
    finally:
        await store.close()


async def test_remove_asks_first_and_keeps_the_last_document(bot: tuple[Core, LogStore, Path]) -> None:
    core, _, folder = bot
    alone, _ = await run(core, admin("/remove article.txt"))
    assert "唯一的文档" in alone.text and not alone.choices
    missing, _ = await run(core, admin("/remove nope.md"))
    assert "没有名为 nope.md 的文档" in missing.text and "article.txt" in missing.text
    preview, _ = await run(core, admin(attachment=document("extra.md", DOC.encode())))
    await run(core, admin(command_of(preview, "Confirm")))
    asked, _ = await run(core, admin("/remove extra.md"))
    assert "将删除文档 extra.md" in asked.text and (folder / "extra.md").exists()
    report, _ = await run(core, admin(command_of(asked, "Confirm")))
    assert "删除 2" in report.text and not (folder / "extra.md").exists()
    denied, _ = await run(core, admin("/remove article.txt", user="reader", is_admin=False))
    assert denied.text == phrases.message("admin_only", "zh")


@pytest.fixture
async def web() -> AsyncIterator[str]:
    """A loopback web server with one Chinese news page at /news/xinghuo.html."""

    class Page(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(PAGE)

    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/news/xinghuo.html", Page)]))
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()


async def test_a_web_link_from_an_admin_is_fetched_previewed_and_added(bot: tuple[Core, LogStore, Path],
                                                                      web: str) -> None:
    core, _, folder = bot
    preview, steps = await run(core, admin(f"{web}/news/xinghuo.html"))  # a bare link is /add LINK
    assert [s.step for s in steps] == ["fetching", "extracting"]
    assert "讯飞星火发布会" in preview.text and "xinghuo.html.md" in preview.text, preview.text
    await run(core, admin(command_of(preview, "Confirm")))
    saved = (folder / "xinghuo.html.md").read_text(encoding="utf-8")
    assert "七大能力" in saved and "版权所有" not in saved and "登录" not in saved  # the article, not the page
    reader = await core.receive(admin(f"{web}/news/xinghuo.html", user="reader", is_admin=False))
    assert reader is not None and reader.is_question  # from anyone else a link is just a question


async def test_a_link_that_cannot_be_fetched_says_why(bot: tuple[Core, LogStore, Path]) -> None:
    core, _, _ = bot
    notice, _ = await run(core, admin("/add http://127.0.0.1:9/page.html"))  # nothing listens on port 9
    assert notice.text.startswith("没有添加：") and "no internet" in notice.text and "as a file" in notice.text
    usage, _ = await run(core, admin("/add"))
    assert usage.text == phrases.message("add_usage", "zh")


async def test_the_console_sends_a_local_file_with_add(bot: tuple[Core, LogStore, Path], tmp_path: Path) -> None:
    from bot.channels.console import Console

    core, _, folder = bot
    path = tmp_path / "notes.md"
    path.write_text(DOC, encoding="utf-8")
    console = Console(core, out=open(tmp_path / "out.txt", "w", encoding="utf-8"))  # noqa: SIM115
    preview = await console.answer(f"/add {path}")
    assert isinstance(preview, Notice) and preview.choices
    await console.answer(preview.choices[0].command)
    console.out.close()
    assert (folder / "notes.md").exists()
    shown = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert "[确认 / Confirm: /confirm" in shown and "新增 2" in shown
    await asyncio.sleep(0)


async def test_a_document_whose_download_fails_is_refused_plainly(bot: tuple[Core, LogStore, Path]) -> None:
    core, _, _ = bot

    async def broken() -> bytes:
        raise ConnectionError("the messenger's file server hung up")

    notice, _ = await run(core, admin(attachment=Attachment("a.md", 100, broken)))
    assert notice.text.startswith("没有添加：") and "ConnectionError" in notice.text and not notice.choices
    bad, _ = await run(core, admin("/add http://[::1"))
    assert bad.text.startswith("没有添加：") and "not a valid web address" in bad.text


def test_a_file_name_fits_any_file_system() -> None:
    from bot.content.library import safe_name

    assert safe_name("../../etc/passwd") == "passwd.md"
    assert safe_name("讯飞 简介.txt") == "讯飞_简介.txt"
    assert len(safe_name("𠀀" * 80 + ".md").encode()) <= 255


def test_stats_hours_are_at_most_a_year() -> None:
    from bot.core.commands import stats_arguments

    assert stats_arguments("1000000000 wecom") == (366 * 24, "wecom")
