"""bot/log/leases.py and the store's claims with several instances on one log (each a LogStore of its own,
as each bot process has), on both engines: a message is taken once, a live instance's turns stay its own,
a dead one's are taken over once, a clean stop hands them over at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.content.library import Proposal
from bot.log.store import LogStore
from bot.types import Incoming, Reply

Opener = Callable[[], Awaitable[LogStore]]


@pytest.fixture
async def instance(log_target: Path | str) -> AsyncIterator[Opener]:
    """instance() -> a new LogStore on the test's log, as another bot process would open it (short leases)."""
    opened: list[LogStore] = []

    async def open_one() -> LogStore:
        store = await LogStore.open(log_target)
        store.leases.lease_s = 0.5
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


def question(n: int) -> Incoming:
    return Incoming("telegram", "42", "7", f"问题{n}", message_id=str(n))


async def test_a_message_delivered_to_two_instances_is_taken_by_one(instance: Opener) -> None:
    a, b = await instance(), await instance()
    got = await asyncio.gather(a.receive(question(1), "42:1"), b.receive(question(1), "42:1"))
    taken = [g for g in got if g.turn_id is not None]
    repeats = [g for g in got if g.repeat]
    assert len(taken) == 1 and len(repeats) == 1
    assert repeats[0].prior is not None and repeats[0].prior.turn_id == taken[0].turn_id
    assert [r["id"] for r in await a.recent(10)] == [taken[0].turn_id]


async def test_a_live_instances_turn_is_not_taken_and_a_dead_ones_is_taken_once(instance: Opener) -> None:
    a, b, c = await instance(), await instance(), await instance()
    turn = await a.start_turn(question(1))
    assert turn is not None
    assert await b.pending_turns(600, ["telegram"]) == []  # a is on it
    assert not await b.leases.take(turn)
    await asyncio.sleep(0.3)
    assert await a.leases.renew() == 1  # a lives: its lease is extended
    await asyncio.sleep(0.3)
    assert await b.pending_turns(600, ["telegram"]) == []
    await asyncio.sleep(0.6)  # a died: nothing renewed its lease
    got = await asyncio.gather(b.pending_turns(600, ["telegram"]), c.pending_turns(600, ["telegram"]))
    assert sorted(len(g) for g in got) == [0, 1]  # taken by one of them
    winner = b if got[0] else c
    assert not await a.leases.take(turn)  # the old owner, back, finds it taken
    assert await winner.leases.take(turn)  # the winner holds it


async def test_an_answered_turn_is_no_ones_once_delivered(instance: Opener) -> None:
    a, b = await instance(), await instance()
    turn = await a.start_turn(question(1))
    assert turn is not None
    await a.finish_turn(turn, Reply("答案", refused=False))
    await a.delivered(turn, "NetworkError: Telegram down")  # waiting: a re-sends it, or b once a dies
    await asyncio.sleep(0.6)
    (left,) = await b.pending_turns(600, ["telegram"])
    assert left.turn_id == turn and left.answered
    await b.delivered(turn)
    assert await a.pending_turns(600, ["telegram"]) == []
    assert await a.leases.renew() == 0


async def test_a_clean_stop_hands_its_turns_over_at_once(instance: Opener) -> None:
    a, b = await instance(), await instance()
    a.leases.lease_s = 3600.0
    turn = await a.start_turn(question(1))
    assert await b.pending_turns(600, ["telegram"]) == []
    await a.close()
    (left,) = await b.pending_turns(600, ["telegram"])
    assert left.turn_id == turn


async def test_many_instances_claiming_together_claim_each_turn_once(instance: Opener) -> None:
    stores = [await instance() for _ in range(4)]
    ids = [await stores[0].start_turn(question(n)) for n in range(12)]
    await stores[0].db.execute("UPDATE turns SET lease_until = 0")
    await stores[0].db.commit()
    got = await asyncio.gather(*(s.pending_turns(600, ["telegram"]) for s in stores))
    claimed = sorted(t.turn_id for g in got for t in g)
    assert claimed == sorted(ids)  # every turn once, none twice


async def test_a_proposal_is_confirmed_once_by_whichever_instance(instance: Opener) -> None:
    a, b = await instance(), await instance()
    await a.proposals.keep(Proposal("t1", "telegram:9", "add", "new.md", "# 新\n正文。", time.time()))
    assert await b.proposals.take("t1", "telegram:8", 600) is None  # another admin's conversation
    got = await asyncio.gather(a.proposals.take("t1", "telegram:9", 600), b.proposals.take("t1", "telegram:9", 600))
    taken = [p for p in got if p is not None]
    assert len(taken) == 1 and (taken[0].name, taken[0].markdown) == ("new.md", "# 新\n正文。")
    await a.proposals.keep(Proposal("t2", "telegram:9", "remove", "old.md", "", time.time() - 700))
    assert await b.proposals.take("t2", "telegram:9", 600) is None  # expired


async def test_rate_limits_read_every_instances_questions(instance: Opener) -> None:
    a, b = await instance(), await instance()
    await a.start_turn(question(1))
    await b.start_turn(question(2))
    await a.start_turn(Incoming("telegram", "42", "8", "别人的问题"))
    ages = await b.questions_of("telegram", "7", 60)
    assert len(ages) == 2 and all(0 <= age < 5 for age in ages)
