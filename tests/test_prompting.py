"""bot/answering/prompting.py: the prefix (whole content or instructions only), the answer request, history trimming."""

from __future__ import annotations

import pytest

from bot.answering.prompting import PromptBuilder
from bot.answering.prompts import Prompts
from bot.config import Config
from bot.content.knowledge import ContentSet, load
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
    assert b.plan(content).mode == "prefix"
    (system,), = b.prefixes(content)
    assert "科大讯飞董事长刘庆峰" in system["content"]
    messages = b.answer(content, [], "科大讯飞董事长是谁？", [])
    assert messages[0] == system and len(messages) == 2
    liu = next(p for p in content.passages if "科大讯飞董事长刘庆峰" in p.text)
    asked = messages[-1]["content"]
    assert asked.startswith("科大讯飞董事长是谁？") and f"[{liu.order + 1}]" in asked


def test_content_past_the_limit_is_cut_into_groups_and_a_question_goes_to_its_group(content: ContentSet) -> None:
    b = builder(max_prefix_tokens=1500)
    plan = b.plan(content)
    assert plan.mode == "groups" and len(plan.groups) >= 2
    assert [p for g in plan.groups for p in g] == list(content.passages)  # every passage once, in order
    prefixes = b.prefixes(content)
    assert all(len(tokens_of(m[0]["content"])) <= 1500 for m in prefixes)
    messages = b.answer(content, [], "科大讯飞董事长是谁？", [])
    group = next(i for i, g in enumerate(plan.groups) if any("科大讯飞董事长刘庆峰" in p.text for p in g))
    assert messages[0] == prefixes[group][0]  # the routed group's prefix, which the backend keeps
    liu = next(p for p in content.passages if "科大讯飞董事长刘庆峰" in p.text)
    assert f"[{liu.order + 1}]" in messages[-1]["content"]  # global passage numbers: citations stay true


def test_evidence_spread_over_groups_quotes_the_passages_instead(content: ContentSet) -> None:
    b = builder(max_prefix_tokens=1500)
    b.cfg.content.route_min_share = 1.0  # any hit outside the best group counts as spread
    question = "刘庆峰 周鸿祎 江浩然 赵晓光 建议"
    assert len({next(i for i, g in enumerate(b.plan(content).groups) if p in g)
                for p, _ in content.retrieve(question, 3)}) > 1
    messages = b.answer(content, [], question, [])
    assert "每个问题附带检索到的段落" in messages[0]["content"]
    assert all(p.text in messages[-1]["content"] for p, _ in content.retrieve(question, 3))


def test_content_past_the_limit_without_groups_is_retrieved_per_question(content: ContentSet) -> None:
    b = builder(max_prefix_tokens=200)
    b.cfg.content.groups = False
    (system,), = b.prefixes(content)
    assert b.plan(content).mode == "retrieval" and "科大讯飞董事长刘庆峰" not in system["content"]
    question = b.answer(content, [], "科大讯飞董事长是谁？", [])[-1]["content"]
    assert "科大讯飞董事长刘庆峰" in question  # the retrieved passages are quoted with the question


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
