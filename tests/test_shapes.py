"""bot/shapes.py: the polarity of yes/no answers and the kind what-kind answers name."""

from __future__ import annotations

from bot import shapes


def test_a_yes_no_question_asks_about_the_head_of_its_last_word() -> None:
    assert shapes.yes_no_predicate("赵晓光认为我国人工智能技术落后吗？") == "落后"
    assert shapes.yes_no_predicate("刘庆峰是科大讯飞董事长吗？") == "董事长"
    assert shapes.yes_no_predicate("刘庆峰是谁？") is None


def test_an_answer_that_flips_the_texts_polarity_is_caught() -> None:
    text = "赵晓光认为，我国人工智能技术并不落后。"
    question = "赵晓光认为我国人工智能技术落后吗？"
    assert shapes.polarity_flipped("赵晓光认为我国人工智能技术落后。", question, text) == "落后"
    assert shapes.polarity_flipped("不，赵晓光认为我国技术并不落后。", question, text) is None


def test_a_kind_is_named_as_the_text_qualifies_the_noun() -> None:
    text = "全国人大代表、科大讯飞董事长刘庆峰"
    assert shapes.names_kind("刘庆峰是全国人大代表。", "刘庆峰是什么代表？", "代表", text)
    assert not shapes.names_kind("刘庆峰代表科大讯飞。", "刘庆峰是什么代表？", "代表", text)


def test_an_answer_to_who_must_name_someone() -> None:
    assert shapes.asks_who("芙蓉洞是由谁最早发现的？") and shapes.asks_who("哪位投手用过这首歌？")
    assert not shapes.asks_who("芙蓉洞是哪一年被发现的？")
    assert not shapes.names_someone("，1993年被，。")  # "芙蓉洞是由1993年被发现的" less the question's words
    assert shapes.names_someone("，显宗，。") and shapes.names_someone("ChatGPT由OpenAI，。")
    assert shapes.names_someone("，为本地士绅。")  # a title is someone too
