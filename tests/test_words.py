"""bot/text/words.py: word lists from bot/text/lexicon and the text normalisations the checks use."""

from __future__ import annotations

from bot.text import words


def test_word_lists_come_from_the_lexicon_files() -> None:
    assert "什么" in words.CJK_STOP and "what" in words.EN_STOP and "身份" in words.FRAME_NOUNS
    assert not any(w.startswith("#") for w in words.lexicon("stop_zh"))
    groups = words.lexicon_lines("units")
    assert ["厘米", "公分", "cm", "centimetre", "centimetres", "centimeter", "centimeters"] in groups


def test_a_unit_is_blanked_only_where_the_text_gives_the_same_number_in_its_group() -> None:
    text = "身高182CM，石枝长57厘米。"
    assert words.restated_units("身高182厘米", text) == "身高182，"
    assert words.restated_units("长57公分", text) == "长57，"
    assert words.restated_units("身高175厘米", text) == "身高175厘米"  # another number
    assert words.restated_units("重182公斤", text) == "重182公斤"  # another kind of unit
    assert words.restated_units("米兰音乐院", text) == "米兰音乐院"  # no number, no unit


def test_frame_words_are_blanked_content_words_kept() -> None:
    assert words.without_frame_words("根据文章，刘庆峰是董事长") == "，，，刘庆峰是董事长"


def test_the_indefinite_article_is_no_number() -> None:
    assert words.numbers("他是一个演员，2007年出道") == {"2007"}
    assert "一个" not in words.numbers("一个原因") and "三个" in words.numbers("三个原因")


def test_a_number_with_another_unit_than_the_texts_is_caught() -> None:
    text = "初动销量7.7万张、累计销量12.6万张，但之后累计停在约12万张。身高182CM。2009年3月23日离婚。"
    assert words.unit_mismatches("一共停留了约12周", text) == ["12周"]
    assert words.unit_mismatches("累计约12万张", text) == []
    assert words.unit_mismatches("身高182厘米", text) == []  # the text writes its unit in Latin letters
    assert words.unit_mismatches("2009年3月23日", text) == []
    assert words.unit_mismatches("第3名", "排行第3、初动") == []  # the text gives 3 no unit
    assert words.unit_mismatches("1993年被发现", "芙蓉洞于1993被发现") == []  # a verb after it is no unit
    assert words.unit_mismatches("年满30周岁", "他今年30岁") == []  # the same unit spelled otherwise
    assert words.unit_mismatches("23号离婚", "2009年3月23日离婚") == []
