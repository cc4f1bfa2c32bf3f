"""bot/grounding/translation.py: English names in the article's spelling, the glossary, faithful translations."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.content.knowledge import ContentSet, load
from bot.grounding.translation import (
    chinese_question,
    english_answer,
    faithful,
    fallback,
    glossary,
    glossary_line,
    map_english,
    missing_names,
    question_names,
)
from bot.types import Citation, Reply
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def content() -> ContentSet:
    return load(ROOT / "content")


def test_english_names_map_to_the_article_spelling(content: ContentSet) -> None:
    mapped = map_english("What did liu qingfeng and Zhou Hongyi say about iFlytek?", content)
    assert "liu qingfeng (刘庆峰)" in mapped and "Zhou Hongyi (周鸿祎)" in mapped and "iFlytek (科大讯飞)" in mapped
    assert map_english("Who is Zhao Xiaoguang?", content, replace=True) == "Who is 赵晓光?"
    # Ordinary English words are not mistaken for pinyin names.
    assert map_english("What is the weather tomorrow?", content) == "What is the weather tomorrow?"


def test_the_questions_names_keep_its_spelling(content: ContentSet) -> None:
    names = question_names("What did liu qingfeng say about iFLYTEK and Zhao Xiaoguang?", content)
    assert names == {"刘庆峰": "Liu Qingfeng", "科大讯飞": "iFlytek", "赵晓光": "Zhao Xiaoguang"}


def test_content_without_aliases_still_maps_pinyin(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("标题\n\n张三认为应当发展开源项目。\n", encoding="utf-8")
    cs = load(tmp_path)
    assert cs.aliases == {}
    assert "(张三)" in map_english("What does Zhang San think?", cs)


def _reply(content: ContentSet, text: str, holding: str) -> Reply:
    passage = next(p for p in content.passages if holding in p.text)
    return Reply(text, refused=False, citations=[Citation(passage.id, passage.section, passage.text, 1)])


def test_a_translation_that_adds_prose_or_facts_is_not_faithful(content: ContentSet) -> None:
    reply = _reply(content, "刘庆峰是科大讯飞董事长[1]。", "科大讯飞董事长刘庆峰")
    terms = glossary(reply.text, "Who is Liu Qingfeng?", content)
    assert faithful("Liu Qingfeng is the chairman of iFlytek.", reply, content, terms)
    assert not faithful("Liu Qingfeng is the chairman of iFlytek, which has 20,000 staff.", reply, content, terms)
    assert not faithful("Liu Qingfeng is the chairman of iFlytek, a leading figure in the field of "
                        "artificial intelligence and one of the best-known entrepreneurs.", reply, content, terms)
    assert not faithful("Liu Qingfeng is the chairman of Baidu and Tencent's NASDAQ arm.", reply, content, terms)


def test_a_name_spelled_otherwise_than_the_glossary_is_not_faithful(content: ContentSet) -> None:
    """The three wrong names of the issue: each fails, the glossary's spelling passes."""
    for question, answer, holding, wrong, right in [
        ("Who is the chairman of iFlytek?", "刘庆峰[1]", "科大讯飞董事长刘庆峰",
         "The chairman of iFlytek is Li Qingfeng.", "The chairman of iFlytek is Liu Qingfeng."),
        ("Who is the chairman of Cashway Fintech?", "江浩然[1]", "董事长江浩然",
         "The chairman of Cashway Fintech is Jiang Hao.", "The chairman of Cashway Fintech is Jiang Haoran."),
        ("Which researcher from the Institute of Automation is quoted?", "赵晓光[1]", "研究员、科技团队",
         "Xiaowang.", "Zhao Xiaoguang."),
    ]:
        reply = _reply(content, answer, holding)
        terms = glossary(answer, question, content)
        assert not faithful(wrong, reply, content, terms, question), wrong
        assert faithful(right, reply, content, terms, question), right


def test_numbers_are_stated_as_the_content_does(content: ContentSet) -> None:
    reply = _reply(content, "2个月[1]", "2个月用户破亿")
    terms = glossary(reply.text, "How long did it take?", content)
    assert faithful("It took 2 months.", reply, content, terms)
    assert faithful("Two months.", reply, content, terms)
    assert not faithful("It took 3 months.", reply, content, terms)  # a number the content does not state
    assert not faithful("It took a few months.", reply, content, terms)  # the answer's number dropped
    big = Reply("1.2万人", refused=False)
    terms = glossary(big.text, "How many?", content)
    assert terms["1.2万"] == "12,000"  # computed, not left to the model
    assert faithful("12,000 people.", big, content, terms)
    assert not faithful("1,200 people.", big, content, terms) and not faithful("1.2 people.", big, content, terms)


def test_the_models_chinese_question_is_taken_unless_it_lost_a_name() -> None:
    annotated = "What did Zhao Xiaoguang (赵晓光) propose?"
    assert chinese_question("赵晓光（赵晓光）提出了什么建议？\n多余的一行", annotated) == (
        "赵晓光提出了什么建议？", "赵晓光提出了什么建议？")
    assert chinese_question("她提出了什么建议？", annotated) == (annotated, "她提出了什么建议？")
    assert chinese_question("What did she propose?", annotated)[0] == annotated
    # A "translation" that answers the question instead is not taken: the answer would come from the model.
    assert chinese_question("赵晓光提出了开阔思路的建议。", annotated)[0] == annotated
    assert chinese_question("", annotated) == (annotated, "")


def test_glossary_and_the_english_answer_shown(content: ContentSet) -> None:
    terms = glossary("科大讯飞董事长是刘庆峰。", "Who chairs iFlytek?", content)
    assert terms["科大讯飞"] == "iFlytek" and terms["刘庆峰"] == "Liu Qingfeng"
    assert "科大讯飞 = iFlytek" in glossary_line(terms)
    assert glossary_line(glossary("天气很好。", "How is the weather?", content)) == "-"
    reply = _reply(content, "科大讯飞董事长是刘庆峰。[1]", "科大讯飞董事长刘庆峰")
    assert english_answer("Who is the chairman? The chairman of iFlytek is Liu Qingfeng.[1]", reply, content,
                          terms) == "The chairman of iFlytek is Liu Qingfeng."
    assert english_answer("科大讯飞董事长是刘庆峰。", reply, content, terms) is None  # not English
    assert english_answer("The chairman of iFlytek is Liu Qingfeng, born 1973.", reply, content, terms) is None


def test_glossary_spells_the_answers_people_in_pinyin_and_keeps_other_names(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("标题\n\n单雄信表示，欧阳修认为特斯拉公司很好。单雄信表示同意。单雄信表示支持。\n",
                                    encoding="utf-8")
    cs = load(tmp_path)
    terms = glossary("单雄信和欧阳修", "Who agreed?", cs)
    assert terms["单雄信"] == "Shan Xiongxin" and terms["欧阳修"] == "Ouyang Xiu"


def test_the_fallback_is_built_from_the_checked_answer(content: ContentSet) -> None:
    """A translation that fails the check is never shown: the reply is the glossary's template."""
    question = "Who is the chairman of iFlytek?"
    terms = glossary("刘庆峰", question, content)
    assert fallback("刘庆峰[1]", question, terms) == "The chairman of iFlytek is Liu Qingfeng (刘庆峰)."
    question = "Who founded 360 Group?"
    assert fallback("周鸿祎", question, glossary("周鸿祎", question, content)) == (
        "Zhou Hongyi (周鸿祎) founded 360 Group.")
    question = "Which two people spoke?"
    assert fallback("刘庆峰和周鸿祎", question, glossary("刘庆峰和周鸿祎", question, content)) == (
        "Liu Qingfeng (刘庆峰) and Zhou Hongyi (周鸿祎).")
    # More than names: the Chinese stays, its names glossed, never a guessed translation.
    text = fallback("刘庆峰认为应当加快推进", "What did Liu Qingfeng say?",
                    glossary("刘庆峰认为应当加快推进", "What did Liu Qingfeng say?", content))
    assert text.startswith("In the content's own words: 刘庆峰认为应当加快推进") and "刘庆峰 = Liu Qingfeng" in text


def test_the_answers_names_must_be_in_the_english(content: ContentSet) -> None:
    """A name of the checked answer left out, spelled otherwise or put into English words fails."""
    answer = "全国人大代表、科大讯飞董事长刘庆峰"
    terms = glossary(answer, "Who is quoted?", content)
    assert missing_names("NPC deputy, iFlytek chairman Liu Qingfeng", answer, terms, content) == []
    # Another aliases.yaml spelling of the same term is the content's spelling too.
    assert missing_names("NPC deputy, Keda Xunfei chairman Liu Qingfeng", answer, terms, content) == []
    assert missing_names("NPC deputy, iFlytek chairman Liu", answer, terms, content) == ["刘庆峰"]
    assert missing_names("A deputy and chairman of a company", answer, terms, content) == [
        "科大讯飞", "全国人大代表", "刘庆峰"]
