"""Reloading content that is broken, empty or huge while the bot serves: the reload is refused with the
reason, the old content keeps answering, and a good reload afterwards is served."""

from __future__ import annotations

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
