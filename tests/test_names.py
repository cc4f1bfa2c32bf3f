"""bot/text/names.py: Chinese names in standard pinyin (surnames read as surnames), whole-word name checks."""

from __future__ import annotations

import pytest

from bot.text.names import is_person, pinyin_like, spell_person, surname, unknown_names, whole_word


@pytest.mark.parametrize(("name", "spelled"), [
    ("刘庆峰", "Liu Qingfeng"), ("赵晓光", "Zhao Xiaoguang"), ("江浩然", "Jiang Haoran"),
    # Polyphonic surnames take their surname reading, not the ordinary one (dan, ceng, jie, qu, chou).
    ("单雄信", "Shan Xiongxin"), ("曾国藩", "Zeng Guofan"), ("解缙", "Xie Jin"), ("区志航", "Ou Zhihang"),
    ("仇英", "Qiu Ying"), ("查良镛", "Zha Liangyong"), ("朴正熙", "Piao Zhengxi"),
    # Compound surnames stay one word: Ouyang Xiu, not Ou Yangxiu.
    ("欧阳修", "Ouyang Xiu"), ("司马光", "Sima Guang"), ("诸葛亮", "Zhuge Liang"),
])
def test_a_persons_name_in_standard_pinyin(name: str, spelled: str) -> None:
    assert is_person(name)
    assert spell_person(name) == spelled


def test_only_names_with_a_known_surname_are_people() -> None:
    assert surname("欧阳修") == "欧阳" and surname("刘庆峰") == "刘"
    # Transliterated foreign names keep their characters: no Chinese surname starts them.
    assert not is_person("特斯拉") and not is_person("奥廷加")
    assert not is_person("刘") and not is_person("刘庆峰认为应当") and not is_person("Liu")


def test_pinyin_like_words() -> None:
    assert pinyin_like("Xiaowang") and pinyin_like("Li") and pinyin_like("Qingfeng")
    assert not pinyin_like("According") and not pinyin_like("Library") and not pinyin_like("Kibaki")


def test_whole_words_not_substrings() -> None:
    assert not whole_word("Li", "National Library of China")
    assert whole_word("Library", "National Library of China")
    assert whole_word("openai", "美国科技初创公司OpenAI旗下")


def test_unknown_names_are_compared_as_whole_spellings() -> None:
    spellings = ["Liu Qingfeng", "iFlytek", "Jiang Haoran", "Zhao Xiaoguang"]
    assert unknown_names("The chairman of iFlytek is Liu Qingfeng.", spellings, "") == []
    assert unknown_names("The chairman of iFlytek is Li Qingfeng.", spellings, "") == ["Li", "Qingfeng"]
    # Part of a spelling, or its words reordered, is not the spelling.
    assert unknown_names("Jiang Hao chairs it.", spellings, "") == ["Jiang", "Hao"]
    assert unknown_names("Haoran Jiang chairs it.", spellings, "") == ["Haoran", "Jiang"]
    # A sentence's first word counts when it reads as pinyin and is no function word.
    assert unknown_names("Xiaowang.", spellings, "") == ["Xiaowang"]
    assert unknown_names("She said so. According to him, it works.", spellings, "") == []
    # Names that stand in the content (or the question) as whole words pass: not 'Li' inside 'Library'.
    assert unknown_names("ChatGPT was made by OpenAI.", [], "chatgpt是openai的产品") == []
    assert unknown_names("It is Li.", [], "national library") == ["Li"]


def test_names_put_into_english_words_or_invented_are_caught() -> None:
    # An organisation the content names in Chinese, put into English words, is no spelling of the content.
    assert unknown_names("The Ministry of Agriculture manages it.", [], "") == ["Ministry", "Agriculture"]
    assert unknown_names("Tesla partnered with Robert Lane and Benjamin Wilber.", [], "tesla") == [
        "Robert", "Lane", "Benjamin", "Wilber"]
    assert unknown_names("The founder is Zhou Hong.", ["Zhou Hongyi"], "") == ["Zhou", "Hong"]
