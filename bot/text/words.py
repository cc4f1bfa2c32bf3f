"""Tokenising mixed Chinese/English text into terms for retrieval and evidence checks."""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache
from importlib import resources

import jieba
import jieba.posseg

jieba.setLogLevel(logging.WARNING)

# Chinese characters: the unified ideographs, extension A and the compatibility ideographs.
HAN = "\u3400-\u9fff\uf900-\ufaff"
HAN_RUN = re.compile(f"[{HAN}]+")
_LATIN = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*[A-Za-z0-9+]|[A-Za-z]|\d+(?:[.,]\d+)*%?")
_CJK_NUMERAL = "[零一二两三四五六七八九十百千万亿]+"
_UNITS = "年|个|位|亿|万|岁|%"
_NUMBER = re.compile(rf"\d+(?:[.,]\d+)*%?|{_CJK_NUMERAL}(?:{_UNITS})")



def lexicon_lines(name: str) -> list[list[str]]:
    """The lines of bot/text/lexicon/NAME.txt as word lists (whitespace-separated; # starts a comment line)."""
    text = resources.files("bot.text.lexicon").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def lexicon(name: str) -> list[str]:
    """The words of bot/text/lexicon/NAME.txt, in file order."""
    return [w for line in lexicon_lines(name) for w in line]


# Function words of questions and answers: what is asked, not what it is about.
CJK_STOP = frozenset(lexicon("stop_zh"))
EN_STOP = frozenset(lexicon("stop_en"))
# Nouns that frame the kind of answer wanted (身份, 原因, 时间); see the file.
FRAME_NOUNS = frozenset(lexicon("frame_nouns"))


def bigrams(run: str) -> list[str]:
    """Overlapping two-character pieces of a Chinese run (a single character stands alone)."""
    return [run] if len(run) < 2 else [run[i : i + 2] for i in range(len(run) - 1)]


# Characters that carry grammar, not content: bigrams containing them say nothing about support.
_FUNCTION_CHARS = set("".join(lexicon("function_chars")))


def content_bigrams(text: str) -> list[str]:
    """The Chinese bigrams of a text that carry content (no function character), in order."""
    out = []
    for run in HAN_RUN.findall(text):
        out.extend(bg for bg in bigrams(run) if len(bg) == 2 and not (set(bg) & _FUNCTION_CHARS))
    return out


def terms(text: str) -> list[str]:
    """Index terms: lower-cased Latin words and numbers, Chinese character bigrams and jieba words."""
    out = [m.group(0).lower() for m in _LATIN.finditer(text)]
    for run in HAN_RUN.findall(text):
        out.extend(bigrams(run))
        out.extend(w for w in jieba.cut_for_search(run) if len(w) > 2)
    return out


@lru_cache(maxsize=4096)
def posseg(run: str) -> tuple[tuple[str, str], ...]:
    """jieba's (word, part-of-speech flag) pairs for a Chinese run, cached."""
    return tuple((w.word, w.flag) for w in jieba.posseg.cut(run))


def key_terms(question: str) -> list[str]:
    """The content words of a question: names, nouns, verbs, numbers and Latin terms, no question words."""
    found: list[str] = []
    for m in _LATIN.finditer(question):
        w = m.group(0).lower()
        if w not in EN_STOP and len(w) > 1:
            found.append(w)
    for run in HAN_RUN.findall(question):
        for word, flag in posseg(run):
            if word in CJK_STOP or len(word) < 2:
                continue
            # Everything but pronouns, conjunctions, prepositions, particles, adverbs and interjections.
            if flag[:1] not in ("r", "c", "p", "u", "d", "y", "e", "o", "w", "x"):
                found.append(word)
    return list(dict.fromkeys(found))


def noun_terms(question: str) -> list[str]:
    """The nouns (and English content words) among a question's key terms."""
    found = [m.group(0).lower() for m in _LATIN.finditer(question)
             if m.group(0).lower() not in EN_STOP and len(m.group(0)) > 1]
    for run in HAN_RUN.findall(question):
        found += [w for w, flag in posseg(run) if flag.startswith("n") and len(w) >= 2 and w not in CJK_STOP]
    return found


_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def _arabic(numeral: str) -> str:
    """'两个' -> '2', '十五岁' -> '15'; a numeral it cannot read ('两三年') stays as it is."""
    core = numeral.rstrip("年个位亿万岁%")
    if len(core) == 1 and core in _DIGITS:
        return str(_DIGITS[core])
    tens, _, ones = core.partition("十")
    if "十" in core and len(core) <= 3 and all(c in _DIGITS for c in tens + ones):
        return str((_DIGITS[tens] if tens else 1) * 10 + (_DIGITS[ones] if ones else 0))
    return numeral


# 一个, 一位 are most often the indefinite article ("a"), not a count a text must state.
_ARTICLES = frozenset({"一个", "一位"})


def numbers(text: str) -> set[str]:
    """Numbers in a text (Arabic, and Chinese numerals with a unit), as written (thousands commas dropped)."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)} - _ARTICLES


def number_in(number: str, text: str) -> bool:
    """The number is one of the text's numbers, as written or with the same value ('两个' in '2个月').

    Whole numbers only: 36 is not in '360集团'.
    """
    found = numbers(text)
    return number in found or _arabic(number) in {_arabic(n) for n in found}


def latin_names(text: str, *, every_word: bool = False) -> set[str]:
    """Latin-script names (ChatGPT, GPT-4, OpenAI, AI): a digit, an inner capital, or all capitals.

    With `every_word`, every Latin word counts: a Chinese answer has no reason to use English words
    the content does not have.
    """
    words = re.findall(r"[A-Za-z][A-Za-z0-9+\-]*[A-Za-z0-9+]|[A-Z]", text)
    if every_word:
        return {w.lower() for w in words}
    return {w.lower() for w in words
            if any(c.isdigit() for c in w) or any(c.isupper() for c in w[1:]) or (w.isupper() and len(w) > 1)}


# Equivalent spellings of a unit (厘米, 公分, cm) share a group number.
UNIT_GROUP = {u.lower(): i for i, group in enumerate(lexicon_lines("units")) for u in group}
MEASURE = re.compile(r"(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(map(re.escape, UNIT_GROUP), key=len, reverse=True))
                      + r")(?![A-Za-z])", re.IGNORECASE)


@lru_cache(maxsize=8)
def _measures(text: str) -> frozenset[tuple[str, int]]:
    """(number, unit group) of every measure in `text`; cached, since `text` is the content's joined text
    and every sentence check of every answer reads it."""
    return frozenset((m.group(1), UNIT_GROUP[m.group(2).lower()]) for m in MEASURE.finditer(text))


def restated_units(answer: str, text: str) -> str:
    """The answer with each unit blanked where `text` gives the same number in a unit of the same group
    (182厘米 where the text says 182CM): a restated unit is no claim of its own."""
    stated = _measures(text)

    def blank(m: re.Match[str]) -> str:
        return m.group(1) + "，" if (m.group(1), UNIT_GROUP[m.group(2).lower()]) in stated else m.group(0)

    return MEASURE.sub(blank, answer)


_COUNTERS = frozenset(lexicon("counters"))
_COUNTED = re.compile(rf"(?<![\d.])(\d+(?:\.\d+)?)([{HAN}])")


def _unit_group(spelled: str) -> int | None:
    """The unit group of a two-character unit (周岁), else of its first character (岁), else None."""
    return UNIT_GROUP.get(spelled.lower(), UNIT_GROUP.get(spelled[:1].lower()))


def unit_mismatches(answer: str, text: str) -> list[str]:
    """The answer's numbers whose counter (the character after them, bot/text/lexicon/counters.txt) `text` never
    puts after that number, where it always gives it one: 约12周 where the text has only 约12万张. A number
    the text writes bare, before a verb (1993被发现) or with a Latin unit (182CM), or a unit of the same
    group (厘米 for 公分), is no mismatch."""
    out = []
    for m in _COUNTED.finditer(answer):
        number, unit = m.groups()
        spots = [k.end() for k in re.finditer(rf"(?<![\d.]){re.escape(number)}(?![\d.])", text)]
        after = {text[e : e + 1] for e in spots}
        if unit not in _COUNTERS or not after or not after <= _COUNTERS or unit in after:
            continue
        group = _unit_group(answer[m.start(2) : m.start(2) + 2])  # 30周岁 is 30岁
        if group is not None and any(_unit_group(text[e : e + 2]) == group for e in spots):
            continue
        out.append(number + unit)
    return out


def blank_words(text: str, listed: frozenset[str]) -> str:
    """The text with each whole word (jieba's) of `listed` replaced by a comma; a listed word inside a
    longer one (作用 in 副作用) stays."""
    return HAN_RUN.sub(lambda m: "".join("，" if w in listed else w for w, _ in posseg(m.group(0))), text)


_FRAME_WORDS = frozenset(w for w in CJK_STOP if len(w) > 1)


def without_frame_words(text: str) -> str:
    """The text with the function words of questions and answers (根据, 文章, 提到) blanked: an answer's
    "根据文章[12]，…" claims nothing the content must hold."""
    return blank_words(text, _FRAME_WORDS)


SPAN_SHARE = 0.8  # the share of a span an answer must hold as one run (bot eval, quoting)


def bare(text: str) -> str:
    """Lower-cased, without whitespace and punctuation (Unicode categories P and S)."""
    return "".join(ch for ch in text.lower() if not ch.isspace() and unicodedata.category(ch)[0] not in "PS")


def longest_common_run(a: str, b: str) -> int:
    """Length of the longest substring the two texts share."""
    best, prev = 0, [0] * (len(b) + 1)
    for ca in a:
        cur = [0] * (len(b) + 1)
        for j, cb in enumerate(b, 1):
            if ca == cb:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def holds_span(answer: str, span: str, share: float = SPAN_SHARE) -> bool:
    """Whether the answer holds at least `share` of the span as one unbroken run."""
    a, s = bare(answer), bare(span)
    return bool(s) and (s in a or longest_common_run(a, s) >= share * len(s))
