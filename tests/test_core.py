"""bot/core/runtime.py: turns logged before generation and finished whatever happens, history, /reset, /sources, reload.

The real engine answers with the canned-token FakeBackend over the shipped article.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.content.knowledge import load
from bot.core.gate import Gate, Policy
from bot.errors import BotError
from bot.log.store import LogStore
from bot.types import Delta, Incoming, Reply
from tests.fakes.backend import FakeBackend
from tests.helpers import ROOT, ask_msg, copying, make_config, make_core, stream, turns

ARTICLE = load(ROOT / "content")
LIU = next(p for p in ARTICLE.passages if "科大讯飞董事长刘庆峰" in p.text)
LIU_N, LIU_ID = LIU.order + 1, LIU.id


# ---- conversations ----


async def test_follow_ups_see_history_until_reset(engine_for) -> None:
    # Fact questions are picked and copied (the pick prompt names the previous question); an open question
    # gets a free draft, which sees the earlier turns as chat history.
    backend = FakeBackend(copying("以领军企业为主体产学研合作的创新体系", "刘庆峰",
                                  free="刘庆峰建议构建以领军企业为主体产学研合作的创新体系。"))
    core, _ = await engine_for(backend)
    first = await core.ask(ask_msg("科大讯飞董事长是谁？", "conv"))
    assert not first.refused and first.text.startswith("刘庆峰[1]")
    assert "上一个问题" not in backend.calls[0][-1]["content"]
    second = await core.ask(ask_msg("他建议构建什么样的创新体系？", "conv"))
    pick = backend.calls[1][-1]["content"]
    assert "上一个问题：科大讯飞董事长是谁？" in pick and "问题：他建议构建什么样的创新体系？" in pick
    assert not second.refused and second.text.startswith("以领军企业为主体产学研合作的创新体系[1]")
    await core.ask(ask_msg("概括一下他的建议", "conv"))
    msgs = backend.calls[2]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == "科大讯飞董事长是谁？"
    assert msgs[2]["content"] == "刘庆峰"  # markers and the source quote stripped from the history
    assert msgs[3]["content"] == "他建议构建什么样的创新体系？"
    assert msgs[4]["content"] == "以领军企业为主体产学研合作的创新体系"
    assert "概括一下他的建议" in msgs[5]["content"]

    # Another conversation does not see it.
    n = len(backend.calls)
    await core.ask(ask_msg("刘庆峰建议构建什么样的创新体系？", "other"))
    assert "上一个问题" not in backend.calls[n][-1]["content"]
    await core.ask(ask_msg("概括一下刘庆峰的建议", "other"))
    assert [m["role"] for m in backend.calls[n + 1]] == ["system", "user", "assistant", "user"]
    assert backend.calls[n + 1][1]["content"] == "刘庆峰建议构建什么样的创新体系？"

    await core.services.reset("conv")
    n = len(backend.calls)
    await core.ask(ask_msg("刘庆峰建议构建什么样的创新体系？", "conv"))
    assert "上一个问题" not in backend.calls[n][-1]["content"]
    await core.services.reset("conv")
    await core.ask(ask_msg("概括一下刘庆峰的建议", "conv"))
    assert [m["role"] for m in backend.calls[n + 1]] == ["system", "user"]


async def test_history_is_limited_by_turns(tmp_path: Path) -> None:

    cfg = make_config(tmp_path)
    cfg.conversation.history_turns = 1
    backend = FakeBackend(copying("刘庆峰", free=f"科大讯飞董事长刘庆峰建议加快推进认知智能大模型建设。[{LIU_N}]"))
    core, store = await make_core(tmp_path, backend, cfg=cfg)
    try:
        # Two fact questions, then an open one: its free draft is the request that carries the history.
        for q in ("科大讯飞董事长是谁？", "科大讯飞的董事长叫什么？", "概括一下科大讯飞董事长的观点"):
            await core.ask(ask_msg(q, "c"))
        assert len(backend.calls) == 3
        roles = [m["role"] for m in backend.calls[-1]]
        assert roles == ["system", "user", "assistant", "user"]
        assert backend.calls[-1][1]["content"] == "科大讯飞的董事长叫什么？"
    finally:
        await store.close()


async def test_sources_returns_the_last_answers_passages_in_full(engine_for) -> None:
    core, _ = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))
    assert await core.services.sources("cli:chat") == []
    await core.ask(ask_msg("科大讯飞董事长是谁？"))
    cites = await core.services.sources("cli:chat")
    assert [(c.n, c.id) for c in cites] == [(1, LIU_ID)]
    assert "在别人的院子里建大楼" in cites[0].text


# ---- failures ------------------------------------------------------------------------------------


async def test_a_backend_failure_gives_an_error_reply_and_an_error_row(engine_for) -> None:
    backend = FakeBackend("科大讯飞董事长是刘庆峰。", fail_after=3)
    core, store = await engine_for(backend)
    events = [e async for e in stream(core, ask_msg("科大讯飞董事长是谁？"))]
    reply = events[-1]
    assert isinstance(reply, Reply)
    assert reply.error and "fake backend failure" in reply.error
    assert reply.text == BotError.user_message
    assert reply.citations == []
    row = turns(store)[-1]
    assert row["status"] == "error"
    assert "fake backend failure" in row["error"]
    assert row["question"] == "科大讯飞董事长是谁？"
    # A failed turn is not history for a follow-up.
    assert await store.history("cli:chat", 5) == []


async def test_a_closed_stream_leaves_the_question_logged(engine_for) -> None:
    core, store = await engine_for(FakeBackend("科大讯飞董事长是刘庆峰。", delay=0.01))
    agen = stream(core, ask_msg("科大讯飞董事长是谁？"))
    async for event in agen:
        if isinstance(event, Delta):
            break
    await agen.aclose()
    rows = turns(store)
    assert len(rows) == 1
    assert rows[0]["question"] == "科大讯飞董事长是谁？"
    # Left pending, like a crash: a messenger turn is answered after the restart.
    assert rows[0]["status"] == "pending" and rows[0]["answer"] is None


async def test_a_cancelled_task_leaves_the_question_logged(engine_for) -> None:
    core, store = await engine_for(FakeBackend("科大讯飞董事长是刘庆峰。", delay=0.05))
    task = asyncio.create_task(core.ask(ask_msg("科大讯飞董事长是谁？")))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if turns(store):
            break
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = turns(store)
    assert [r["question"] for r in rows] == ["科大讯飞董事长是谁？"]
    assert rows[0]["status"] == "pending"  # answered after a restart, not marked failed


async def test_the_question_is_logged_before_generation(engine_for) -> None:
    seen: list[list[sqlite3.Row]] = []
    holder: dict[str, LogStore] = {}

    def script(messages: list[dict[str, str]]) -> str:
        seen.append(turns(holder["store"]))
        return f"科大讯飞董事长是刘庆峰。[{LIU_N}]"

    core, store = await engine_for(FakeBackend(script))
    holder["store"] = store
    await core.ask(ask_msg("科大讯飞董事长是谁？"))
    assert seen and [(r["question"], r["status"]) for r in seen[0]] == [("科大讯飞董事长是谁？", "pending")]


# ---- delivery ------------------------------------------------------------------------------------


def wecom_msg(text: str, msg_id: str) -> Incoming:
    return Incoming("wecom", "zhang", "zhang", text, msg_id)


async def test_a_repeat_of_an_undelivered_message_sends_the_logged_answer_without_the_model(engine_for) -> None:
    backend = FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]")
    core, store = await engine_for(backend)
    turn = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m1"))
    assert turn is not None
    first = await turn.reply()
    assert await core.receive(wecom_msg("科大讯飞董事长是谁？", "m1")) is None  # the channel is still on it
    await turn.delivered("WecomApiError: giving up after retries")
    calls = len(backend.calls)

    again = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m1"))
    assert again is not None and again.answered and again.turn_id == turn.turn_id
    second = await again.reply()
    assert isinstance(second, Reply) and isinstance(first, Reply)
    assert (second.text, second.citations) == (first.text, first.citations)
    assert len(backend.calls) == calls  # not generated again
    await again.delivered()
    assert await core.receive(wecom_msg("科大讯飞董事长是谁？", "m1")) is None  # delivered: a plain duplicate
    row = turns(store)[0]
    assert (row["status"], row["delivery"], len(turns(store))) == ("answered", "delivered", 1)
    events = [r[0] for r in sqlite3.connect(store.path).execute("SELECT kind FROM events")]
    assert events == ["undelivered"]


async def test_a_message_is_received_in_one_store_call(engine_for, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dedupe key, claim and question in one transaction; a repeat learns of its turn in that same call; a
    repeat is not counted against the user's rate limit."""
    core, store = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))
    core.gate = Gate(800, {"wecom": Policy(frozenset(), frozenset(), 2)})  # two questions a minute
    called: list[str] = []
    for name in ("receive", "seen", "claim", "start_turn", "by_message"):
        real = getattr(store, name)

        def spy(*args: object, _real=real, _name=name, **kw: object) -> object:
            called.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(store, name, spy)
    turn = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m7"))
    assert turn is not None and turn.is_question and called == ["receive"]
    called.clear()
    assert await core.receive(wecom_msg("科大讯飞董事长是谁？", "m7")) is None  # still being answered
    assert called == ["receive"]
    called.clear()
    help_turn = await core.receive(wecom_msg("/help", "m8"))
    assert help_turn is not None and not help_turn.is_question and called == ["receive"]
    second = await core.receive(wecom_msg("刘庆峰是谁？", "m9"))  # the repeat did not use up the limit
    assert second is not None and second.is_question
    third = await core.receive(wecom_msg("赵晓光是谁？", "m10"))
    assert third is not None and not third.is_question  # the limit holds


async def test_a_repeat_of_a_message_whose_answer_was_cut_off_by_a_crash_is_answered(tmp_path: Path) -> None:
    backend = FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]")
    core, store = await make_core(tmp_path, backend)
    assert await core.receive(wecom_msg("科大讯飞董事长是谁？", "m2")) is not None  # the process dies here
    await store.close()
    core, store = await make_core(tmp_path, backend)  # the restarted process
    again = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m2"))
    assert again is not None and not again.answered
    reply = await again.reply()
    assert isinstance(reply, Reply) and "刘庆峰" in reply.text
    assert [r["status"] for r in turns(store)] == ["answered"]
    await store.close()


async def test_pending_lists_unanswered_and_undelivered_turns_once(engine_for) -> None:
    core, store = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))
    unsent = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m3"))
    shown = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m4"))
    assert unsent is not None and shown is not None
    await unsent.reply()
    await shown.reply()
    await shown.delivered()
    [left] = await core.pending(["wecom"])
    assert left.turn_id == unsent.turn_id and left.answered
    # Being resumed: WeCom's repeat of the same message meanwhile is a duplicate.
    assert await core.receive(wecom_msg("科大讯飞董事长是谁？", "m3")) is None


async def test_a_final_failure_is_not_resumed(engine_for) -> None:
    core, store = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))
    turn = await core.receive(wecom_msg("科大讯飞董事长是谁？", "m5"))
    assert turn is not None
    await turn.delivered("WecomApiError: user not reachable", final=True)
    assert await core.pending(["wecom"]) == []
    assert await core.receive(wecom_msg("科大讯飞董事长是谁？", "m5")) is None


async def test_bot_ask_counts_as_delivered(engine_for) -> None:
    core, store = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))
    await core.ask(ask_msg("科大讯飞董事长是谁？"))
    assert [r["delivery"] for r in turns(store)] == ["delivered"]


async def test_drain_lets_a_quick_answer_finish_and_leaves_slow_ones_pending(engine_for) -> None:
    core, store = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]", delay=0.5))
    slow = [asyncio.create_task(core.ask(ask_msg("科大讯飞董事长是谁？", conversation=f"c{i}"))) for i in range(3)]
    while core.turns.answering < 3:  # each question logged and its answer under way
        await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    assert await core.drain(0.2) == 3
    assert asyncio.get_running_loop().time() - started < 3
    assert all(t.cancelled() for t in slow)
    assert [r["status"] for r in turns(store)] == ["pending"] * 3  # the restart answers them
    # A question arriving during shutdown is logged and left for the restart too.
    late = asyncio.create_task(core.ask(ask_msg("科大讯飞董事长是谁？", conversation="late")))
    with pytest.raises(asyncio.CancelledError):
        await late
    assert [r["status"] for r in turns(store)] == ["pending"] * 4


async def test_drain_waits_for_answers_that_finish_within_the_grace(engine_for) -> None:
    core, store = await engine_for(FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]", delay=0.01))
    task = asyncio.create_task(core.ask(ask_msg("科大讯飞董事长是谁？")))
    while not turns(store):
        await asyncio.sleep(0.01)
    assert await core.drain(30) == 0
    assert isinstance(await task, Reply) and [r["status"] for r in turns(store)] == ["answered"]


async def test_rate_limits_hold_across_a_restart(tmp_path: Path) -> None:
    core, store = await make_core(tmp_path, FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))
    limit = make_config(tmp_path).telegram.rate_limit_per_minute
    for i in range(limit):
        await store.start_turn(Incoming("telegram", "42", "7", f"问题{i}", f"m{i}"))
    await store.close()
    core, store = await make_core(tmp_path, FakeBackend(f"科大讯飞董事长是刘庆峰。[{LIU_N}]"))  # restarted
    try:
        turn = await core.receive(Incoming("telegram", "42", "7", "科大讯飞董事长是谁？", "m-next"))
        assert turn is not None and not turn.is_question  # told to wait
        other = await core.receive(Incoming("telegram", "43", "8", "科大讯飞董事长是谁？", "m-other"))
        assert other is not None and other.is_question
    finally:
        await store.close()


# ---- reload --------------------------------------------------------------------------------------


@pytest.fixture
async def on_copy(tmp_path: Path) -> AsyncIterator:
    """(content folder copy, backend, core) for tests that edit the content."""
    import shutil

    content = tmp_path / "content"
    shutil.copytree(ROOT / "content", content)
    backend = FakeBackend("")
    core, store = await make_core(tmp_path, backend, content_dir=content)
    yield content, backend, core
    await store.close()


def edit_article(content: Path) -> None:
    text = (content / "article.txt").read_text(encoding="utf-8")
    (content / "article.txt").write_text(text.replace("在别人的院子里建大楼", "在别人的院子里盖大楼"), encoding="utf-8")


async def test_reload_recomputes_the_prefix_only_on_change(on_copy) -> None:
    content, backend, core = on_copy
    # Each prepare warms two prefixes: the content's and the extraction instructions (pinned, content-free).
    instructions = core.engine.extractor.instructions()
    report = await core.reload()
    assert report.ok and len(backend.warmed) == 2 and backend.warmed.count(instructions) == 1
    edit_article(content)
    report = await core.reload()
    assert report.ok and report.changed == 1
    assert len(backend.warmed) == 4 and backend.warmed[2:].count(instructions) == 1
    [old] = [w for w in backend.warmed[:2] if w != instructions]
    [new] = [w for w in backend.warmed[2:] if w != instructions]
    assert "盖大楼" in new[0]["content"] and "盖大楼" not in old[0]["content"]
    assert core.content.version == report.version != ARTICLE.version
    # Once the new version is served, only its prefix stays in the model's memory.
    assert backend.retained == [[new]]
    for f in content.iterdir():
        f.unlink()
    report = await core.reload()
    assert not report.ok and core.content.version == report.previous_version
    assert len(backend.warmed) == 4


async def test_new_content_is_served_only_after_the_model_has_read_it(on_copy) -> None:
    content, backend, core = on_copy
    before = core.content.version
    seen_during_warm: list[str] = []

    async def failing_warm(prefix, progress=None, *, pin=False):  # type: ignore[no-untyped-def]
        if pin:  # the extraction instructions, the same for any content: the new content's prefix fails
            return
        seen_during_warm.append(core.content.version)
        raise RuntimeError("out of memory")

    backend.warm = failing_warm  # type: ignore[method-assign]
    edit_article(content)
    report = await core.reload()
    assert seen_during_warm == [before]  # the old version served while the new one was prepared
    assert not report.ok and "out of memory" in (report.error or "")
    assert core.content.version == before


