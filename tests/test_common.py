"""The channels' shared splitter, tested directly."""

from __future__ import annotations

import unicodedata

import pytest

from bot.channels.common import fit_prefix, split_text, utf8_len, utf16_len

# ---- measures and fitting ----


def test_measures_count_like_the_messengers() -> None:
    assert utf16_len("abc") == 3 and utf16_len("刘") == 1 and utf16_len("😀") == 2
    assert utf8_len("abc") == 3 and utf8_len("刘") == 3 and utf8_len("😀") == 4


def test_fit_prefix_is_the_longest_prefix_within_the_limit() -> None:
    assert fit_prefix("刘庆峰", 7, utf8_len) == 2
    assert fit_prefix("😀😀😀", 5, utf16_len) == 2
    assert fit_prefix("short", 100, len) == 5
    assert fit_prefix("😀", 1, utf16_len) == 0


# ---- splitting ----


@pytest.mark.parametrize(("measure", "limit"), [(utf16_len, 4096), (utf8_len, 2048), (utf8_len, 100)])
def test_no_part_over_the_limit_and_nothing_lost(measure: object, limit: int) -> None:
    text = ("刘庆峰表示，类ChatGPT研发是一个持续进化的系统工程。😀 Then some English, words and more. " * 120).strip()
    parts = split_text(text, limit, measure)  # type: ignore[arg-type]
    assert len(parts) > 1
    assert all(measure(p) <= limit for p in parts)  # type: ignore[operator]
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")


def test_utf8_bytes_cut_between_characters_when_there_is_no_boundary() -> None:
    text = "智" * 1500  # 4500 bytes
    parts = split_text(text, 2048, utf8_len)
    assert "".join(parts) == text and all(utf8_len(p) <= 2048 for p in parts)
    assert [len(p) for p in parts] == [682, 682, 136]


def test_utf16_never_splits_a_surrogate_pair() -> None:
    parts = split_text("😀" * 3000, 4096, utf16_len)
    assert [len(p) for p in parts] == [2048, 952] and all(utf16_len(p) <= 4096 for p in parts)


def test_hard_cut_keeps_combining_marks_joiners_and_flags_whole() -> None:
    accented = "e\u0301" * 20  # 'é' as a letter and a combining accent
    for part in split_text(accented, 7, len):
        assert not unicodedata.combining(part[0]) and len(part) <= 7
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji of five code points
    assert split_text(family * 3, 7, len) == [family] * 3
    flags = "\U0001f1e8\U0001f1f3" * 5  # five flags, two code points each
    assert split_text(flags, 5, len) == ["\U0001f1e8\U0001f1f3" * 2] * 2 + ["\U0001f1e8\U0001f1f3"]


def test_hard_cut_exactly_at_the_limit() -> None:
    assert split_text("x" * 5000, 4096, utf16_len) == ["x" * 4096, "x" * 904]
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]


def test_paragraph_then_line_then_sentence_then_word() -> None:
    """Each break is taken over a later break of the next kind."""
    assert split_text("First paragraph.\n\nSecond one. It goes on", 36) == [
        "First paragraph.", "Second one. It goes on"]
    assert split_text("Line one here\nNext. And more words", 30) == ["Line one here", "Next. And more words"]
    assert split_text("A sentence here. and then words go on", 30) == ["A sentence here.", "and then words go on"]
    assert split_text("no stops at all just words", 15) == ["no stops at all", "just words"]


def test_sentence_ends_in_chinese_and_ascii() -> None:
    zh = "这是一句话。" * 1000
    parts = split_text(zh, 2048, utf8_len)
    assert all(p.endswith("。") for p in parts) and "".join(parts) == zh
    for stop in "！？；!?;":
        assert split_text(f"甲乙丙丁{stop}戊己庚辛壬癸子丑", 10)[0] == f"甲乙丙丁{stop}"


def test_closing_quotes_and_citation_markers_stay_with_their_sentence() -> None:
    marked = ("甲" * 600 + "。”[1]") * 3
    parts = split_text(marked, 2048, utf8_len)
    assert len(parts) == 3 and all(p.endswith("。”[1]") for p in parts)
    assert split_text("He said “yes.”[2][3] And then more words", 30)[0] == "He said “yes.”[2][3]"
    assert split_text("刘庆峰说：「好。」[4]然后还有很多很多的话", 16)[0] == "刘庆峰说：「好。」[4]"


def test_a_decimal_point_is_not_a_sentence_end() -> None:
    assert split_text("abcdefghij 3.14159265358979323846", 20)[0] == "abcdefghij"


def test_chinese_commas_break_a_long_sentence() -> None:
    assert split_text("甲" * 10 + "，" + "乙" * 10, 15) == ["甲" * 10 + "，", "乙" * 10]


def test_a_boundary_too_early_is_not_used() -> None:
    text = "a. " + "b" * 30  # cutting after "a." would leave a tiny first part
    assert split_text(text, 20)[0] == "a. " + "b" * 17


def test_short_blank_and_oversized_character() -> None:
    assert split_text("  short  ", 4096, utf16_len) == ["short"]
    assert split_text(" \n\n ", 10) == []
    assert split_text("😀", 1, utf16_len) == ["😀"]  # cannot be smaller: one part of its own
