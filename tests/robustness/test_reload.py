"""Reloading content that is broken, empty or huge while the bot serves: the reload is refused with the
reason, the old content keeps answering, and a good reload afterwards is served."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.types import Incoming, Reply
from tests.fakes.backend import FakeBackend
from tests.helpers import ROOT, make_core


def emptied(folder: Path) -> None:
    (folder / "article.txt").write_text("  \n\n ", encoding="utf-8")


def binary(folder: Path) -> None:
    (folder / "article.txt").write_bytes(os.urandom(4096))


def huge(folder: Path) -> None:
    (folder / "dump.txt").write_text("科大讯飞。" * 400_000, encoding="utf-8")  # 6 MB


def gone(folder: Path) -> None:
    shutil.rmtree(folder)


@pytest.mark.parametrize(("breaks", "reason"), [(emptied, "no text left"), (binary, "UTF-8"),
                                                (huge, "content.max_mb"), (gone, "does not exist")],
                         ids=["empty", "binary", "huge", "folder-gone"])
async def test_a_bad_reload_keeps_the_old_content_answering(tmp_path: Path, breaks: Callable[[Path], None],
                                                            reason: str) -> None:
    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    backend = FakeBackend("")
    core, store = await make_core(tmp_path, backend, content_dir=folder)
    n = next(p.order + 1 for p in core.content.passages if "科大讯飞董事长刘庆峰" in p.text)
    backend.answer = f"科大讯飞董事长是刘庆峰。[{n}]"
    try:
        version = core.content.version
        breaks(folder)
        report = await core.reload()
        assert not report.ok and reason in (report.error or ""), report
        assert core.content.version == version
        reply = await core.ask(Incoming("telegram", "42", "7", "科大讯飞董事长是谁？"))
        assert isinstance(reply, Reply) and "刘庆峰" in reply.text and reply.content_version == version
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(ROOT / "content", folder)
        (folder / "extra.md").write_text("# 补充\n\n科大讯飞总部位于合肥。\n", encoding="utf-8")
        fixed = await core.reload()
        assert fixed.ok and fixed.added == 1 and core.content.version != version
    finally:
        await store.close()


@pytest.mark.model
async def test_bot_content_reload_signals_a_live_bot_serve_which_serves_the_new_version(
        tmp_path: Path, serve_data: Path) -> None:
    """`bot content reload` (SIGHUP to the pid file's process) against a real `bot serve`: the old content
    answers until the new one is read, then questions are answered from the new version."""
    from tests.fakes.telegram_server import FakeTelegram
    from tests.test_serve import ANSWER_TIMEOUT_S, BOT, READY_TIMEOUT_S, Serve, watched

    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    fake = FakeTelegram()
    await fake.start()
    serve = Serve(tmp_path, serve_data, "telegram", {"TELEGRAM_BOT_TOKEN": fake.token,
                                                      "TELEGRAM_BASE_URL": fake.base_url}, content=folder)

    def delivered_versions() -> list[str]:
        return [r["content_version"] for r in serve.turns("telegram") if r["delivery"] == "delivered"]

    try:
        with watched(lambda: serve):
            serve.start()
            await serve.wait_until(lambda: fake.calls_of("getUpdates"), READY_TIMEOUT_S, "getUpdates (polling)")
            fake.private(7001, "科大讯飞董事长是谁？", language_code="zh")
            await serve.wait_until(lambda: len(delivered_versions()) == 1, ANSWER_TIMEOUT_S, "the first answer")
            (folder / "extra.md").write_text("# 补充\n\n科大讯飞总部位于安徽合肥。\n", encoding="utf-8")
            proc = await asyncio.create_subprocess_exec(BOT, "content", "reload", env=serve.env,
                                                        cwd=serve.config_path.parent, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            assert proc.returncode == 0 and "Signalled the running server" in out.decode(), out.decode()
            await serve.wait_until(lambda: serve.events("reload"), READY_TIMEOUT_S, "the reload event")
            (event,) = serve.events("reload")
            assert "1 added" in event, event
            fake.private(7002, "科大讯飞总部位于哪里？", language_code="zh")
            await serve.wait_until(lambda: len(delivered_versions()) == 2, ANSWER_TIMEOUT_S, "the answer after reload")
            first, second = delivered_versions()
            assert first != second  # the second question was answered from the new version
            assert await serve.terminate() == 0
            print(f"\nSIGHUP reload in a live bot serve: {event}")
    finally:
        await fake.stop()
