"""bot/prompting.py: the prefix (whole content or instructions only), the answer request, history trimming."""

from __future__ import annotations

import pytest

from bot.config import Config
from bot.knowledge import ContentSet, load
from bot.prompting import PromptBuilder
from bot.prompts import Prompts
from bot.types import HistoryTurn
from tests.fakes.backend import tokens_of
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def content() -> ContentSet:
    return load(ROOT / "content")


def builder(max_prefix_tokens: int = 5000, history_tokens: int = 600) -> PromptBuilder:
    cfg = Config()
    cfg.content.max_prefix_tokens = max_prefix_tokens
    cfg.conversation.history_tokens = history_tokens
    return PromptBuilder(cfg, Prompts(), lambda text: len(tokens_of(text)))


def test_content_that_fits_is_the_prefix_and_questions_name_the_best_paragraphs(content: ContentSet) -> None:
    b = builder()
    (system,), fits = b.prefix(content)
    assert fits and "科大讯飞董事长刘庆峰" in system["content"]
    messages = b.answer(content, [], "科大讯飞董事长是谁？", [])
    assert messages[0] == system and len(messages) == 2
    liu = next(p for p in content.passages if "科大讯飞董事长刘庆峰" in p.text)
    asked = messages[-1]["content"]
    assert asked.startswith("科大讯飞董事长是谁？") and f"[{liu.order + 1}]" in asked


def test_content_past_the_limit_is_retrieved_per_question(content: ContentSet) -> None:
    b = builder(max_prefix_tokens=200)
    (system,), fits = b.prefix(content)
    assert not fits and "科大讯飞董事长刘庆峰" not in system["content"]
    b.prefix_mode = fits
    question = b.answer(content, [], "科大讯飞董事长是谁？", [])[-1]["content"]
    assert "科大讯飞董事长刘庆峰" in question  # the retrieved passages are quoted with the question


def test_a_what_kind_question_with_quoted_passages_spells_out_the_noun(content: ContentSet) -> None:
    b = builder()
    quoted = [p for p, _ in content.retrieve("刘庆峰 代表", 2)]
    text = b.answer(content, [], "刘庆峰是什么代表？", quoted)[-1]["content"]
    assert all(p.text in text for p in quoted) and "代表" in text.split("刘庆峰是什么代表？", 1)[1]


def test_history_goes_before_the_question_without_markers_and_is_trimmed_to_the_budget(
        content: ContentSet) -> None:
    turns = [HistoryTurn("问题一", "回答一[3]\n原文[1]：「原句。」", False),
             HistoryTurn("问题二" * 40, "回答二[4]", False), HistoryTurn("问题三", "回答三[5]", False)]
    kept = builder(history_tokens=20).trim(turns)
    assert [t.question for t in kept] == ["问题三"]  # the long one ends the walk back
    messages = builder().answer(content, builder().trim(turns), "他说了什么？", [])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user",
                                             "assistant", "user"]
    assert messages[2]["content"] == "回答一"  # the quoted source sentence is not history
