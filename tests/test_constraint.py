"""bot/backends/constraint.py: what may be copied, the copying steps on given log-probabilities, and the
GBNF grammar an OpenAI-compatible server gets for the same constraint."""

from __future__ import annotations

import numpy as np
import pytest

from bot.backends.base import Extraction
from bot.backends.constraint import Copying, Pieces, closing, complete_utf8, grammar

# A toy vocabulary: labels, the lead, words of the source, a byte-split character, the end, a quote.
VOCAB = ["0", "1", "2", "：", "刘庆峰", "是", "董事长", "科大讯飞", "，", "天空", "<end>", "”", "无", "刘",
         "\xe5".encode("latin-1").decode("latin-1")]
PIECES = [t.encode("utf-8") for t in VOCAB[:-1]] + [b"\xe5"]  # the last one is half of a character
END = VOCAB.index("<end>")


def table() -> Pieces:
    return Pieces(len(PIECES), lambda t: b"" if t == END else PIECES[t])


def token(text: str) -> int:
    return VOCAB.index(text)


def test_only_tokens_that_keep_the_answer_inside_the_source_are_allowed() -> None:
    pieces = table()
    source = "刘庆峰是科大讯飞董事长，天空".encode()
    first = {VOCAB[t] for t in pieces.allowed(b"", source)}
    assert {"刘庆峰", "刘", "是", "科大讯飞", "董事长", "，", "天空"} <= first and "0" not in first
    after = {VOCAB[t] for t in pieces.allowed("刘庆峰".encode(), source)}
    assert after == {"是"}  # only what follows 刘庆峰 in the source
    assert pieces.allowed("天空是".encode(), source) == []  # not in the source at all


def test_an_answer_may_not_end_inside_a_character() -> None:
    assert complete_utf8("刘".encode()) and not complete_utf8("刘".encode()[:2])


def lp(**best: float) -> np.ndarray:
    """Log-probabilities: every token very unlikely but those named."""
    out = np.full(len(VOCAB), -30.0)
    for text, value in best.items():
        out[token(text.replace("END", "<end>").replace("Q", "”"))] = value
    return out


def test_copying_reads_the_labels_then_copies_the_chosen_source_until_the_end_is_likelier() -> None:
    result = Extraction()
    c = Copying([token("0"), token("1"), token("2")], [b"", "天空".encode(), "刘庆峰是科大讯飞董事长".encode()],
                [token("：")], token("无"), END, table(), result, max_tokens=10, close="”".encode())
    step = c.step(np.array([-2.0 if t in ("0",) else -0.5 if t == "1" else -0.3 if t == "2" else -30.0
                            for t in VOCAB]))
    assert step.picked is not None and step.picked.chosen == 2 and result.chosen == 2
    assert step.feed == [token("2"), token("：")]  # the label and the lead are fed, not sampled
    assert result.logprobs == [-2.0, -0.5, -0.3]
    # The model would rather write 天空 (not in the chosen sentence) or 无: only the sentence's text may come.
    step = c.step(lp(天空=-0.1, 无=-0.5, 董事长=-1.0, 刘庆峰=-2.0))
    assert step.text == "董事长".encode() and result.none_first == -0.5
    step = c.step(lp(是=-0.2, Q=-0.4, END=-3.0))  # 是 does not follow 董事长; closing the quote ends it
    assert step.feed == [] and result.token_logprobs == [-1.0, -0.4]
    assert c.answer == "董事长".encode()


def test_an_answer_stops_at_its_clause_and_at_max_tokens() -> None:
    def copying(max_tokens: int) -> Copying:
        c = Copying([token("0"), token("1")], [b"", "刘庆峰是董事长，天空".encode()], [token("：")], token("无"), END,
                    table(), Extraction(), max_tokens=max_tokens)
        c.step(lp(**{"1": -0.1}))
        return c

    c = copying(10)
    assert c.step(lp(刘庆峰=-0.1)).feed == [token("刘庆峰")]
    assert c.step(lp(是=-0.1)).feed == [token("是")]
    assert c.step(lp(董事长=-0.1)).feed == [token("董事长")]
    assert c.step(lp(**{"，": -0.1})).feed == []  # the comma would cross into the next clause: it ends
    assert c.answer == "刘庆峰是董事长".encode()
    c = copying(2)
    c.step(lp(刘庆峰=-0.1))
    last = c.step(lp(是=-0.1))
    assert last.feed == [] and last.text == "是".encode() and c.answer == "刘庆峰是".encode()


def test_the_grammar_allows_a_label_the_lead_and_a_substring_of_one_clause() -> None:
    text = grammar(["1", "2"], ["刘庆峰，董事长。", 'a"b'], "：答案是“")
    # The closing quote may take one mark after it: the embedded backend may end on "”。" as one token.
    assert text.startswith('root ::= "1：答案是“" sub0 ("”" [，,。.；;：:！!？?、\\n]?)? | "2：答案是“" sub1 ("”" ')
    assert 's0c0x0 ::= "刘" s0c0x1?' in text and 's0c1x2 ::= "长"' in text
    assert "，" not in text.split("\n", 1)[1]  # no clause crosses the comma
    assert r's1c0x1 ::= "\"" s1c0x2?' in text  # quotes are escaped
    assert closing("：答案是“") == "”" and closing("：") == ""


@pytest.mark.parametrize("lead", ["：", "：答案是“"])
def test_the_grammar_holds_one_rule_per_character(lead: str) -> None:
    text = grammar(["1"], ["甲乙丙"], lead)
    assert text.count("::=") == 1 + 3 + 1  # root, one per character, the union of starts
