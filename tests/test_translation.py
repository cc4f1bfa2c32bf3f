"""bot/grounding/translation.py: English names in the article's spelling, the glossary, faithful translations."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.content.knowledge import ContentSet, load
from bot.grounding.translation import chinese_question, english_answer, english_names, faithful, glossary, map_english
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


def test_english_names_for_the_glossary(content: ContentSet) -> None:
    names = english_names("科大讯飞董事长刘庆峰 Liu Qingfeng (刘庆峰)", content)
    assert names["科大讯飞"] == "iFlytek" and names["刘庆峰"] == "Liu Qingfeng"


def test_content_without_aliases_still_maps_pinyin(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("标题\n\n张三认为应当发展开源项目。\n", encoding="utf-8")
    cs = load(tmp_path)
    assert cs.aliases == {}
    assert "(张三)" in map_english("What does Zhang San think?", cs)


def test_a_translation_that_adds_prose_or_facts_is_not_faithful(content: ContentSet) -> None:
    liu = next(p for p in content.passages if "科大讯飞董事长刘庆峰" in p.text)
    reply = Reply("刘庆峰是科大讯飞董事长[1]。", refused=False,
                  citations=[Citation(liu.id, liu.section, liu.text, 1)])
    assert faithful("Liu Qingfeng is the chairman of iFlytek.", reply, content)
    assert not faithful("Liu Qingfeng is the chairman of iFlytek, which has 20,000 staff.", reply, content)
    assert not faithful("Liu Qingfeng is the chairman of iFlytek, a leading figure in the field of "
                        "artificial intelligence and one of the best-known entrepreneurs.", reply, content)
    assert not faithful("Liu Qingfeng is the chairman of Baidu and Tencent's NASDAQ arm.", reply, content)


def test_the_models_chinese_question_is_taken_unless_it_lost_a_name() -> None:
    annotated = "What did Zhao Xiaoguang (赵晓光) propose?"
    assert chinese_question("赵晓光（赵晓光）提出了什么建议？\n多余的一行", annotated) == (
        "赵晓光提出了什么建议？", "赵晓光提出了什么建议？")
    assert chinese_question("她提出了什么建议？", annotated) == (annotated, "她提出了什么建议？")
    assert chinese_question("What did she propose?", annotated)[0] == annotated
    assert chinese_question("", annotated) == (annotated, "")


def test_glossary_and_the_english_answer_shown(content: ContentSet) -> None:
    assert "科大讯飞 = iFlytek" in glossary("科大讯飞董事长是刘庆峰。", "Who chairs iFlytek?", content)
    assert glossary("天气很好。", "How is the weather?", content) == "-"
    passage = next(p for p in content.passages if "科大讯飞董事长刘庆峰" in p.text)
    reply = Reply("科大讯飞董事长是刘庆峰。[1]", refused=False, citations=[Citation(passage.id, passage.section,
                                                                             passage.text, 1)])
    assert english_answer("Who is the chairman? The chairman of iFlytek is Liu Qingfeng.[1]", reply, content) == (
        "The chairman of iFlytek is Liu Qingfeng.")
    assert english_answer("科大讯飞董事长是刘庆峰。", reply, content) is None  # not English
    assert english_answer("The chairman of iFlytek is Liu Qingfeng, born 1973.", reply, content) is None
