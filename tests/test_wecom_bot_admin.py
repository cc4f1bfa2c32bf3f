"""Admin work through the WeCom AI bot (long connection, fake gateway): a document becomes a preview whose
确认 / 取消 are template-card buttons, the card is updated once pressed; /stats arrives as an image; the
welcome on entering the chat; readers change nothing."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from bot.channels.wecom_bot import WecomBotChannel
from bot.config import WecomBotConfig
from bot.core.gate import Gate, Policy
from bot.core.runtime import Core
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.wecom_bot_gateway import BOT_ID, BOT_SECRET, FakeGateway
from tests.helpers import ROOT, make_core
from tests.test_library import DOC, web  # noqa: F401 - the loopback web page fixture

BOSS, READER = "boss", "reader"


@dataclass
class Admin:
    core: Core
    gw: FakeGateway
    folder: Path
    channel: WecomBotChannel

    async def stream_of(self, req_id: str) -> str:
        """The finished stream content of a callback."""
        await self.gw.wait_for(lambda: any(s.get("finish") for s in self.gw.streams(req_id)), 10, "a finished stream")
        return str(self.gw.streams(req_id)[-1]["content"])

    async def pushed(self, user: str, n: int) -> list[dict[str, Any]]:
        """The first `n` messages pushed to `user`, once there are that many."""
        await self.gw.wait_for(lambda: len(self.gw.pushes(user)) >= n, 10, f"{n} pushed messages")
        return self.gw.pushes(user)[:n]


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    folder = tmp_path / "content"
    shutil.copytree(ROOT / "content", folder)
    core, store = await make_core(tmp_path / "run", FakeBackend(""), content_dir=folder)
    gw = FakeGateway()
    await gw.start()
    cfg = WecomBotConfig(gateway_url=gw.url, bot_id=BOT_ID, secret=BOT_SECRET, admins=[BOSS],
                         stream_interval_s=0.05)
    core.gate = Gate(800, {"wecom_bot": Policy.of(cfg)})
    channel = WecomBotChannel(cfg, core)
    await channel.start()
    yield Admin(core, gw, folder, channel)
    await channel.stop()
    await gw.stop()
    await store.close()


async def test_aibot_admin_document_preview_has_card_buttons_and_confirm_updates_the_card(admin: Admin) -> None:
    version = admin.core.content.version
    preview = await admin.stream_of(admin.gw.file(BOSS, "讯飞简介.md", DOC.encode()))
    assert "《科大讯飞简介》" in preview, preview
    (card_msg,) = await admin.pushed(BOSS, 1)
    card = card_msg["template_card"]
    labels = {b["text"]: b["key"] for b in card["button_list"]}
    assert set(labels) == {phrases.message("confirm", "zh"), phrases.message("cancel", "zh")}, labels
    press = admin.gw.click(BOSS, card["task_id"], labels[phrases.message("confirm", "zh")])
    await admin.gw.wait_for(lambda: admin.gw.replies(press), 5, "the card update")
    (update,) = admin.gw.replies(press)
    assert update.cmd == "aibot_respond_update_msg" and update.body["template_card"]["task_id"] == card["task_id"]
    assert "确认" in update.body["template_card"]["button_list"][0]["text"]
    done = await admin.pushed(BOSS, 2)
    assert "新增" in done[1]["markdown"]["content"], done[1]
    assert admin.core.content.version != version and (admin.folder / "讯飞简介.md").exists()
    assert not admin.gw.errors, admin.gw.errors


async def test_aibot_a_readers_document_changes_nothing_and_is_not_downloaded(admin: Admin) -> None:
    shown = await admin.stream_of(admin.gw.file(READER, "a.md", DOC.encode()))
    assert shown == phrases.message("admin_files_only", "zh")
    assert admin.gw.downloads == [] and not (admin.folder / "a.md").exists()


async def test_aibot_stats_arrives_as_an_image_after_its_numbers(admin: Admin) -> None:
    text = await admin.stream_of(admin.gw.message(BOSS, "/stats"))
    assert text.startswith("最近 24 小时：0 位用户共 0 轮"), text
    (image_msg,) = await admin.pushed(BOSS, 1)
    _, png = admin.gw.media[image_msg["image"]["media_id"]]
    assert matplotlib.image.imread(io.BytesIO(png), format="png").shape[:2] == (750, 1100)


async def test_aibot_entering_the_chat_gets_the_welcome_within_its_deadline(admin: Admin) -> None:
    req = admin.gw.event(READER, "enter_chat")
    await admin.gw.wait_for(lambda: admin.gw.replies(req), 5, "the welcome")
    (welcome,) = admin.gw.replies(req)
    assert welcome.cmd == "aibot_respond_welcome_msg" and welcome.body["msgtype"] == "text"
    assert "/help" in welcome.body["text"]["content"]
    await asyncio.sleep(0.1)
    assert not admin.gw.errors


async def test_aibot_group_card_a_readers_press_changes_nothing_the_admins_press_confirms(
        admin: Admin, web: str) -> None:  # noqa: F811
    version = admin.core.content.version
    preview = await admin.stream_of(admin.gw.message(BOSS, f"@bot {web}/news/xinghuo.html", chat_id="grp"))
    assert "讯飞星火发布会" in preview, preview
    (card_msg,) = await admin.pushed("grp", 1)
    card = card_msg["template_card"]
    confirm = next(b["key"] for b in card["button_list"] if b["text"] == phrases.message("confirm", "zh"))
    reader_press = admin.gw.click(READER, card["task_id"], confirm, chat_id="grp")
    await admin.gw.wait_for(lambda: len(admin.gw.pushes("grp")) >= 2, 10, "the reader's refusal")
    (update,) = admin.gw.replies(reader_press)
    assert update.body["userids"] == [READER]  # only the reader's own card changes
    assert admin.gw.pushes("grp")[1]["markdown"]["content"] == phrases.message("admin_only", "zh")
    assert admin.core.content.version == version
    boss_press = admin.gw.click(BOSS, card["task_id"], confirm, chat_id="grp")
    await admin.gw.wait_for(lambda: len(admin.gw.pushes("grp")) >= 3, 10, "the admin's confirmation")
    assert admin.gw.replies(boss_press)[0].body["userids"] == [BOSS]
    assert "新增" in admin.gw.pushes("grp")[2]["markdown"]["content"]
    assert admin.core.content.version != version and not admin.gw.errors
