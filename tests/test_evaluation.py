"""bot/measure/evaluation.py: span scoring the way reading-comprehension sets score, and the per-rule totals."""

from __future__ import annotations

from bot.measure.evaluation import Case, Result, is_correct, summarise
from bot.text.words import holds_span, longest_common_run


def test_a_span_counts_when_four_fifths_stand_unbroken_in_the_answer() -> None:
    assert holds_span("芙蓉洞全长2846米。[1]", "2846米")
    assert holds_span("它于1994年对游人开放", "1994年对游人开放。")  # punctuation ignored
    assert holds_span("台庆剧大太监", "台庆剧《大太监》")
    assert holds_span("OpenAI 开发了它", "openai")  # Latin letters case-insensitive
    assert holds_span("位于重庆武隆县江口镇", "重庆武隆县江口镇的芙蓉江畔") is False  # 8 of 12 is under 80 %
    assert holds_span("重庆武隆县江口镇的芙蓉江", "重庆武隆县江口镇的芙蓉江畔")  # 12 of 13
    assert holds_span("距武隆县城20公里", "") is False
    assert longest_common_run("abcdef", "xxcdey") == 3


def test_facts_need_a_span_and_no_decline_out_of_scope_needs_a_decline() -> None:
    fact = Case("f", "fact", "q", ["刘庆峰"])
    assert is_correct(fact, "董事长是刘庆峰。", False) and not is_correct(fact, "董事长是刘庆峰。", True)
    assert is_correct(Case("o", "out_of_scope", "q"), "文章中没有提到", True)


def test_a_yes_no_fact_answered_by_the_other_word_is_wrong_whatever_its_quote_holds() -> None:
    quoted = "[1]\n原文[1]：「四加亭是一个村落。」"
    q = "四加亭是不是一个水乡小镇？"
    no, yes = (Case(i, "fact", q, ["一个村落"], polarity=p) for i, p in (("n", "no"), ("y", "yes")))
    assert not is_correct(no, "是" + quoted, False) and is_correct(yes, "是" + quoted, False)
    assert is_correct(no, "不是" + quoted, False) and is_correct(no, "四加亭是一个村落" + quoted, False)


def result(id: str, kind: str, refused: bool, correct: bool, reason: str = "", ms: int = 100) -> Result:
    return Result(id, kind, "q", "a", refused, correct, [], 10, ms, reason)


def test_summary_counts_invented_answers_wrong_answers_and_each_rule() -> None:
    s = summarise([
        result("f1", "fact", False, True, ms=100), result("f2", "fact", True, False, "topic: no passage", 200),
        result("f3", "fact", False, False, ms=300), result("o1", "out_of_scope", True, True, "topic: x", 400),
        result("o2", "out_of_scope", True, True, "no_key_term: y", 500), result("o3", "out_of_scope", False, False),
    ], "m")
    assert s["invented"] == ["o3"] and s["wrong_answers"] == ["f3"] and s["false_declines"] == ["f2"]
    assert s["rules"] == {"topic": {"fired": 2, "right": 1}, "no_key_term": {"fired": 1, "right": 1}}
    assert s["p95_total_ms"] == 500 and s["avg_total_ms"] == 267


def test_facts_are_also_counted_on_the_answer_alone() -> None:
    quoted = result("f1", "fact", False, True)
    quoted.answer_only_correct = False  # right only because the quoted sentence holds the span
    plain = result("f2", "fact", False, True)
    plain.answer_only_correct = True
    s = summarise([quoted, plain, result("o1", "out_of_scope", True, True)], "m")
    assert s["correct"] == 3 and s["facts_answer_only"] == 1
