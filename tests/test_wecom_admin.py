"""Admin work through the WeCom channel and the loopback WeCom API: a shared link or (where WeCom delivers
one) a file becomes a preview whose Confirm and Cancel are commands to reply with; /stats arrives as an
image message (media/upload, then message/send) followed by its numbers."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pytest

from bot.channels.wecom import WecomChannel
from bot.config import WecomConfig
from bot.core.gate import Gate, Policy
from bot.core.runtime import Core
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.wecom_server import AES_KEY, AGENT_ID, CORP_ID, CORP_SECRET, TOKEN, CallbackClient, FakeWecomApi
from tests.helpers import ROOT, make_core
from tests.test_library import DOC, web  # noqa: F401 - the loopback web page fixture

BOSS, READER = "boss", "reader"


@dataclass
class Admin:
    core: Core
    api: FakeWecomApi
    client: CallbackClient
    folder: Path

    async def say(self, user: str, inner_xml: str, replies: int = 1) -> list[str]:
        """Post a callback and wait for `replies` more text messages to `user`; all texts to them so far."""
        before = len(self.texts(user))
        resp, _, _ = await self.client.post(inner_xml)
        assert resp.status_code == 200
        for _ in range(400):
            if len(self.texts(user)) >= before + replies:
                break
            await asyncio.sleep(0.025)
        return self.texts(user)

    def texts(self, user: str) -> list[str]:
        return [m["text"]["content"] for m in self.api.sent if m["touser"] == user and m["msgtype"] == "text"]


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    core, store = await make_core(tmp_path / "run", FakeBackend(""), content_dir=folder)
    api = FakeWecomApi()
    await api.start()
    cfg = WecomConfig(listen="127.0.0.1:0", api_base_url=api.base_url, admins=[BOSS], corp_id=CORP_ID,
                      agent_id=AGENT_ID, corp_secret=CORP_SECRET, token=TOKEN, aes_key=AES_KEY)
    core.gate = Gate(800, {"wecom": Policy.of(cfg)})
    channel = WecomChannel(cfg, core, retry_delays=(0.05,))
    await channel.start()
    yield Admin(core, api, CallbackClient(f"http://127.0.0.1:{channel.port}{cfg.path}"), folder)
    await channel.stop()
    await api.stop()
    await store.close()


def command(preview: str, label: str) -> str:
    line = next(ln for ln in preview.splitlines() if label in ln)
    return line.split("回复 ", 1)[1].strip()


async def test_an_admins_shared_link_is_previewed_and_confirmed_by_reply(admin: Admin, web: str) -> None:  # noqa: F811
    version = admin.core.content.version
    preview = (await admin.say(BOSS, admin.client.link_xml(BOSS, f"{web}/news/xinghuo.html")))[-1]
    assert "讯飞星火发布会" in preview and "确认 / Confirm：回复 /confirm " in preview, preview
    shown = await admin.say(BOSS, admin.client.text_xml(BOSS, command(preview, "Confirm")))
    assert "新增" in shown[-1] and admin.core.content.version != version
    assert "七大能力" in (admin.folder / "xinghuo.html.md").read_text(encoding="utf-8")


async def test_a_file_message_is_fetched_with_media_get_and_cancel_changes_nothing(admin: Admin) -> None:
    admin.api.user_files["media-1"] = DOC.encode()
    preview = (await admin.say(BOSS, admin.client.file_xml(BOSS, "media-1", "讯飞简介.md", len(DOC.encode()))))[-1]
    assert "《科大讯飞简介》" in preview and admin.api.requests_to("/cgi-bin/media/get")
    shown = await admin.say(BOSS, admin.client.text_xml(BOSS, command(preview, "Cancel")))
    assert shown[-1] == phrases.message("cancelled", "zh") and not (admin.folder / "讯飞简介.md").exists()


async def test_a_readers_link_or_file_changes_nothing(admin: Admin) -> None:
    admin.api.user_files["media-2"] = DOC.encode()
    await admin.say(READER, admin.client.link_xml(READER, "http://127.0.0.1:9/x.html"))
    shown = await admin.say(READER, admin.client.file_xml(READER, "media-2", "a.md", 100))
    assert shown == [phrases.message("text_only", "zh"), phrases.message("admin_files_only", "zh")]
    assert not admin.api.requests_to("/cgi-bin/media/get")


async def test_stats_arrives_as_an_image_then_its_numbers(admin: Admin) -> None:
    shown = await admin.say(BOSS, admin.client.text_xml(BOSS, "/stats"))
    assert shown[-1].startswith("最近 24 小时：0 位用户共 0 轮")
    (png,) = admin.api.images_to(BOSS)
    assert matplotlib.image.imread(io.BytesIO(png), format="png").shape[:2] == (750, 1100)
    kinds = [m["msgtype"] for m in admin.api.sent if m["touser"] == BOSS]
    assert kinds == ["image", "text"]
