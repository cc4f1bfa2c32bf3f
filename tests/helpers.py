"""Builders shared by tests: a core over the shipped article with any backend, and a store in tmp."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from bot.config import Config
from bot.content.knowledge import Knowledge
from bot.core.runtime import Core, wire
from bot.log.store import LogStore
from bot.types import Event, Incoming

ROOT = Path(__file__).resolve().parent.parent


def make_config(tmp_path: Path, content_dir: Path | None = None) -> Config:
    """Defaults, with data in tmp_path and the shipped content (or `content_dir`)."""
    cfg = Config()
    cfg.base_dir = str(ROOT)
    cfg.data_dir = str(tmp_path / "data")
    cfg.database = str(tmp_path / "data" / "bot.sqlite3")
    cfg.content.dir = str(content_dir or ROOT / "content")
    # The fake backend counts a CJK character as a token (Qwen's tokenizer: about 0.65), so the article
    # takes 4.8k fake tokens; with this limit it is one prefix for every backend, as with the real model.
    cfg.content.max_prefix_tokens = 6000
    return cfg


async def make_core(tmp_path: Path, backend: object, content_dir: Path | None = None,
                    cfg: Config | None = None) -> tuple[Core, LogStore]:
    """A started Core over the article (or content_dir) with `backend`; the caller closes the store."""
    cfg = cfg or make_config(tmp_path, content_dir)
    store = await LogStore.open(cfg.log_database)
    store.leases.lease_s = cfg.log.lease_s
    core = wire(cfg, Knowledge(cfg.content_path), backend, store)  # type: ignore[arg-type]
    await core.start()
    return core, store


def ask_msg(text: str, conversation: str = "") -> Incoming:
    """A question typed in the terminal (optionally in a given conversation)."""
    return Incoming("cli", "chat", "user", text, conversation=conversation)


async def stream(core: Core, msg: Incoming) -> AsyncIterator[Event]:
    """The events of one question, as a channel sees them."""
    turn = await core.receive(msg)
    assert turn is not None and turn.is_question
    async for event in turn.events():
        yield event


def turns(store: LogStore) -> list[sqlite3.Row]:
    """Every logged turn, oldest first."""
    con = sqlite3.connect(store.path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM turns ORDER BY id").fetchall()
    finally:
        con.close()


def bilingual(english_word: str, question_zh: str, answer_zh: str, answer_en: str):
    """A script for an English question, whichever way the engine uses the model: it may ask for the
    question in Chinese (the message holds the English question; `english_word` must be a word the
    engine's name mapping leaves alone, like "Who"), for an answer, and for the checked Chinese answer
    in English (the message holds that answer)."""

    def script(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        if grounding_strip(answer_zh) in last:
            return answer_en
        if english_word in last and question_zh not in last:
            return question_zh
        return answer_zh

    return script


def grounding_strip(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text)


def copying(*answers: str, free: str = ""):
    """A script for the extractive path: a pick prompt is answered with the number of the candidate that
    holds the first of `answers` it finds and that answer ("2：刘庆峰"), or "0" when none holds one; a judged
    candidate with "是：刘庆峰" or "否"; any other prompt (a free draft, a translation) gets `free`."""

    def script(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        if not last.startswith("句子："):
            return free
        lines = re.findall(r"^(\d)\. (.*)$", last, re.MULTILINE)
        if not lines:  # a judged candidate, alone: 是 and the answer it holds, or 否
            sentence = last.removeprefix("句子：").split("\n", 1)[0]
            return next((f"是：{a}" for a in answers if a in sentence), "否")
        for answer in answers:
            for n, text in lines:
                if answer in text:
                    return f"{n}：{answer}"
        return "0"

    return script
