"""bot/log/store.py and bot/log/migrations.py: migrations, the turn log, history, dedupe, pending turns, stats."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.log.export import EXPORT_COLUMNS
from bot.log.migrations import MIGRATIONS
from bot.log.store import LogStore, connect
from bot.types import Citation, Incoming, Passage, Reply

LATEST = MIGRATIONS[-1][0]


@pytest.fixture
async def store(log_target: Path | str) -> AsyncIterator[LogStore]:
    """A log on each engine: a SQLite file, a PostgreSQL database (the same tests, the same expectations)."""
    s = await LogStore.open(log_target)
    yield s
    await s.close()


async def rows(target: Path | str, sql: str, args: tuple = ()) -> list[dict]:
    """Read through a second connection: what another process (or instance) would see."""
    db = await connect(target)
    try:
        return await db.fetchall(sql, args)
    finally:
        await db.close()


def msg(text: str = "科大讯飞董事长是谁？", *, channel: str = "cli", chat: str = "c1", user: str = "u1",
        conversation: str = "", message_id: str | None = None) -> Incoming:
    return Incoming(channel, chat, user, text, message_id=message_id, conversation=conversation)


async def answered(store: LogStore, m: Incoming, answer: str = "刘庆峰。", **kw: object) -> int:
    turn = await store.start_turn(m)
    await store.finish_turn(turn, Reply(answer, refused=bool(kw.pop("refused", False)), **kw))  # type: ignore[arg-type]
    return turn


# ---- migrations ----------------------------------------------------------------------------------


def test_migrations_are_numbered_in_order() -> None:
    numbers = [m[0] for m in MIGRATIONS]
    assert numbers == list(range(1, len(MIGRATIONS) + 1))


async def test_a_fresh_database_records_every_migration(log_target: Path | str) -> None:
    s = await LogStore.open(log_target)
    try:
        assert await s.schema_version() == LATEST
        assert await s.migrate() == []
        tables = set(await s.db.columns("turns"))
    finally:
        await s.close()
    got = await rows(log_target, "SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in got] == [m[0] for m in MIGRATIONS]
    assert [r["name"] for r in got] == [m[1] for m in MIGRATIONS]
    assert all(r["applied_at"] == pytest.approx(time.time(), abs=60) for r in got)  # a full-precision time
    assert {"delivered_via", "signals", "question"} <= tables
    for table in ("events", "seen", "passages", "resets"):
        assert await rows(log_target, f"SELECT * FROM {table}") == []


async def test_reopening_applies_nothing(log_target: Path | str) -> None:
    await (await LogStore.open(log_target)).close()
    before = await rows(log_target, "SELECT version, applied_at FROM schema_migrations ORDER BY version")
    s = await LogStore.open(log_target)
    try:
        assert await s.migrate() == []
    finally:
        await s.close()
    assert await rows(log_target, "SELECT version, applied_at FROM schema_migrations ORDER BY version") == before


async def test_instances_starting_together_migrate_once(log_target: Path | str) -> None:
    opened = await asyncio.gather(*(LogStore.open(log_target) for _ in range(3)), return_exceptions=True)
    try:
        assert [type(s) for s in opened] == [LogStore] * 3, opened
        versions = await rows(log_target, "SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [m[0] for m in MIGRATIONS]
    finally:
        for s in opened:
            if isinstance(s, LogStore):
                await s.close()


async def test_a_version_1_database_is_upgraded_with_its_data_kept(log_target: Path | str) -> None:
    if isinstance(log_target, Path):
        log_target.parent.mkdir(parents=True)
    db = await connect(log_target)
    version, name, sql = MIGRATIONS[0]
    try:
        await db.script("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL);\n"
                        f"{sql}\nINSERT INTO schema_migrations VALUES ({version}, '{name}', {time.time()});")
        async with db.transaction():
            await db.execute("INSERT INTO turns (channel, chat_id, user_id, conversation, question, status, answer, "
                             "refused, created_at) VALUES ('telegram', '42', '7', 'telegram:42', '老问题？', "
                             "'answered', '老回答。', 0, ?)", (time.time(),))
            await db.execute("INSERT INTO seen VALUES ('wecom', 'msg-1', ?)", (time.time(),))
    finally:
        await db.close()

    s = await LogStore.open(log_target)
    try:
        assert await s.schema_version() == LATEST
        # The old data is there and usable through the new schema.
        recent = await s.recent(10)
        assert [(r["question"], r["answer"]) for r in recent] == [("老问题？", "老回答。")]
        assert await s.claim("wecom", "msg-1") is False
        hist = await s.history("telegram:42", 5)
        assert [(h.question, h.answer) for h in hist] == [("老问题？", "老回答。")]
        # Tables of later migrations exist and work.
        await s.record_passages([Passage("p1", "节", "正文", "a.txt", 0)], "v1")
        await s.reset("telegram:42")
        assert await s.history("telegram:42", 5) == []
        # The identity of a migrated table goes on after the old rows (PostgreSQL: no clash with id 1).
        assert await s.start_turn(msg("新问题")) == 2
    finally:
        await s.close()
    got = await rows(log_target, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in got] == [m[0] for m in MIGRATIONS]


async def test_wal_mode_is_on(tmp_path: Path) -> None:
    s = await LogStore.open(tmp_path / "bot.sqlite3")
    try:
        assert (await s.db.fetchone("PRAGMA journal_mode"))["journal_mode"].lower() == "wal"
    finally:
        await s.close()
    con = sqlite3.connect(tmp_path / "bot.sqlite3")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        con.close()


# ---- turns ---------------------------------------------------------------------------------------


async def test_start_turn_writes_the_question_before_the_answer(store: LogStore) -> None:
    turn = await store.start_turn(msg(channel="telegram", chat="42", user="7", message_id="m9"))
    got = await rows(store.db.target, "SELECT * FROM turns WHERE id=?", (turn,))
    assert len(got) == 1
    r = got[0]
    assert r["question"] == "科大讯飞董事长是谁？"
    assert (r["channel"], r["chat_id"], r["user_id"], r["message_id"]) == ("telegram", "42", "7", "m9")
    assert r["conversation"] == "telegram:42"
    assert r["status"] == "pending"
    assert r["answer"] is None and r["answered_at"] is None
    assert r["created_at"] == pytest.approx(time.time(), abs=5)


async def test_finish_turn_records_the_answer_and_its_metadata(store: LogStore) -> None:
    turn = await store.start_turn(msg())
    reply = Reply("科大讯飞董事长是刘庆峰。[1][2]", refused=False,
                  citations=[Citation("pabc", "全国人大代表刘庆峰", "正文一", 1),
                             Citation("pdef", "节二", "正文二", 2)],
                  ttft_ms=120, total_ms=900, prompt_tokens=50, completion_tokens=12, model="fake-model",
                  content_version="v123", draft="科大讯飞董事长是刘庆峰。[2]")
    await store.finish_turn(turn, reply)
    r = (await rows(store.db.target, "SELECT * FROM turns WHERE id=?", (turn,)))[0]
    assert r["status"] == "answered"
    assert r["answer"] == "科大讯飞董事长是刘庆峰。[1][2]"
    assert r["refused"] == 0 and r["retracted"] == 0
    assert json.loads(r["citations"]) == [{"id": "pabc", "n": 1, "section": "全国人大代表刘庆峰"},
                                          {"id": "pdef", "n": 2, "section": "节二"}]
    assert (r["ttft_ms"], r["total_ms"], r["prompt_tokens"], r["completion_tokens"]) == (120, 900, 50, 12)
    assert (r["model"], r["content_version"]) == ("fake-model", "v123")
    assert r["error"] is None
    assert r["draft"] == "科大讯飞董事长是刘庆峰。[2]"
    assert r["answered_at"] >= r["created_at"]


async def test_finish_turn_records_refusals_retractions_and_errors(store: LogStore) -> None:
    t1 = await store.start_turn(msg("江浩然的家乡是哪里？"))
    await store.finish_turn(t1, Reply("文章中没有提到。", refused=True, retracted=True, draft="杭州。",
                                      decline_reason="unsupported answer"))
    t2 = await store.start_turn(msg("问题"))
    await store.finish_turn(t2, Reply("抱歉", refused=False, error="RuntimeError: boom"))
    r1, r2 = await rows(store.db.target, "SELECT * FROM turns ORDER BY id")
    assert (r1["status"], r1["refused"], r1["retracted"], r1["draft"]) == ("answered", 1, 1, "杭州。")
    assert r1["decline_reason"] == "unsupported answer"
    assert json.loads(r1["citations"]) == []
    assert (r2["status"], r2["error"]) == ("error", "RuntimeError: boom")


async def test_history_is_per_conversation_oldest_first_and_respects_reset(store: LogStore) -> None:
    b = msg(conversation="B")
    await answered(store, Incoming("cli", "c", "u", "问一", conversation="A"), "答一")
    await answered(store, Incoming("cli", "c", "u", "问二", conversation="A"), "答二", refused=True)
    await answered(store, b, "B的答案")
    # An unanswered and a failed turn are no history.
    await store.start_turn(Incoming("cli", "c", "u", "还没答", conversation="A"))
    failed = await store.start_turn(Incoming("cli", "c", "u", "出错了", conversation="A"))
    await store.finish_turn(failed, Reply("抱歉", refused=False, error="boom"))
    await answered(store, Incoming("cli", "c", "u", "问三", conversation="A"), "答三")

    hist = await store.history("A", 10)
    assert [(h.question, h.answer, h.refused) for h in hist] == [
        ("问一", "答一", False), ("问二", "答二", True), ("问三", "答三", False)]
    assert [h.question for h in await store.history("A", 2)] == ["问二", "问三"]

    await store.reset("A")
    assert await store.history("A", 10) == []
    assert [h.question for h in await store.history("B", 10)] == [b.text]  # other conversations keep theirs
    await answered(store, Incoming("cli", "c", "u", "问四", conversation="A"), "答四")
    assert [h.question for h in await store.history("A", 10)] == ["问四"]
    await store.reset("A")  # a second reset moves the mark forward
    assert await store.history("A", 10) == []
    # The log itself keeps everything.
    assert len(await store.recent(100)) == 7


async def test_last_citations_come_with_passage_text(store: LogStore) -> None:
    await store.record_passages([Passage("p1", "节一", "第一段全文。", "a.txt", 0),
                                 Passage("p2", "节二", "第二段全文。", "a.txt", 1)], "v1")
    assert await store.last_citations("cli:c1") == []
    await answered(store, msg(chat="c1"), "答[1][2]",
                   citations=[Citation("p2", "节二", "", 1), Citation("p1", "节一", "", 2)])
    cites = await store.last_citations("cli:c1")
    assert [(c.n, c.id, c.section, c.text) for c in cites] == [(1, "p2", "节二", "第二段全文。"),
                                                                (2, "p1", "节一", "第一段全文。")]
    # Recording the same passages again (a reload) keeps the first record.
    await store.record_passages([Passage("p1", "节一", "第一段全文。", "a.txt", 0)], "v2")
    got = await rows(store.db.target, "SELECT content_version FROM passages WHERE id='p1'")
    assert got == [{"content_version": "v1"}]


# ---- dedupe, pending turns -----------------------------------------------------------------------


async def test_claim_is_true_once_then_false_also_after_reopening(log_target: Path | str) -> None:
    s = await LogStore.open(log_target)
    try:
        assert await s.claim("wecom", "msg-1") is True
        assert await s.claim("wecom", "msg-1") is False
        assert await s.claim("telegram", "msg-1") is True  # per channel
        assert await s.claim("wecom", "msg-2") is True
    finally:
        await s.close()
    s = await LogStore.open(log_target)
    try:
        assert await s.claim("wecom", "msg-1") is False
        assert await s.claim("wecom", "msg-2") is False
        assert await s.claim("wecom", "msg-3") is True
    finally:
        await s.close()


async def test_pending_turns_returns_young_ones_and_abandons_old_ones(store: LogStore) -> None:
    young = await store.start_turn(msg("年轻的问题", channel="telegram", chat="42", user="7", message_id="m1"))
    old = await store.start_turn(msg("很久以前的问题", channel="telegram", chat="42", user="7"))
    wecom_young = await store.start_turn(msg("企业微信的问题", channel="wecom", chat="zhang", user="zhang"))
    cli_old = await store.start_turn(msg("命令行的问题", channel="cli"))
    done = await answered(store, msg("答过的问题", channel="telegram", chat="42"))
    await store.delivered(done)
    await store.db.execute("UPDATE turns SET created_at = created_at - 3600 WHERE id IN (?, ?)", (old, cli_old))
    await store.db.commit()

    pending = await store.pending_turns(600, ["telegram", "wecom"])
    assert [p.turn_id for p in pending] == [young, wecom_young]
    p = pending[0]
    assert (p.channel, p.chat_id, p.user_id, p.text, p.message_id, p.conversation) == (
        "telegram", "42", "7", "年轻的问题", "m1", "telegram:42")

    status = {r["id"]: r["status"] for r in await rows(store.db.target, "SELECT id, status FROM turns")}
    assert status == {young: "pending", old: "abandoned", wecom_young: "pending", cli_old: "pending",
                      done: "answered"}
    # Only the channels asked about are touched.
    assert [p.turn_id for p in await store.pending_turns(600, ["wecom"])] == [wecom_young]


async def test_an_answer_waits_for_delivery_and_young_undelivered_ones_come_back(store: LogStore) -> None:
    shown = await answered(store, msg("送达的问题", channel="telegram", chat="42"))
    unsent = await answered(store, msg("没送达的问题", channel="telegram", chat="42", message_id="m9"))
    stale = await answered(store, msg("太久没送达的问题", channel="telegram", chat="42"))
    await store.delivered(shown)
    await store.delivered(unsent, "NetworkError: connection refused")
    await store.db.execute("UPDATE turns SET created_at = created_at - 3600 WHERE id = ?", (stale,))
    await store.db.commit()

    pending = await store.pending_turns(600, ["telegram"])
    assert [(p.turn_id, p.answered, p.delivery) for p in pending] == [(unsent, True, "waiting")]
    state = {r["id"]: (r["delivery"], r["delivery_error"], r["delivered_at"] is not None)
             for r in await rows(store.db.target, "SELECT * FROM turns")}
    assert state == {shown: ("delivered", None, True), unsent: ("waiting", "NetworkError: connection refused", False),
                     stale: ("failed", "too old to re-send", False)}
    again = await store.by_message("telegram", "42", "m9")
    assert again is not None and again.turn_id == unsent
    assert await store.by_message("telegram", "43", "m9") is None


async def test_a_final_failure_gives_up_the_turn_and_a_delivered_one_stays_delivered(store: LogStore) -> None:
    blocked = await store.start_turn(msg("被拉黑", channel="telegram", chat="42"))
    shown = await answered(store, msg("送达", channel="telegram", chat="42"))
    await store.delivered(blocked, "Forbidden: bot was blocked by the user", final=True)
    await store.delivered(shown)
    await store.delivered(shown, "late error", final=True)  # a confirmed delivery is not undone
    state = {r["id"]: (r["status"], r["delivery"]) for r in await rows(store.db.target, "SELECT * FROM turns")}
    assert state == {blocked: ("abandoned", "failed"), shown: ("answered", "delivered")}
    assert await store.pending_turns(600, ["telegram"]) == []


async def test_a_stored_reply_is_the_logged_answer_with_its_passages(store: LogStore) -> None:
    await store.record_passages([Passage("p1", "第一节", "刘庆峰是全国人大代表。", "a.txt", 0)], "v1")
    tid = await store.start_turn(msg("刘庆峰是什么代表？", channel="wecom", chat="zhang"))
    await store.finish_turn(tid, Reply("全国人大代表[1]", False, [Citation("p1", "第一节", "", 1)], model="m",
                                       content_version="v1"))
    reply = await store.stored_reply(tid)
    assert (reply.text, reply.refused, reply.turn_id, reply.content_version) == ("全国人大代表[1]", False, tid, "v1")
    assert reply.citations == [Citation("p1", "第一节", "刘庆峰是全国人大代表。", 1)]
    with pytest.raises(LookupError):
        await store.stored_reply(await store.start_turn(msg("还没答")))


async def age(store: LogStore, days: float, *turn_ids: int) -> None:
    """Make turns (and everything stamped at the same time) `days` older."""
    shift = days * 86400
    marks = ",".join("?" * len(turn_ids))
    await store.db.execute(f"UPDATE turns SET created_at = created_at - ? WHERE id IN ({marks})", (shift, *turn_ids))
    await store.db.commit()


async def test_prune_deletes_past_the_retention_and_dedupe_keys_past_their_use(store: LogStore) -> None:
    old = await answered(store, msg("旧问题", channel="telegram", chat="42"))
    new = await answered(store, msg("新问题", channel="telegram", chat="42"))
    await age(store, 40, old)
    await store.log_event("telegram", "42", "7", "not_allowed")
    await store.db.execute("UPDATE events SET at = at - 40 * 86400")
    await store.log_event("telegram", "42", "7", "rate_limited")
    assert await store.claim("telegram", "42:old") and await store.claim("telegram", "42:new")
    await store.db.execute("UPDATE seen SET at = at - 3 * 86400 WHERE key = '42:old'")
    await store.db.commit()
    for turn in (old, new):  # a rating goes with its answer, even when it is younger than the retention
        assert await store.ratings.rate(turn, "telegram", "42", "8", -1)
    await store.ratings.await_reply("telegram", "42", "99", "8", "reason", old)
    await store.db.execute("UPDATE awaiting SET at = at - 8 * 86400")
    await store.db.commit()

    # No retention: turns kept, stale keys and replies no longer awaited still go.
    assert await store.prune(0) == {"seen": 1, "proposals": 0, "awaiting": 1}
    assert [r["id"] for r in await rows(store.db.target, "SELECT id FROM turns ORDER BY id")] == [old, new]
    done = await store.prune(30)
    assert done == {"seen": 0, "proposals": 0, "awaiting": 0, "turns": 1, "events": 1, "resets": 0, "ratings": 1}
    assert [r["turn_id"] for r in await rows(store.db.target, "SELECT turn_id FROM ratings")] == [new]
    assert [r["id"] for r in await rows(store.db.target, "SELECT id FROM turns ORDER BY id")] == [new]
    assert [r["kind"] for r in await rows(store.db.target, "SELECT kind FROM events")] == ["rate_limited"]
    assert [r["key"] for r in await rows(store.db.target, "SELECT key FROM seen")] == ["42:new"]


async def test_redaction_replaces_old_texts_and_ids_with_stable_pseudonyms(store: LogStore) -> None:
    a = await answered(store, msg("张三的问题", channel="telegram", chat="42", user="7"), "答案一")
    await store.delivered(a, "WecomApiError: user 7 not reachable")
    await store.reset("telegram:42")
    await store.db.execute("UPDATE resets SET at = at - 10 * 86400")
    b = await answered(store, msg("张三的另一个问题", channel="telegram", chat="42", user="7"), "答案二")
    c = await answered(store, msg("今天的问题", channel="telegram", chat="42", user="7"), "答案三")
    await age(store, 10, a, b)
    done = await store.prune(0, redact_after_days=7, key=b"k")
    assert done["redacted"] == 2
    got = {r["id"]: dict(r) for r in await rows(store.db.target, "SELECT * FROM turns")}
    assert got[c]["question"] == "今天的问题" and got[c]["user_id"] == "7"
    for tid in (a, b):
        assert (got[tid]["question"], got[tid]["answer"], got[tid]["draft"]) == ("[redacted]", "[redacted]", None)
        assert got[tid]["user_id"].startswith("r:") and got[tid]["user_id"] != "7"
    assert got[a]["user_id"] == got[b]["user_id"] and got[a]["conversation"] == got[b]["conversation"]
    assert got[a]["delivery_error"] is None and await rows(store.db.target, "SELECT * FROM resets") == []
    assert (await store.prune(0, redact_after_days=7, key=b"k"))["redacted"] == 0  # done once


# ---- stats and export ----------------------------------------------------------------------------


async def test_stats_counts_and_percentiles(store: LogStore) -> None:
    for i in range(21):  # total_ms 0..2000, ttft 0..20
        await answered(store, msg(f"问{i}", user=f"u{i % 3}", channel="telegram"), "答",
                       ttft_ms=i, total_ms=i * 100, refused=(i % 7 == 0))
    t = await store.start_turn(msg("出错", user="u9", channel="wecom"))
    await store.finish_turn(t, Reply("抱歉", refused=False, error="boom"))
    old = await answered(store, msg("旧的", user="old", channel="telegram"), "答", ttft_ms=99999, total_ms=99999)
    await store.db.execute("UPDATE turns SET created_at = created_at - 48 * 3600 WHERE id = ?", (old,))
    await store.db.commit()

    st = await store.stats(24)
    assert st.turns == 22
    assert st.users == 4
    assert st.refusals == 3  # i = 0, 7, 14
    assert st.errors == 1
    assert (st.ttft_p50_ms, st.ttft_p95_ms) == (10, 19)
    assert (st.total_p50_ms, st.total_p95_ms) == (1000, 1900)
    assert "22 turns from 4 users" in st.summary()

    tg = await store.stats(24, "telegram")
    assert (tg.turns, tg.errors) == (21, 0)
    assert (await store.stats(72)).turns == 23

    empty = await store.stats(24, "nochannel")
    assert empty.turns == 0 and empty.ttft_p50_ms is None


async def test_recent_is_newest_last_with_every_export_column(store: LogStore) -> None:
    for i in range(5):
        await answered(store, msg(f"问{i}", channel="cli" if i % 2 else "telegram"), f"答{i}")
    recent = await store.recent(3)
    assert [r["question"] for r in recent] == ["问2", "问3", "问4"]
    assert list(recent[0]) == EXPORT_COLUMNS
    assert [r["question"] for r in await store.recent(10, "telegram")] == ["问0", "问2", "问4"]


async def test_log_event(store: LogStore) -> None:
    await store.log_event("telegram", "42", "7", "denied", "/reload")
    r = await rows(store.db.target, "SELECT channel, chat_id, user_id, kind, detail FROM events")
    assert [tuple(x.values()) for x in r] == [("telegram", "42", "7", "denied", "/reload")]
