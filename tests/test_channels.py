"""Every command and every gate rule, run through every channel.

The terminal, Telegram (the real python-telegram-bot against the loopback fake Bot API) and WeCom (signed,
encrypted callbacks against the real adapter, replies read from the fake WeCom API) each hand the same
message to one core: the user must see the same text and the log must hold the same event. Rules that a
channel cannot meet are parametrised over the channels that can (a terminal sends no pictures and no
message ids).
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from bot.channels.console import Console
from bot.channels.telegram import TelegramChannel
from bot.channels.wecom import WecomChannel
from bot.config import TelegramConfig, WecomConfig
from bot.core.gate import Gate, Policy
from bot.core.runtime import Core
from bot.log.store import LogStore
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.wecom_server import AES_KEY, AGENT_ID, CORP_ID, CORP_SECRET, TOKEN, CallbackClient, FakeWecomApi
from tests.helpers import make_core

CHANNELS = ["cli", "telegram", "wecom"]
TELEGRAM_IDS = {"admin": 1001, "alice": 2002, "bob": 3003}
QUESTION = "科大讯飞董事长是谁？"
Done = Callable[[str], bool]


class Driver(Protocol):
    """One channel with a user at the other end."""

    name: str
    core: Core
    store: LogStore

    def uid(self, user: str) -> str:
        """The channel's id of a named user (admin, alice, bob)."""
        ...

    async def send(self, user: str, text: str, done: Done | None = None) -> str:
        """What the user sees in reply to one message, once `done` holds (default: any final reply)."""
        ...


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the reply"
        await asyncio.sleep(0.01)


class ConsoleDriver:
    name = "cli"

    def __init__(self, core: Core, store: LogStore) -> None:
        self.core, self.store = core, store

    def uid(self, user: str) -> str:
        return user

    async def send(self, user: str, text: str, done: Done | None = None) -> str:
        out = io.StringIO()
        await Console(self.core, out=out, user=user, admin=user == "admin").answer(text)
        return out.getvalue().rstrip("\n")


class TelegramDriver:
    name = "telegram"

    def __init__(self, core: Core, store: LogStore, server: FakeTelegram) -> None:
        self.core, self.store, self.server = core, store, server

    def uid(self, user: str) -> str:
        return str(TELEGRAM_IDS[user])

    def replies(self, message_id: int) -> str:
        return "\n".join(m.text for m in self.server.messages.values() if m.from_bot and m.reply_to == message_id)

    async def send(self, user: str, text: str, done: Done | None = None) -> str:
        mid = self.server.private(TELEGRAM_IDS[user], text, language_code="zh-hans")
        self.last = self.server.updates[-1]["message"]
        thinking = phrases.message("thinking", "zh")
        await wait_until(lambda: (done or bool)(self.replies(mid)) and self.replies(mid) != thinking)
        return self.replies(mid)

    def resend_last(self) -> int:
        """Telegram delivers the same update again (as after a restart); returns its message id."""
        self.server.push_update({"message": self.last})
        return int(self.last["message_id"])


class WecomDriver:
    name = "wecom"

    def __init__(self, core: Core, store: LogStore, api: FakeWecomApi, client: CallbackClient) -> None:
        self.core, self.store, self.api, self.client = core, store, api, client

    def uid(self, user: str) -> str:
        return user

    def texts_to(self, user: str) -> list[str]:
        return self.api.texts_to(user)

    async def send(self, user: str, text: str, done: Done | None = None, **kw: Any) -> str:
        before = len(self.texts_to(user))
        resp, _, _ = await self.client.post(self.client.text_xml(user, text, **kw))
        assert resp.status_code == 200
        await wait_until(lambda: (done or bool)("\n".join(self.texts_to(user)[before:])))
        return "\n".join(self.texts_to(user)[before:])


Drive = Callable[..., Awaitable[Any]]


@pytest.fixture(params=CHANNELS)
async def drive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Drive]:
    """drive(allow=(), rate=0, max_chars=800, answer=...) -> a started driver of the parametrised channel."""
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def build(*, allow: tuple[str, ...] = (), rate: int = 0, max_chars: int = 800,
                    answer: str | None = None) -> Any:
        backend = FakeBackend(answer if answer is not None else "")
        core, store = await make_core(tmp_path, backend)
        if answer is None:  # a true, cited answer to QUESTION
            backend.answer = next(f"科大讯飞董事长是刘庆峰。[{p.order + 1}]" for p in core.content.passages
                                  if "科大讯飞董事长刘庆峰" in p.text)
        cleanup.append(store.close)
        driver = await _driver(request.param, core, store, cleanup)
        allowed = frozenset(driver.uid(u) for u in allow)
        core.gate = Gate(max_chars, {driver.name: Policy(allowed, frozenset(), rate)})
        driver.backend = backend
        return driver

    yield build
    for close in reversed(cleanup):
        await close()


async def _driver(name: str, core: Core, store: LogStore, cleanup: list[Callable[[], Awaitable[None]]]) -> Any:
    if name == "cli":
        return ConsoleDriver(core, store)
    if name == "telegram":
        server = FakeTelegram()
        await server.start()
        cfg = TelegramConfig(token=server.token, base_url=server.base_url, admins=[str(TELEGRAM_IDS["admin"])],
                             edit_interval_s=0.02)
        channel = TelegramChannel(cfg, core)
        await channel.start()
        cleanup += [server.stop, channel.stop]
        return TelegramDriver(core, store, server)
    api = FakeWecomApi()
    await api.start()
    cfg = WecomConfig(listen="127.0.0.1:0", api_base_url=api.base_url, admins=["admin"], corp_id=CORP_ID,
                      agent_id=AGENT_ID, corp_secret=CORP_SECRET, token=TOKEN, aes_key=AES_KEY)
    wecom = WecomChannel(cfg, core, retry_delays=(0.05,))
    await wecom.start()
    cleanup += [api.stop, wecom.stop]
    return WecomDriver(core, store, api, CallbackClient(f"http://127.0.0.1:{wecom.port}{cfg.path}"))


def events(store: LogStore, kind: str = "") -> list[tuple[str, str, str, str]]:
    """Logged events (of one kind, or every kind but reloads), oldest first."""
    where = "kind = ?" if kind else "kind != 'reload' AND ? = ''"
    with sqlite3.connect(store.path) as con:
        return con.execute(f"SELECT channel, user_id, kind, detail FROM events WHERE {where} ORDER BY id",
                           (kind,)).fetchall()


def logged_questions(store: LogStore) -> list[tuple[str, str, str]]:
    with sqlite3.connect(store.path) as con:
        return con.execute("SELECT channel, user_id, question FROM turns ORDER BY id").fetchall()


def cited(text: str) -> bool:
    return "刘庆峰" in text and "[1]" in text


# ---- commands ------------------------------------------------------------------------------------


async def test_start_greets_and_says_what_the_bot_knows(drive: Drive) -> None:
    d = await drive()
    shown = await d.send("alice", "/start")
    assert shown.startswith(phrases.message("greeting", "zh")) and d.core.services.about("zh") in shown
    assert "/sources" in shown


async def test_help_shows_admin_commands_to_admins_only(drive: Drive) -> None:
    d = await drive()
    user, admin = await d.send("alice", "/help"), await d.send("admin", "/help")
    assert d.core.services.about("zh") in user and "/reset" in user and "/reload" not in user
    assert "/reload" in admin and "/stats" in admin


async def test_reset_forgets_the_conversation(drive: Drive) -> None:
    d = await drive()
    assert await d.send("alice", "/reset") == phrases.message("reset", "zh")
    with sqlite3.connect(d.store.path) as con:
        (key,) = con.execute("SELECT conversation FROM resets").fetchone()
    assert key == f"{d.name}:{d.uid('alice')}"


async def test_sources_before_and_after_an_answer(drive: Drive) -> None:
    d = await drive()
    assert await d.send("alice", "/sources") == phrases.message("no_sources", "zh")
    assert cited(await d.send("alice", QUESTION, cited))
    passage = next(p for p in d.core.content.passages if "科大讯飞董事长刘庆峰" in p.text)
    assert await d.send("alice", "/sources") == f"[1] {passage.section}\n{passage.text}"


async def test_reload_for_admins_only(drive: Drive) -> None:
    d = await drive()
    version = d.core.content.version
    assert await d.send("admin", "/reload") == f"内容没有变化（版本 {version}，27 个段落）。"
    assert await d.send("alice", "/reload") == phrases.message("admin_only", "zh")
    assert events(d.store) == [(d.name, d.uid("alice"), "admin_denied", "/reload")]
    assert events(d.store, "reload") == [(d.name, d.uid("admin"), "reload",  # the log keeps it in English
                                          f"Content unchanged (version {version}, 27 passages).")]


async def test_stats_for_admins_only(drive: Drive) -> None:
    d = await drive()
    assert cited(await d.send("alice", QUESTION, cited))
    assert (await d.send("admin", "/stats 48")).startswith("最近 48 小时：1 位用户共 1 轮，拒答 0")
    assert await d.send("bob", "/stats") == phrases.message("admin_only", "zh")
    assert events(d.store) == [(d.name, d.uid("bob"), "admin_denied", "/stats")]


async def test_unknown_command_and_ask(drive: Drive) -> None:
    d = await drive()
    assert await d.send("alice", "/frobnicate now") == phrases.message("unknown_command", "zh", command="/frobnicate")
    assert cited(await d.send("alice", "/ask " + QUESTION, cited))
    assert cited(await d.send("alice", "/ask" + QUESTION, cited))  # no space needed before a Chinese question
    assert logged_questions(d.store) == [(d.name, d.uid("alice"), QUESTION)] * 2


# ---- the gate ------------------------------------------------------------------------------------


async def test_allow_list_admits_listed_users_and_admins(drive: Drive) -> None:
    d = await drive(allow=("alice",))
    assert await d.send("bob", QUESTION) == phrases.message("not_allowed", "zh")
    assert cited(await d.send("alice", QUESTION, cited))
    assert cited(await d.send("admin", QUESTION, cited))
    assert events(d.store) == [(d.name, d.uid("bob"), "not_allowed", "")]
    assert [u for _, u, _ in logged_questions(d.store)] == [d.uid("alice"), d.uid("admin")]


async def test_an_empty_question_is_not_asked(drive: Drive) -> None:
    d = await drive()
    assert await d.send("alice", "/ask") == phrases.message("empty", "zh")
    assert d.backend.calls == [] and logged_questions(d.store) == []


async def test_a_too_long_question_is_not_asked(drive: Drive) -> None:
    d = await drive(max_chars=20)
    assert await d.send("alice", "长" * 21) == phrases.message("too_long", "zh", limit=20)
    assert d.backend.calls == [] and logged_questions(d.store) == []
    assert events(d.store) == [(d.name, d.uid("alice"), "too_long", "21")]


async def test_rate_limit_per_user(drive: Drive) -> None:
    d = await drive(rate=1)
    assert cited(await d.send("alice", QUESTION, cited))
    assert (await d.send("alice", QUESTION)).startswith("提问太频繁了，请 ")
    assert cited(await d.send("bob", QUESTION, cited))
    assert len(d.backend.calls) == 2
    assert events(d.store) == [(d.name, d.uid("alice"), "rate_limited", "")]


@pytest.mark.parametrize("drive", ["telegram", "wecom"], indirect=True)
async def test_a_picture_gets_the_text_only_reply(drive: Drive) -> None:
    d = await drive()
    if d.name == "telegram":
        uid = TELEGRAM_IDS["alice"]
        photo = [{"file_id": "f1", "file_unique_id": "u1", "width": 9, "height": 9}]
        d.server.push_update({"message": {"message_id": 9999, "date": int(time.time()), "photo": photo,
                                          "chat": d.server.private_chat(uid),
                                          "from": d.server.user(uid, language_code="zh-hans")}})
        await wait_until(lambda: d.replies(9999))
        shown = d.replies(9999)
    else:
        shown = await d.send("alice", "", msg_type="image")
    assert shown == phrases.message("text_only", "zh")
    assert events(d.store) == [(d.name, d.uid("alice"), "non_text", "photo" if d.name == "telegram" else "image")]


@pytest.mark.parametrize("drive", ["telegram", "wecom"], indirect=True)
async def test_a_message_delivered_twice_is_answered_once(drive: Drive) -> None:
    d = await drive()
    if d.name == "telegram":
        assert cited(await d.send("alice", QUESTION, cited))
        mid = d.resend_last()
        await asyncio.sleep(0.3)
        assert len(d.replies(mid).split("\n\n[1]")) == 2  # still the one answer
    else:
        assert cited(await d.send("alice", QUESTION, cited, msg_id="4242"))
        resp, _, _ = await d.client.post(d.client.text_xml("alice", QUESTION, msg_id="4242"))
        assert resp.status_code == 200
        await asyncio.sleep(0.3)
        assert len(d.texts_to("alice")) == 1
    assert len(d.backend.calls) == 1 and len(logged_questions(d.store)) == 1


# ---- the shape -----------------------------------------------------------------------------------


# The adapters' imports are checked with every other layer rule in tests/test_layers.py.
