"""Several bot instances sharing one PostgreSQL log (and one content folder), each a core of its own as each
`bot serve` process has: a message delivered to two is answered once, a rate limit counts every instance's
questions, a preview shown by one is confirmed on another and every instance then serves the new content,
a dead instance's question is answered once by a live one."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.core.runtime import Core
from bot.log.store import LogStore
from bot.text import phrases
from bot.types import Incoming, Notice, Reply
from tests.fakes.backend import FakeBackend
from tests.helpers import ROOT, make_config, make_core
from tests.test_library import DOC, admin, command_of, document, run

LIU = "科大讯飞董事长是刘庆峰。"
Instance = Callable[..., Awaitable[Core]]


@pytest.fixture
async def instance(tmp_path: Path, postgres_server: object) -> AsyncIterator[Instance]:
    """instance(rate_limit=6) -> a started core on the test's shared PostgreSQL log and content folder, with a
    data folder of its own (as `bot serve` on another machine would have)."""
    url = postgres_server.new_database()  # type: ignore[attr-defined]
    content = tmp_path / "content"
    shutil.copytree(ROOT / "content", content)
    stores: list[LogStore] = []

    async def start(rate_limit: int = 6, lease_s: float = 30.0) -> Core:
        cfg = make_config(tmp_path / f"i{len(stores)}", content)
        cfg.log.database_url = url
        cfg.log.lease_s = lease_s
        cfg.telegram.rate_limit_per_minute = rate_limit
        cfg.telegram.admins = ["boss"]
        core, store = await make_core(tmp_path / f"i{len(stores)}", FakeBackend(LIU), cfg=cfg)
        stores.append(store)
        return core

    yield start
    for store in stores:
        await store.close()


def update(n: int, user: str = "7") -> Incoming:
    """A Telegram message (a webhook update) as every instance maps it."""
    return Incoming("telegram", user, user, "科大讯飞董事长是谁？", message_id=str(n))


async def test_postgres_a_message_delivered_to_two_instances_is_answered_once(instance: Instance) -> None:
    a, b = await instance(), await instance()
    turns = await asyncio.gather(a.receive(update(1)), b.receive(update(1)))
    taken = [t for t in turns if t is not None]
    assert len(taken) == 1 and taken[0].is_question
    reply = await taken[0].reply()
    assert isinstance(reply, Reply) and "刘庆峰" in reply.text
    await taken[0].delivered()
    assert await a.receive(update(1)) is None and await b.receive(update(1)) is None  # Telegram's retry
    assert [r["status"] for r in await a.store.recent(10)] == ["answered"]


async def test_postgres_a_rate_limit_counts_the_questions_every_instance_took(instance: Instance) -> None:
    a, b = await instance(rate_limit=2), await instance(rate_limit=2)
    for n, core in ((1, a), (2, b)):
        turn = await core.receive(update(n))
        assert turn is not None and turn.is_question
    third = await a.receive(update(3))
    assert third is not None and not third.is_question
    refused = await third.reply()
    assert isinstance(refused, Notice) and refused.text.startswith("提问太频繁了")
    other = await b.receive(update(4, user="8"))  # another user is not limited by the first one's questions
    assert other is not None and other.is_question


async def test_postgres_a_preview_from_one_instance_is_confirmed_on_another_and_all_serve_it(
        instance: Instance) -> None:
    a, b = await instance(), await instance()
    before = a.content.version
    preview, _ = await run(a, admin(attachment=document("extra.md", DOC.encode())))
    report, _ = await run(b, admin(command_of(preview, "Confirm")))  # the press reached the other instance
    assert "新增 2" in report.text and b.content.version != before
    again, _ = await run(a, admin(command_of(preview, "Confirm")))
    assert again.text == phrases.message("proposal_gone", "zh")  # once only, whichever instance sees the press
    assert a.content.version == before
    followed = await a.follow()  # its watcher's next look at the log
    assert followed is not None and followed.ok and a.content.version == b.content.version
    assert await a.follow() is None and await b.follow() is None  # nothing more to follow


async def test_postgres_a_dead_instances_question_is_answered_once_by_a_live_one(instance: Instance) -> None:
    dead = await instance(lease_s=0.5)
    b, c = await instance(lease_s=0.5), await instance(lease_s=0.5)
    turn = await dead.receive(update(1))
    assert turn is not None  # taken, logged, and then the process died before answering
    assert await b.orphans(["telegram"]) == []  # its lease is still live
    await asyncio.sleep(0.7)
    found = await asyncio.gather(b.orphans(["telegram"]), c.orphans(["telegram"]))
    (orphan,) = [t for f in found for t in f]
    assert orphan.turn_id == turn.turn_id
    reply = await orphan.reply()
    assert isinstance(reply, Reply) and "刘庆峰" in reply.text
    await orphan.delivered()
    assert await b.orphans(["telegram"]) == [] and await c.orphans(["telegram"]) == []
    assert await b.receive(update(1)) is None  # Telegram's retry of it meanwhile: answered already
    assert [(r["status"], r["delivery"]) for r in await b.store.recent(10)] == [("answered", "delivered")]
