"""The Telegram channel end to end: the real python-telegram-bot talks to a loopback fake Bot API server.

Most tests run the real Engine over the article with the canned-token FakeBackend. A few channel-side
edge cases (edit throttling, a parse error, 502s, an exception inside a handler, a redelivered update)
use `ScriptedEngine`, which stands in for the engine behind a real core: the channel, the library and the HTTP
traffic are the real ones.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.channels.telegram import TelegramChannel, split_message, utf16_len
from bot.config import TelegramConfig
from bot.content.knowledge import Knowledge
from bot.core.gate import Gate, Policy
from bot.core.runtime import Core, wire
from bot.errors import BotError
from bot.log.store import LogStore
from bot.text import phrases
from bot.types import Citation, Delta, Event, Incoming, Reply
from tests.fakes.backend import FakeBackend
from tests.fakes.telegram_server import ApiError, FakeTelegram, render_html
from tests.helpers import copying, make_config, make_core

ADMIN, ALICE, BOB = 1001, 2002, 3003
GROUP = -100500
SECTION = "全国人大代表刘庆峰 领军企业与国家实验室共建产学研合作创新体系"
# The article's sentence that names 科大讯飞董事长刘庆峰, quoted under an answer about him.
QUOTE = ("\n原文[1]：「全国人大代表、科大讯飞董事长刘庆峰认为,应当加快推进我国认知智能大模型建设,"
         "在自主可控平台上让行业尽快享受AI红利,让每个人都有AI助手。」")
# A fact question's reply on the extractive path: the answer copied out of that sentence, then the sentence.
EXTRACTED = f"刘庆峰[1]{QUOTE}"


# ---- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend("", delay=0.02)


@pytest.fixture
async def real(tmp_path: Path, backend: FakeBackend) -> AsyncIterator[tuple[Core, LogStore]]:
    """The real core and engine over the shipped article, answering with `backend`'s canned text."""
    core, store = await make_core(tmp_path, backend)
    yield core, store
    await store.close()


@pytest.fixture
async def real_draft(tmp_path: Path, backend: FakeBackend) -> AsyncIterator[tuple[Core, LogStore]]:
    """Like `real` with the extractive path off: every question gets a free draft, streamed and checked."""
    cfg = make_config(tmp_path)
    cfg.grounding.extractive = False
    core, store = await make_core(tmp_path, backend, cfg=cfg)
    yield core, store
    await store.close()


@asynccontextmanager
async def engine_over(tmp_path: Path, backend: FakeBackend, article: str, *,
                      extractive: bool = True) -> AsyncIterator[tuple[Core, LogStore]]:
    """The real core and engine over a content folder holding just `article` (extractive=False: the free
    draft for every question)."""
    content = tmp_path / "content"
    content.mkdir()
    (content / "article.md").write_text(article, encoding="utf-8")
    cfg = make_config(tmp_path / "run", content)
    cfg.grounding.extractive = extractive
    core, store = await make_core(tmp_path / "run", backend, cfg=cfg)
    try:
        yield core, store
    finally:
        await store.close()


def marker(core: Core, snippet: str) -> int:
    """The passage number the model would cite (the engine renumbers it to display order)."""
    return next(p.order + 1 for p in core.content.passages if snippet in p.text)


@asynccontextmanager
async def running(server: FakeTelegram, core: Core, *, max_chars: int = 800,
                  **kw: Any) -> AsyncIterator[TelegramChannel]:
    """A started channel pointed at the fake server (stopped, with every handler finished, on exit); the
    core's gate takes the channel's config, as the composition root does."""
    kw.setdefault("edit_interval_s", 0.02)
    kw.setdefault("admins", [str(ADMIN)])
    cfg = TelegramConfig(token=server.token, base_url=server.base_url, **kw)
    core.gate = Gate(max_chars, {"telegram": Policy.of(cfg)})
    channel = TelegramChannel(cfg, core)
    channel.api.backoff_s = 0.01
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()


def replies_to(server: FakeTelegram, message_id: int) -> list[str]:
    """Current texts of the bot's messages that reply to a given user message."""
    return [m.text for m in server.messages.values() if m.from_bot and m.reply_to == message_id]


def answered(server: FakeTelegram, message_id: int, needle: str = "\n\n[1] ") -> bool:
    return any(needle in t for t in replies_to(server, message_id))


def no_api_errors(server: FakeTelegram) -> None:
    bad = [(c.method, c.status, c.error) for c in server.calls if c.status != 200]
    assert not bad, bad


def rows(store: LogStore, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql, args).fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the fake server itself ----------------------------------------------------------------------


def test_fake_renders_html_strictly() -> None:
    assert render_html("a &lt;b&gt; &amp; <b>c</b>") == "a <b> & c"
    for bad in ("a < b", "a & b", "a > b", "<x>y</x>", "<b>open"):
        with pytest.raises(ApiError):
            render_html(bad)


async def test_fake_server_speaks_bot_api(server: FakeTelegram) -> None:
    api = f"{server.base_url}{server.token}"
    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.post(f"{api}/getMe")
        assert r.json()["result"]["username"] == "article_test_bot"
        assert (await client.post(f"{server.base_url}WRONG/getMe")).status_code == 401
        server.fail_next("sendMessage", kind="retry_after", retry_after=3)
        r = await client.post(f"{api}/sendMessage", data={"chat_id": 5, "text": "x"})
        assert r.status_code == 429 and r.json()["parameters"]["retry_after"] == 3
        html_msg = {"chat_id": 5, "text": "1 &lt; 2", "parse_mode": "HTML"}
        r = await client.post(f"{api}/sendMessage", data=html_msg)
        assert r.json()["result"]["text"] == "1 < 2"
        mid = r.json()["result"]["message_id"]
        same = {"chat_id": 5, "message_id": mid, "text": "1 < 2"}
        r = await client.post(f"{api}/editMessageText", data=same)
        assert r.status_code == 400 and "not modified" in r.json()["description"]
    assert [c.status for c in server.calls] == [200, 401, 429, 200, 400]
    assert server.bot_texts(5) == ["1 < 2"]


# ---- pure helpers --------------------------------------------------------------------------------


def test_split_message_at_boundaries() -> None:
    para = "刘庆峰表示，类ChatGPT研发是一个持续进化的系统工程。" * 40
    text = "\n\n".join([para] * 6)
    parts = split_message(text)
    assert len(parts) > 1 and all(utf16_len(p) <= 4096 for p in parts)
    assert all(p.endswith("。") for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")
    assert all(p.endswith("。") for p in split_message("这是一句话。" * 1000))
    assert split_message("x" * 5000) == ["x" * 4096, "x" * 904]
    assert all(utf16_len(p) <= 4096 for p in split_message("😀" * 3000))  # two UTF-16 units each
    assert split_message("short") == ["short"]


# ---- end to end with the real engine -------------------------------------------------------------


async def test_private_question_gets_streamed_cited_answer(server: FakeTelegram, backend: FakeBackend,
                                                          real_draft: tuple[Core, LogStore]) -> None:
    # The free draft's sentence-by-sentence release, as edits of the placeholder (a fact question's
    # extracted answer arrives whole: tests below).
    core, store = real_draft
    n = marker(core, "科大讯飞董事长刘庆峰")
    backend.answer = f"科大讯飞董事长是刘庆峰。[{n}]他是全国人大代表。[{n}]"
    backend.delay = 0.02  # the sentences arrive several edit intervals apart
    async with running(server, core):
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: answered(server, mid))
    answer = "科大讯飞董事长是刘庆峰。[1]他是全国人大代表。[1]"
    final = f"{answer}{QUOTE}\n\n[1] {SECTION}"
    assert server.bot_texts(ALICE) == [final]
    placeholder = server.calls_of("sendMessage")
    assert len(placeholder) == 1 and placeholder[0].params["text"] == phrases.message("thinking", "zh")
    assert placeholder[0].params["reply_parameters"]["message_id"] == mid
    assert server.calls_of("sendChatAction")[0].params["action"] == "typing"
    assert server.calls_of("sendChatAction")[0].at < server.calls_of("editMessageText")[0].at
    edits = [c.params["text"] for c in server.calls_of("editMessageText")]
    # Checked sentences are shown one at a time: the first before the second was written.
    assert edits[0].startswith("科大讯飞董事长是刘庆峰。") and "人大代表" not in edits[0], edits
    assert edits[-1] == final
    no_api_errors(server)
    assert rows(store, "SELECT channel, chat_id, user_id, conversation, message_id, question, answer, status "
                       "FROM turns") == [("telegram", str(ALICE), str(ALICE), f"telegram:{ALICE}", str(mid),
                                          "科大讯飞董事长是谁？", answer + QUOTE, "answered")]


async def test_group_answers_only_when_addressed(server: FakeTelegram, backend: FakeBackend,
                                                 real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    async with running(server, core):
        plain = server.group(GROUP, ALICE, "科大讯飞董事长是谁？")
        other_bot = server.group(GROUP, ALICE, "/ask@some_other_bot 董事长是谁？")
        mention = server.group(GROUP, ALICE, "@article_test_bot 科大讯飞董事长是谁？")
        await server.wait_for(lambda: answered(server, mention))
        answer_id = server.bot_messages(GROUP)[0].message_id
        reply = server.group(GROUP, BOB, "董事长是谁？", reply_to=answer_id)
        ask = server.group(GROUP, BOB, "/ask 刘庆峰是谁？")
        ask_at = server.group(GROUP, ALICE, "/ask@article_test_bot 谁是董事长？")
        help_at = server.group(GROUP, BOB, "/help@article_test_bot")
        unknown = server.group(GROUP, BOB, "/frobnicate")  # perhaps another bot's: not answered
        other_help = server.group(GROUP, BOB, "/help@some_other_bot")
        await server.wait_for(lambda: all(answered(server, m) for m in (reply, ask, ask_at))
                              and replies_to(server, help_at))
    assert replies_to(server, plain) == [] and replies_to(server, other_bot) == []
    assert replies_to(server, unknown) == [] and replies_to(server, other_help) == []
    assert "/sources" in replies_to(server, help_at)[0]
    logged = rows(store, "SELECT question, conversation, user_id FROM turns ORDER BY id")
    assert sorted(logged) == sorted([
        ("科大讯飞董事长是谁？", f"telegram:{GROUP}:{ALICE}", str(ALICE)),
        ("董事长是谁？", f"telegram:{GROUP}:{BOB}", str(BOB)),
        ("刘庆峰是谁？", f"telegram:{GROUP}:{BOB}", str(BOB)),
        ("谁是董事长？", f"telegram:{GROUP}:{ALICE}", str(ALICE)),
    ])
    no_api_errors(server)


async def test_reload_by_admin_and_by_non_admin(server: FakeTelegram, real: tuple[Core, LogStore]) -> None:
    core, store = real
    async with running(server, core):
        ok = server.private(ADMIN, "/reload")
        denied = server.private(ALICE, "/reload")
        await server.wait_for(lambda: replies_to(server, ok) and replies_to(server, denied))
    version = core.content.version
    assert replies_to(server, ok) == [f"Content unchanged (version {version}, 27 passages)."]  # an English user
    assert replies_to(server, denied) == [phrases.message("admin_only", "en")]
    assert rows(store, "SELECT channel, chat_id, user_id, detail FROM events WHERE kind='admin_denied'") == [
        ("telegram", str(ALICE), str(ALICE), "/reload")]


async def test_429_mid_stream_waits_and_still_delivers(server: FakeTelegram, backend: FakeBackend,
                                                       real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = copying("刘庆峰")
    backend.delay = 0.05
    server.fail_next("editMessageText", kind="retry_after", retry_after=1, skip=1)
    async with running(server, core):
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: answered(server, mid))
    edits = server.calls_of("editMessageText")
    assert [e.status for e in edits[:3]] == [200, 429, 200]
    assert edits[2].at - edits[1].at >= 0.95, "retried before retry_after had passed"
    assert server.bot_texts(ALICE) == [f"{EXTRACTED}\n\n[1] {SECTION}"]


async def test_over_long_answer_is_split(server: FakeTelegram, backend: FakeBackend, tmp_path: Path) -> None:
    article = "# 刘庆峰的建议\n\n" + "\n\n".join(
        f"## 第{i}条建议\n\n刘庆峰建议的第{i}条是加快推进认知智能大模型建设。"
        + f"这一条建议涉及教育、医疗、办公和人机交互领域的第{i}批示范应用，" * 8 + "。" for i in range(1, 25))
    # A long multi-part answer is a free draft's (an extracted answer is one short span and its sentence).
    async with engine_over(tmp_path, backend, article, extractive=False) as (core, store):
        passages = core.content.passages
        backend.answer = "\n\n".join(f"{p.text}[{p.order + 1}]" for p in passages)
        backend.delay = 0.0
        async with running(server, core):
            mid = server.private(ALICE, "刘庆峰建议了什么？")
            await server.wait_for(lambda: any("[24] 第24条建议" in t for t in server.bot_texts(ALICE)))
        reply_text = rows(store, "SELECT answer FROM turns")[0][0]
    shown = server.bot_texts(ALICE)
    assert len(reply_text) > 4096 and len(shown) >= 2
    assert all(utf16_len(t) <= 4096 for t in shown)
    assert shown[0] == replies_to(server, mid)[0], "the first part goes into the placeholder"
    assert all(t.endswith(("]", "。")) for t in shown[:-1]), "split inside a sentence"
    assert "\n\n".join(shown).startswith(reply_text) and shown[-1].endswith("[24] 第24条建议")
    no_api_errors(server)


async def test_html_special_characters_in_question_and_content(server: FakeTelegram, backend: FakeBackend,
                                                               tmp_path: Path) -> None:
    passage = "公司的研发投入 R&D 占比 > 20%，标记为 <核心> 项目。公司的董事长是张三先生。"
    article = f"# 测试 <R&D> 文章\n\n## 研发 & 投入\n\n{passage}\n"
    async with engine_over(tmp_path, backend, article) as (core, store), running(server, core):
        backend.answer = copying("R&D 占比 > 20%")
        mid = server.private(ALICE, "研发投入 <R&D> 占比多少？")
        await server.wait_for(lambda: answered(server, mid))
        sources = server.private(ALICE, "/sources")
        await server.wait_for(lambda: replies_to(server, sources))
        question = rows(store, "SELECT question FROM turns")[0][0]
    assert question == "研发投入 <R&D> 占比多少？"
    quoted = "原文[1]：「公司的研发投入 R&D 占比 > 20%，标记为 <核心> 项目。」"
    assert replies_to(server, mid) == [f"R&D 占比 > 20%[1]\n{quoted}\n\n[1] 研发 & 投入"]
    assert replies_to(server, sources) == [f"[1] 研发 & 投入\n{passage}"]
    text_calls = server.calls_of("sendMessage") + server.calls_of("editMessageText")
    assert all(c.params.get("parse_mode") == "HTML" for c in text_calls)
    sent = server.calls_of("editMessageText")[-1].params["text"]
    assert sent.startswith("R&amp;D 占比 &gt; 20%[1]") and "R&amp;D 占比 &gt; 20%，标记为 &lt;核心&gt;" in sent
    no_api_errors(server)


async def test_unsupported_answer_is_never_shown_only_the_decline(server: FakeTelegram, backend: FakeBackend,
                                                       real_draft: tuple[Core, LogStore]) -> None:
    core, store = real_draft  # a retraction is the free draft's: the invented draft checked and withdrawn
    backend.answer = "科大讯飞董事长刘庆峰毕业于清华大学，1999年创办公司。[2]"
    async with running(server, core):
        mid = server.private(ALICE, "科大讯飞董事长刘庆峰毕业于哪所大学？")
        await server.wait_for(lambda: rows(store, "SELECT retracted FROM turns WHERE status='answered'")
                              and server.calls_of("editMessageText")[-1].status == 200
                              and "1999" not in replies_to(server, mid)[0])
    shown = [e.params["text"] for e in server.calls_of("editMessageText")]
    assert not any("1999" in t or "清华" in t for t in shown), "an unchecked draft was shown"
    assert replies_to(server, mid) == ["文章中没有提到这方面的信息，所以我无法回答这个问题。"]
    assert rows(store, "SELECT retracted, refused FROM turns") == [(1, 1)]


async def test_a_failed_first_draft_is_never_shown_and_the_recheck_is(
        server: FakeTelegram, backend: FakeBackend, real_draft: tuple[Core, LogStore]) -> None:
    core, store = real_draft  # the recheck with quoted passages is the free draft's
    n = marker(core, "科大讯飞董事长刘庆峰")

    def script(messages: list[dict[str, str]]) -> str:
        quoted = "可能相关的文章段落" in messages[-1]["content"]  # the engine's second attempt
        return f"科大讯飞董事长是刘庆峰。[{n}]" if quoted else "科大讯飞董事长1999年毕业于清华大学。[2]"

    backend.answer = script
    backend.delay = 0.02  # each draft spans several edit intervals
    async with running(server, core):
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: answered(server, mid))
    shown = [c.params["text"] for c in server.calls_of("editMessageText")]
    assert not any("1999" in t or "清华" in t for t in shown), "the failed draft was shown"
    assert phrases.message("progress_rechecking", "zh") in shown
    assert replies_to(server, mid) == [f"科大讯飞董事长是刘庆峰。[1]{QUOTE}\n\n[1] {SECTION}"]
    assert len(backend.calls) == 2


async def test_queue_note_when_others_are_ahead(server: FakeTelegram, backend: FakeBackend,
                                                real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    backend.delay = 0.03
    async with running(server, core):
        first = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: backend.calls)
        second = server.private(BOB, "董事长是谁？")
        await server.wait_for(lambda: answered(server, first) and answered(server, second))
    edits = server.calls_of("editMessageText")
    bob_edits = [c.params["text"] for c in edits if c.params["chat_id"] == BOB]
    assert bob_edits[0] == phrases.message("queued", "zh", n=1)
    alice_edits = [c.params["text"] for c in edits if c.params["chat_id"] == ALICE]
    assert phrases.message("queued", "zh", n=1) not in alice_edits


async def test_backend_failure_shows_apology(server: FakeTelegram, backend: FakeBackend,
                                             real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = "科大讯飞董事长是刘庆峰。[2]"
    backend.fail_after = 3
    async with running(server, core):
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: replies_to(server, mid) == [BotError.user_message])
    assert rows(store, "SELECT status FROM turns") == [("error",)]


async def test_webhook_checks_secret(server: FakeTelegram, backend: FakeBackend,
                                     real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    async with running(server, core, mode="webhook", webhook_listen=f"127.0.0.1:{port}",
                       webhook_url=url, webhook_secret="s3cret-token"):
        assert server.webhook["url"] == url and server.webhook["secret_token"] == "s3cret-token"
        forged = server.private(BOB, "伪造的问题：董事长是谁？")
        assert await server.deliver_webhook(server.updates[-1], secret="wrong") == 403
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.post(url, json=server.updates[-1])).status_code == 403
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        assert await server.deliver_webhook(server.updates[-1]) == 200
        await server.wait_for(lambda: answered(server, mid))
    assert replies_to(server, forged) == []
    assert rows(store, "SELECT question FROM turns") == [("科大讯飞董事长是谁？",)]
    assert not server.calls_of("getUpdates")


async def test_a_webhook_update_is_acknowledged_only_once_its_question_is_logged(
        server: FakeTelegram, backend: FakeBackend, real: tuple[Core, LogStore],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Telegram never sends an acknowledged update again: a process killed after its 200 must have logged
    the question already, for another instance sharing the log to answer. The log is made slow here."""
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    slow_receive = store.receive

    async def receive(*args: Any, **kw: Any) -> Any:
        await asyncio.sleep(0.3)
        return await slow_receive(*args, **kw)

    monkeypatch.setattr(store, "receive", receive)
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    async with running(server, core, mode="webhook", webhook_listen=f"127.0.0.1:{port}", webhook_url=url):
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        assert await server.deliver_webhook(server.updates[-1]) == 200
        assert rows(store, "SELECT question FROM turns") == [("科大讯飞董事长是谁？",)]  # before the 200
        await server.wait_for(lambda: answered(server, mid))
        # Telegram re-sending an update it is still waiting on: both acknowledged, the question answered once.
        again = server.private(ALICE, "刘庆峰是谁？")
        assert await asyncio.gather(*(server.deliver_webhook(server.updates[-1]) for _ in range(2))) == [200, 200]
        await server.wait_for(lambda: answered(server, again))
        await asyncio.sleep(0.3)
    assert rows(store, "SELECT count(*) FROM turns") == [(2,)]
    assert len(replies_to(server, mid)) == 1 and len(replies_to(server, again)) == 1


async def test_rate_limit_too_long_and_allowlist(server: FakeTelegram, backend: FakeBackend,
                                                 real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    backend.delay = 0.0
    async with running(server, core, rate_limit_per_minute=2, max_chars=20,
                       allow_users=[str(ALICE)]):
        asked = [server.private(ALICE, q) for q in ("董事长是谁？", "科大讯飞董事长是谁？", "谁是董事长？")]
        too_long = server.private(ALICE, "长" * 21)
        stranger = server.private(BOB, "董事长是谁？")
        await server.wait_for(lambda: all(replies_to(server, m) for m in (*asked, too_long, stranger)))
        await server.wait_for(lambda: sum(answered(server, m) for m in asked) == 2)
    limited = [m for m in asked if not answered(server, m)]
    assert len(limited) == 1 and replies_to(server, limited[0])[0].startswith("提问太频繁了，请 ")
    assert replies_to(server, too_long) == [phrases.message("too_long", "zh", limit=20)]
    assert replies_to(server, stranger) == [phrases.message("not_allowed", "zh")]
    assert len(rows(store, "SELECT id FROM turns")) == 2


async def test_user_commands(server: FakeTelegram, backend: FakeBackend,
                             real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    async with running(server, core):
        start = server.private(ALICE, "/start")
        admin_help = server.private(ADMIN, "/help")
        user_help = server.private(ALICE, "/help", language_code="zh-hans")
        unknown = server.private(ALICE, "/frobnicate now")
        firsts = (start, admin_help, user_help, unknown)
        await server.wait_for(lambda: all(replies_to(server, m) for m in firsts))
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: answered(server, mid))
        sources = server.private(ALICE, "/sources")
        await server.wait_for(lambda: replies_to(server, sources))
        reset = server.private(ALICE, "/reset")
        stats = server.private(ADMIN, "/stats 48")
        await server.wait_for(lambda: replies_to(server, reset) and replies_to(server, stats))
    greeting, user_help_text = replies_to(server, start)[0], replies_to(server, user_help)[0]
    assert greeting.startswith("Hello!") and core.services.about("en") in greeting
    assert "/reload" in replies_to(server, admin_help)[0]
    assert "/reload" not in user_help_text and core.services.about("zh") in user_help_text
    assert replies_to(server, unknown) == [phrases.message("unknown_command", "en", command="/frobnicate")]
    passage = next(p for p in core.content.passages if "科大讯飞董事长刘庆峰" in p.text)
    assert replies_to(server, sources) == [f"[1] {SECTION}\n{passage.text}"]
    assert replies_to(server, reset) == [phrases.message("reset", "en")]
    assert rows(store, "SELECT conversation FROM resets") == [(f"telegram:{ALICE}",)]
    assert replies_to(server, stats)[0].startswith("Last 48 h: 1 turns from 1 users")


async def test_resume_answers_a_logged_unanswered_turn(server: FakeTelegram, backend: FakeBackend,
                                                       real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = copying("刘庆峰")
    server.private_chat(ALICE)
    await store.start_turn(Incoming("telegram", str(ALICE), str(ALICE), "科大讯飞董事长是谁？", "77"))
    (turn,) = await core.pending(["telegram"])
    async with running(server, core) as channel:
        await channel.resume(turn)
    assert server.bot_texts(ALICE) == [f"{EXTRACTED}\n\n[1] {SECTION}"]
    assert server.calls_of("sendMessage")[0].params["reply_parameters"]["message_id"] == 77
    logged = rows(store, "SELECT id, status, answer, delivery FROM turns")
    assert logged == [(turn.turn_id, "answered", EXTRACTED, "delivered")]
    assert len(backend.calls) == 1


@pytest.mark.parametrize(("kind", "error"), [("server", "NetworkError"), ("hang", "TimedOut")],
                         ids=["502s", "timeouts"])
async def test_an_answer_is_delivered_only_once_telegram_confirms_it(server: FakeTelegram, backend: FakeBackend,
                                                                    real: tuple[Core, LogStore], kind: str,
                                                                    error: str) -> None:
    core, store = real
    backend.answer = copying("刘庆峰")
    # Telegram down after the placeholder: errors, or no reply within telegram.api_timeout_s (0.3 s here).
    server.fail_next("editMessageText", count=50, kind=kind, retry_after=1.0)
    async with running(server, core, api_timeout_s=0.3) as channel:
        channel.api.backoff_s = 0.001
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: rows(store, "SELECT 1 FROM events WHERE kind='undelivered'"))
    assert not answered(server, mid, "刘庆峰")
    [(tid, status, delivery, logged)] = rows(store, "SELECT id, status, delivery, delivery_error FROM turns")
    assert (status, delivery) == ("answered", "waiting") and logged.startswith(error), logged
    server.clear_faults()
    calls = len(backend.calls)
    (turn,) = await core.pending(["telegram"])  # the restart: the logged answer, not a new one
    async with running(server, core) as channel:
        await channel.resume(turn)
    assert turn.turn_id == tid and len(backend.calls) == calls
    # The answer goes into the message that showed it in progress (logged with the turn), not another one.
    assert server.bot_texts(ALICE) == [f"{EXTRACTED}\n\n[1] {SECTION}"]
    assert rows(store, "SELECT delivery FROM turns") == [("delivered",)]


async def test_a_turn_taken_over_is_answered_in_its_placeholder_or_a_new_one_if_that_is_gone(
        server: FakeTelegram, backend: FakeBackend, real: tuple[Core, LogStore]) -> None:
    """An instance that died left its placeholder ("thinking") in the chat; the one taking the turn over
    edits that message into the answer. A placeholder deleted meanwhile gets a new message instead."""
    core, store = real
    backend.answer = copying("刘庆峰")
    server.private_chat(ALICE)
    async with running(server, core) as channel:
        first = await channel.api.send(ALICE, phrases.message("thinking", "zh"))
        tid = await store.start_turn(Incoming("telegram", str(ALICE), str(ALICE), "科大讯飞董事长是谁？", "77"))
        await store.placed(tid, str(first.message_id))
        gone = await store.start_turn(Incoming("telegram", str(ALICE), str(ALICE), "刘庆峰是谁？", "78"))
        await store.placed(gone, "999999")  # no such message any more
        for turn in await core.pending(["telegram"]):
            await channel.resume(turn)
    texts = server.bot_texts(ALICE)
    assert len(texts) == 2 and texts[0] == f"{EXTRACTED}\n\n[1] {SECTION}"  # the first edited, one new
    assert rows(store, "SELECT id, placeholder, delivery FROM turns ORDER BY id") == [
        (tid, str(first.message_id), "delivered"), (gone, str(first.message_id + 1), "delivered")]


async def test_a_user_who_blocked_the_bot_ends_the_delivery(server: FakeTelegram, backend: FakeBackend,
                                                           real: tuple[Core, LogStore]) -> None:
    core, store = real
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    server.fail_next("editMessageText", count=50, kind="blocked")
    server.fail_next("sendMessage", count=50, kind="blocked", skip=1)  # the placeholder went out before
    async with running(server, core):
        mid = server.private(ALICE, "科大讯飞董事长是谁？")
        await server.wait_for(lambda: rows(store, "SELECT 1 FROM turns WHERE delivery='failed'"))
        await asyncio.sleep(0.05)
    assert not answered(server, mid, "刘庆峰")
    assert rows(store, "SELECT status, delivery, delivery_error FROM turns") == [
        ("answered", "failed", "Forbidden: bot was blocked by the user")]
    assert rows(store, "SELECT kind FROM events") == [("undeliverable",)]
    # No apology is tried at a user who blocked the bot, and no restart sends it again.
    assert [c.status for c in server.calls_of("sendMessage")] == [200]
    assert await core.pending(["telegram"]) == []


# ---- channel-side edge cases (scripted engine) ---------------------------------------------------


class ScriptedEngine:
    """Stands in for the engine behind a real core: streams `pieces` (a delay before each), then a cited Reply."""

    model_name = "scripted"

    def __init__(self, pieces: list[str], *, delay: float = 0.0, fail: bool = False, cite: bool = True) -> None:
        self.pieces, self.delay, self.fail = pieces, delay, fail
        self.citations = [Citation("p", "第一节", "原文", 1)] if cite else []
        self.asked: list[Incoming] = []

    async def prepare(self, content: object, progress: object = None) -> None:
        return None

    async def run(self, msg: Incoming, content: object, history: object) -> AsyncIterator[Event]:
        self.asked.append(msg)
        for piece in self.pieces:
            await asyncio.sleep(self.delay)
            yield Delta(piece)
        if self.fail:
            raise RuntimeError("scripted failure")
        await asyncio.sleep(self.delay)
        yield Reply("".join(self.pieces), refused=False, citations=self.citations)

    def failed(self, content: object, text: str, error: str, started: float) -> Reply:
        return Reply(text, refused=False, error=error)

    async def retain(self, content: object) -> None:
        pass

    def cancel(self, conversation: str) -> int:
        return 0


Scripted = Callable[[ScriptedEngine], Awaitable[Core]]


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[Scripted]:
    """scripted(engine) -> a real core over the article whose engine is `engine`."""
    stores: list[LogStore] = []

    async def make(engine: ScriptedEngine) -> Core:
        cfg = make_config(tmp_path / f"s{len(stores)}")
        store = await LogStore.open(cfg.database_path)
        stores.append(store)
        core = wire(cfg, Knowledge(cfg.content_path), FakeBackend(), store, engine=engine)
        await core.start()
        return core

    yield make
    for st in stores:
        await st.close()


async def test_edits_are_throttled_and_never_unchanged(server: FakeTelegram, scripted: Scripted) -> None:
    engine = ScriptedEngine(list("刘庆峰是科大讯飞董事长。") * 3, delay=0.01)
    core = await scripted(engine)
    async with running(server, core, edit_interval_s=0.15):
        mid = server.private(ALICE, "谁是董事长？")
        await server.wait_for(lambda: answered(server, mid))
    edits = server.calls_of("editMessageText")
    # 36 pieces over ~0.45 s: at most one edit per 0.15 s while streaming (coalesced), plus the final one.
    assert 2 <= len(edits) <= 12, len(edits)
    gaps = [b.at - a.at for a, b in zip(edits[:-2], edits[1:-1], strict=True)]
    assert all(g >= 0.14 for g in gaps), gaps
    no_api_errors(server)  # the fake answers 400 "message is not modified" to an edit without a change


async def test_flood_control_on_final_edit_never_drops_answer(server: FakeTelegram, scripted: Scripted) -> None:
    engine = ScriptedEngine(["刘庆峰。[1]"])
    core = await scripted(engine)
    async with running(server, core):
        await server.wait_for(lambda: server.calls_of("getUpdates"))
        server.fail_next("editMessageText", count=2, kind="retry_after", retry_after=0.3)
        mid = server.private(ALICE, "谁？")
        await server.wait_for(lambda: answered(server, mid))
    edits = server.calls_of("editMessageText")
    assert [e.status for e in edits][:2] == [429, 429] and edits[-1].status == 200
    assert edits[-1].at - edits[0].at >= 0.55, "did not wait out retry_after"
    assert server.bot_texts(ALICE) == ["刘庆峰。[1]\n\n[1] 第一节"]


async def test_network_errors_are_retried_with_backoff(server: FakeTelegram, scripted: Scripted) -> None:
    engine = ScriptedEngine(["刘庆峰。[1]"])
    core = await scripted(engine)
    server.fail_next("sendMessage", count=2, kind="server")
    async with running(server, core) as channel:
        channel.api.backoff_s = 0.05
        mid = server.private(ALICE, "谁？")
        await server.wait_for(lambda: answered(server, mid))
    sends = server.calls_of("sendMessage")
    assert [c.status for c in sends] == [502, 502, 200]
    assert sends[1].at - sends[0].at >= 0.045 and sends[2].at - sends[1].at >= 0.095, "backoff should double"


async def test_html_parse_error_falls_back_to_plain_text(server: FakeTelegram, scripted: Scripted) -> None:
    engine = ScriptedEngine(["a < b", " & c. [1]"])
    core = await scripted(engine)
    async with running(server, core, edit_interval_s=5):
        await server.wait_for(lambda: server.calls_of("getUpdates"))
        server.fail_next("editMessageText", kind="parse")
        mid = server.private(ALICE, "x?")
        await server.wait_for(lambda: answered(server, mid))
    edits = server.calls_of("editMessageText")
    assert edits[0].status == 400 and edits[0].params["parse_mode"] == "HTML"
    assert edits[1].status == 200 and "parse_mode" not in edits[1].params
    assert edits[1].params["text"] == "a < b"
    assert server.bot_texts(ALICE) == ["a < b & c. [1]\n\n[1] 第一节"]


async def test_engine_failure_apologizes_in_placeholder(server: FakeTelegram, scripted: Scripted,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine(["刘庆峰"], fail=True)
    core = await scripted(engine)
    async with running(server, core):
        mid = server.private(ALICE, "谁？", language_code="zh")
        await server.wait_for(lambda: replies_to(server, mid) == [BotError.user_message])
    assert len(server.bot_texts(ALICE)) == 1
    assert any(r.exc_info and "scripted failure" in str(r.exc_info[1]) for r in caplog.records)


async def test_same_message_delivered_twice_is_answered_once(server: FakeTelegram, scripted: Scripted) -> None:
    engine = ScriptedEngine(["刘庆峰。"])
    core = await scripted(engine)
    async with running(server, core):
        mid = server.private(ALICE, "董事长？")
        server.push_update({"message": server.updates[-1]["message"]})
        await server.wait_for(lambda: answered(server, mid))
    assert len(engine.asked) == 1 and len(server.calls_of("sendMessage")) == 1


async def test_streamed_draft_longer_than_a_message_is_cut(server: FakeTelegram, scripted: Scripted) -> None:
    paragraph = "刘庆峰表示，类ChatGPT研发是一个持续进化的系统工程。" * 40
    engine = ScriptedEngine([paragraph + "\n\n"] * 6, delay=0.05)
    core = await scripted(engine)
    async with running(server, core):
        server.private(ALICE, "刘庆峰说了什么？")
        await server.wait_for(lambda: "".join(server.bot_texts(ALICE)).endswith("[1] 第一节"))
    drafts = [c.params["text"] for c in server.calls_of("editMessageText")[:-1]]
    assert any(d.endswith(" …") for d in drafts), "a draft past 4096 characters should be cut"
    shown = server.bot_texts(ALICE)
    assert len(shown) == 2 and all(utf16_len(t) <= 4096 for t in shown)
    no_api_errors(server)


async def test_no_final_edit_when_the_draft_is_already_the_answer(server: FakeTelegram, scripted: Scripted) -> None:
    engine = ScriptedEngine(["文章", "没有提到。"], delay=0.05, cite=False)
    core = await scripted(engine)
    async with running(server, core):
        mid = server.private(ALICE, "谁？")
        await server.wait_for(lambda: replies_to(server, mid) == ["文章没有提到。"])
    assert [c.params["text"] for c in server.calls_of("editMessageText")] == ["文章", "文章没有提到。"]
    no_api_errors(server)
