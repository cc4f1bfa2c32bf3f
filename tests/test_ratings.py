"""bot/log/ratings.py on both engines: one rating per reader per answer, the gaps read back, replies awaited,
a digest claimed by one instance, and ratings pruned and redacted with the turns."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.log.store import LogStore
from tests.test_store import age, answered, msg, rows


@pytest.fixture
async def store(log_target: Path | str) -> AsyncIterator[LogStore]:
    s = await LogStore.open(log_target)
    yield s
    await s.close()


async def test_one_rating_per_reader_per_answer_changeable_and_only_in_its_chat(store: LogStore) -> None:
    turn = await answered(store, msg(chat="c1"))
    r = store.ratings
    assert await r.rate(turn, "cli", "c1", "u1", -1) and await r.reason(turn, "u1", "  不对\n，不是他 ")
    assert await r.rate(turn, "cli", "c1", "u2", 1)
    assert not await r.rate(turn, "cli", "c2", "u3", -1)  # an answer in another chat
    assert not await r.rate(turn + 99, "cli", "c1", "u1", 1)  # no such answer
    got = await rows(store.db.target, "SELECT user_id, rating, reason FROM ratings ORDER BY user_id")
    assert [tuple(g.values()) for g in got] == [("u1", -1, "不对 ，不是他"), ("u2", 1, None)]
    assert await r.rate(turn, "cli", "c1", "u1", 1)  # changed: a 👍 has no reason
    assert not await r.reason(turn, "u1", "late")  # a reason goes with a 👎 only
    assert await r.rate(turn, "cli", "c1", "u2", 0)  # withdrawn
    got = await rows(store.db.target, "SELECT user_id, rating, reason FROM ratings")
    assert [tuple(g.values()) for g in got] == [("u1", 1, None)]


async def test_a_question_still_being_answered_cannot_be_rated(store: LogStore) -> None:
    turn = await store.start_turn(msg())
    assert turn is not None and not await store.ratings.rate(turn, "cli", "c1", "u1", -1)


async def test_gaps_are_the_declined_and_the_rated_down_answers_of_the_period(store: LogStore) -> None:
    declined = await answered(store, msg("停车费多少？"), "文章没有提到。", refused=True, sentence="停车场在东门。")
    rated = await answered(store, msg("董事长是谁？"), "马化腾。")
    liked = await answered(store, msg("谁创立了讯飞？"), "刘庆峰。")
    old = await answered(store, msg("旧问题？"), "文章没有提到。", refused=True)
    await age(store, 10, old)
    assert await store.ratings.rate(rated, "cli", "c1", "u2", -1)
    await store.ratings.reason(rated, "u2", "答错了")
    assert await store.ratings.rate(liked, "cli", "c1", "u2", 1)
    assert await store.ratings.rate(declined, "cli", "c1", "u3", 1)  # still a gap: the content said nothing
    gaps = await store.ratings.gaps(7 * 86400)
    assert [(g.turn_id, g.question, g.closest, g.declined, g.reason) for g in gaps] == [
        (declined, "停车费多少？", "停车场在东门。", True, ""), (rated, "董事长是谁？", "", False, "答错了")]


async def test_a_reply_is_awaited_for_a_week_at_the_message_it_answers(store: LogStore) -> None:
    await store.ratings.await_reply("telegram", "42", "900", "7", "gaps", [["a?", "b?"], ["c?"]])
    got = await store.ratings.awaited("telegram", "42", "900")
    assert got is not None and (got.user_id, got.kind, got.data) == ("7", "gaps", [["a?", "b?"], ["c?"]])
    assert await store.ratings.awaited("telegram", "43", "900") is None
    await store.db.execute("UPDATE awaiting SET at = ?", (time.time() - 8 * 86400,))
    await store.db.commit()
    assert await store.ratings.awaited("telegram", "42", "900") is None


async def test_a_periods_digest_is_claimed_by_one_instance(store: LogStore, log_target: Path | str) -> None:
    other = await LogStore.open(log_target)  # another instance on the same log
    try:
        assert await store.ratings.claim_digest("2026-W50")
        assert not await other.ratings.claim_digest("2026-W50") and not await store.ratings.claim_digest("2026-W50")
        await store.ratings.unclaim_digest("2026-W50")  # no admin reachable: tried again
        assert await other.ratings.claim_digest("2026-W50")
    finally:
        await other.close()


async def test_redaction_hides_who_rated_and_why(store: LogStore) -> None:
    turn = await answered(store, msg())
    assert await store.ratings.rate(turn, "cli", "c1", "u9", -1)
    await store.ratings.reason(turn, "u9", "我的手机号是 13800000000")
    await store.db.execute("UPDATE ratings SET at = at - 8 * 86400")
    await age(store, 8, turn)
    await store.prune(0, redact_after_days=7, key=b"k")
    (got,) = await rows(store.db.target, "SELECT user_id, reason FROM ratings")
    assert got["user_id"].startswith("r:") and got["reason"] == "[redacted]"


async def test_admins_opt_in_to_the_digest_and_out(store: LogStore) -> None:
    await store.ratings.subscribe("telegram", "1001", True)
    await store.ratings.subscribe("telegram", "1001", True)  # twice: once
    await store.ratings.subscribe("wecom", "boss", True)
    assert await store.ratings.subscribers() == {"telegram": {"1001"}, "wecom": {"boss"}}
    await store.ratings.subscribe("telegram", "1001", False)
    assert await store.ratings.subscribers() == {"wecom": {"boss"}}
