"""bot/content/retrieval.py: sentences of the content and the candidates the extractive path picks among."""

from __future__ import annotations

from bot.content.knowledge import load
from bot.content.retrieval import LONG_SENTENCE, SentenceIndex, split_sentences
from bot.types import Passage
from tests.helpers import ROOT


def test_sentences_end_at_either_punctuation_and_keep_their_closing_quotes() -> None:
    text = ("他说：“我们终于把这件事情做到了。”随后大家一起离开了会场。Then everybody left the hall. "
            "第二天他们还会回来吗？")
    assert split_sentences(text) == ["他说：“我们终于把这件事情做到了。”", "随后大家一起离开了会场。",
                                     "Then everybody left the hall.", "第二天他们还会回来吗？"]


def test_a_short_attribution_joins_the_quote_before_it() -> None:
    text = "“ChatGPT像一个发电厂，把石油灌进去之后就可以产生电力。”周鸿祎如此解释。第二句话就写在这里了。"
    assert split_sentences(text) == ["“ChatGPT像一个发电厂，把石油灌进去之后就可以产生电力。”周鸿祎如此解释。",
                                     "第二句话就写在这里了。"]


def test_a_very_long_sentence_becomes_clauses_no_longer_than_the_limit() -> None:
    clause = "这是一个相当长的分句，用来测试切分" * 3  # 51 characters
    sentence = "；".join([clause] * 6) + "。"
    parts = split_sentences(sentence)
    assert len(parts) > 1 and "".join(parts) == sentence
    assert all(len(p) <= LONG_SENTENCE for p in parts)


def test_candidates_are_the_best_matches_best_first() -> None:
    text = "甲乙丙丁戊己庚辛壬癸。晴朗的天空是蓝色的。春天的草地是绿色的。大海里的海水是咸的。"
    p = Passage("p1", "S", text, "a.md", 0)
    q = Passage("p2", "S", "蓝色的大海一望无际。晴朗的天空很高很远。", "a.md", 1)
    index = SentenceIndex([p, q])
    got = [s.text for s in index.candidates("天空是什么颜色的？蓝色", 2)]
    assert got == ["晴朗的天空是蓝色的。", "蓝色的大海一望无际。"]  # the best match leads
    assert len(index.candidates("天空是什么颜色的？蓝色", 9)) == 4  # only sentences sharing a word


def test_candidates_can_be_kept_within_a_group_of_passages() -> None:
    p = Passage("p1", "S", "天空是蓝色的。", "a.md", 0)
    q = Passage("p2", "S", "天空很高。", "a.md", 1)
    index = SentenceIndex([p, q])
    assert [s.passage.id for s in index.candidates("天空", 3, within=[q])] == ["p2"]
    assert index.candidates("量子", 3) == []  # nothing shares a word: no candidate


def test_the_article_is_indexed_sentence_by_sentence_once_per_version() -> None:
    content = load(ROOT / "content")
    texts = [s.text for s in content.sentences.sentences]
    assert len(texts) > 50 and all(s.n == i for i, s in enumerate(content.sentences.sentences))
    assert any("让每个人都有AI助手" in t for t in texts)
    best = content.sentences.candidates("刘庆峰希望让每个人都有什么？", 4)[0]
    assert "AI助手" in best.text
