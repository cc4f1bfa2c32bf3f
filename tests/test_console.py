"""bot/channels/console.py: the REPL with an injected reader and a StringIO terminal."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.answering.prompts import Prompts
from bot.channels.console import Console
from bot.content.knowledge import load
from bot.core.runtime import Core
from bot.log.store import LogStore
from bot.text.phrases import message
from tests.fakes.backend import FakeBackend
from tests.helpers import bilingual, copying, make_config, make_core

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = load(ROOT / "content")
LIU = next(p for p in ARTICLE.passages if "科大讯飞董事长刘庆峰" in p.text)
PICK = copying("刘庆峰")  # a fact question's pick prompt: the candidate that holds 刘庆峰, and 刘庆峰 copied


def reader(lines: list[str]) -> tuple[Callable[[str], str], list[str]]:
    """A `read` that returns the lines in turn and then raises EOFError; also records the prompts."""
    pending = list(lines)
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        if not pending:
            raise EOFError
        return pending.pop(0)

    return read, prompts


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Core, LogStore, FakeBackend]]:
    backend = FakeBackend(PICK)
    engine, store = await make_core(tmp_path, backend)
    yield engine, store, backend
    await store.close()


async def run(engine: Core, lines: list[str]) -> tuple[int, str, list[str]]:
    read, prompts = reader(lines)
    out = io.StringIO()
    code = await Console(engine, out=out, read=read, user="tester").run()
    return code, out.getvalue(), prompts


async def test_a_question_streams_and_prints_its_citations(setup) -> None:
    engine, store, backend = setup
    code, out, _ = await run(engine, ["科大讯飞董事长是谁？"])
    assert code == 0
    assert out.splitlines()[0].startswith("内容：《对标ChatGPT的自主产品能否跟上》")
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("bot> "))
    assert lines[i].endswith(" 刘庆峰[1]")  # the answer copied out of the sentence, after the progress note
    assert lines[i + 1].startswith("原文[1]：「") and "科大讯飞董事长刘庆峰" in lines[i + 1]
    assert f"\n[1] {LIU.section}" in out
    assert LIU.order + 1 != 1 and f"[{LIU.order + 1}]" not in out  # the model's number is not shown
    assert len(backend.calls) == 1
    con = sqlite3.connect(store.path)
    try:
        assert con.execute("SELECT channel, user_id, question, status FROM turns").fetchall() == [
            ("cli", "tester", "科大讯飞董事长是谁？", "answered")]
    finally:
        con.close()


async def test_sources_prints_the_cited_passages_in_full(setup) -> None:
    engine, _, _ = setup
    _, before, _ = await run(engine, ["/sources"])
    assert message("no_sources", "zh") in before
    _, out, _ = await run(engine, ["科大讯飞董事长是谁？", "/sources"])
    after_sources = out.split("[1] " + LIU.section, 1)[1]
    assert LIU.text in out
    assert "在别人的院子里建大楼" in after_sources


async def test_reset_forgets_the_conversation(setup) -> None:
    engine, _, backend = setup
    _, out, _ = await run(engine, ["科大讯飞董事长是谁？", "科大讯飞的董事长叫什么？", "/reset",
                                   "谁是科大讯飞董事长？"])
    assert message("reset", "zh") in out
    # A fact question's pick prompt names the conversation's previous question, until /reset.
    assert len(backend.calls) == 3
    assert "上一个问题：科大讯飞董事长是谁？" in backend.calls[1][-1]["content"]
    assert "上一个问题" not in backend.calls[0][-1]["content"]
    assert "上一个问题" not in backend.calls[2][-1]["content"]


async def test_help_lists_the_commands(setup) -> None:
    engine, _, backend = setup
    _, out, _ = await run(engine, ["/help"])
    for cmd in ("/help", "/reset", "/sources", "/reload", "/stats", "/quit"):
        assert cmd in out
    assert "对标ChatGPT的自主产品能否跟上" in out
    assert backend.calls == []


async def test_help_follows_the_language_of_the_last_question(setup) -> None:
    engine, _, _ = setup
    _, out, _ = await run(engine, ["/help", "What is the capital of France?", "/help"])
    first, last = out.split("/help  ")[1], out.split("/help  ")[-1]
    assert "显示本帮助" in first and "show this help" in last


async def test_quit_stops_reading(setup) -> None:
    engine, _, backend = setup
    code, out, prompts = await run(engine, ["/quit", "科大讯飞董事长是谁？"])
    assert code == 0
    assert len(prompts) == 1
    assert backend.calls == []
    assert "刘庆峰" not in out


async def test_end_of_input_ends_the_session(setup) -> None:
    engine, _, _ = setup
    code, _, prompts = await run(engine, ["", "   "])
    assert code == 0
    assert len(prompts) == 3  # two blank lines skipped, then EOF


async def test_stats_reload_and_unknown_commands(setup) -> None:
    engine, _, _ = setup
    _, out, _ = await run(engine, ["科大讯飞董事长是谁？", "/stats", "/reload", "/frobnicate"])
    assert "1 位用户共 1 轮" in out
    assert "内容没有变化" in out
    assert message("unknown_command", "zh", command="/frobnicate") in out


async def test_an_unsupported_draft_is_never_printed_only_the_decline(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.grounding.extractive = False  # a draft checked and withdrawn is the free-draft path's
    engine, store = await make_core(tmp_path, FakeBackend("江浩然毕业于杭州的浙江大学。"), cfg=cfg)
    try:
        _, out, _ = await run(engine, ["江浩然毕业于哪所大学？"])
    finally:
        await store.close()
    assert "杭州" not in out
    assert out.rstrip().endswith(Prompts().text("decline_zh"))


async def test_a_declined_question_prints_the_decline(setup) -> None:
    engine, _, backend = setup
    _, out, _ = await run(engine, ["量子计算机的价格是多少？"])
    assert "bot> " + Prompts().text("decline_zh") in out
    assert backend.calls == []


async def test_too_long_input_is_refused_before_the_engine(setup) -> None:
    engine, store, backend = setup
    _, out, _ = await run(engine, ["科" * 900])
    assert "问题太长了" in out
    assert backend.calls == []
    con = sqlite3.connect(store.path)
    try:
        assert con.execute("SELECT count(*) FROM turns").fetchone()[0] == 0
    finally:
        con.close()


async def test_an_english_question_shows_each_hidden_step_then_the_checked_answer(tmp_path: Path) -> None:
    translate = bilingual("Who", "科大讯飞的董事长是谁？", "刘庆峰", "The chairman of iFlytek is Liu Qingfeng.")

    def script(messages: list[dict[str, str]]) -> str:
        return PICK(messages) if messages[-1]["content"].startswith("句子：") else translate(messages)

    engine, store = await make_core(tmp_path, FakeBackend(script))
    try:
        _, out, _ = await run(engine, ["Who is the chairman of iFlytek?"])
    finally:
        await store.close()
    steps = [message(f"progress_{s}", "en") for s in ("translating_question", "answering", "translating_answer")]
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("bot> "))
    line = lines[i]
    assert line.startswith("bot> " + " ".join(f"({s})" for s in steps))
    assert "Liu Qingfeng" in line and "[1]" in line and "刘庆峰" not in line
    assert lines[i + 1].startswith("原文[1]：「") and "刘庆峰" in lines[i + 1]  # the source's own words below


async def test_a_long_question_or_one_with_a_tilde_is_a_question_not_a_path(setup) -> None:
    engine, _, _ = setup
    long = "科大讯飞 " + "董事长" * 120 + " 是谁？"  # a "file name" over 255 bytes: the OS refuses to look it up
    code, out, _ = await run(engine, [long, "/add ~nosuchuser/报告.md", "科大讯飞 ~董事长 是谁？"])
    assert code == 0 and out.count("bot> ") == 2  # both questions answered; the bad /add said why
