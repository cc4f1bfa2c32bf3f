"""Tokenising mixed Chinese/English text into terms for retrieval and evidence checks."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

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

# Function words of questions and answers: what is asked, not what it is about.
CJK_STOP = frozenset(
    "什么 哪些 哪个 哪位 哪里 哪儿 哪年 哪一年 怎么 怎样 如何 为什么 为何 是否 是不是 多少 几个 谁 吗 呢 吧 啊 "
    "的 了 是 在 和 与 及 对 把 被 将 从 向 于 以 为 中 上 下 里 有 没有 都 也 还 又 就 才 这 那 这个 那个 "
    "这些 那些 其 之 他 她 它 他们 我们 你 你们 我 请 告诉 一下 文章 文中 本文 这篇 提到 提及 认为 表示 "
    "说 讲 指 指出 谈到 介绍 根据 关于 方面 哪方面 内容 问题 一个 什么样 样 具体 主要 应该 可以 能 会 要 "
    "多长时间 多久 多长 多大 哪些方面 几个方面".split()
)
EN_STOP = frozenset(
    "a an the of to in on for and or is are was were be been being do does did what which who whom whose "
    "when where why how many much according article text say says said mention mentioned mentions about "
    "this that these those it its he she they them his her their there here with by from as at into "
    "tell me please can could would should will does did has have had not no yes i you we our your "
    "any some other else more most also than then".split()
)


def bigrams(run: str) -> list[str]:
    """Overlapping two-character pieces of a Chinese run (a single character stands alone)."""
    return [run] if len(run) < 2 else [run[i : i + 2] for i in range(len(run) - 1)]


# Characters that carry grammar, not content: bigrams containing them say nothing about support.
_FUNCTION_CHARS = set("的了是在和与及也都就而或把被将对为这那其之他她它们吗呢吧啊很更最并从向于以所着过个一有没不"
                      "什么哪谁怎几")


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


# Nouns that frame what kind of answer is wanted rather than name a fact ("what is his identity?"):
# an answer may restate them without the content using the word, and a question may ask for a time,
# place or occasion in words the content does not use.
FRAME_NOUNS = frozenset(
    "身份 职务 职位 头衔 观点 看法 意见 态度 立场 建议 提议 主张 想法 理由 原因 目的 作用 意义 影响 "
    "内容 特点 含义 意思 方面 措施 办法 方法 途径 方式 问题 结论 定位 角色 评价 判断 文章 本文 原文 报道 "
    "场合 时间 时候 地点 地方 "
    "identity role position title view opinion opinions views proposal proposals suggestion suggestions idea "
    "reason purpose role meaning point points way ways".split()
)


def noun_terms(question: str) -> list[str]:
    """The nouns (and English content words) among a question's key terms."""
    found = [m.group(0).lower() for m in _LATIN.finditer(question)
             if m.group(0).lower() not in EN_STOP and len(m.group(0)) > 1]
    for run in HAN_RUN.findall(question):
        found += [w for w, flag in posseg(run) if flag.startswith("n") and len(w) >= 2 and w not in CJK_STOP]
    return found


# "…是什么代表？", "…什么样的准入机制？": the question ends on the noun whose kind the answer must name.
_KIND_QUESTION = re.compile(rf"(?:什么样的?|什么|哪一?种|哪一?类)的?([{HAN}]{{1,8}})[？?]?\s*$")


def kind_noun(question: str) -> str | None:
    """The noun a "what kind of N?" question ends on (刘庆峰是什么代表？ → 代表), or None."""
    m = _KIND_QUESTION.search(question.strip())
    if not m or set(m.group(1)) & set("的了吗呢是在说什么哪谁几"):
        return None
    return m.group(1)


_ASKS_AFTER = re.compile(rf"(?:哪(?![里儿])[个家所位些种类一]?|什么样?的?|多少)([{HAN}]{{2,6}})")
_ASKS_BEFORE = re.compile(rf"([{HAN}]{{2,6}})(?:是|有|在|叫)(?:哪里|哪儿|什么|谁|多少|几)")


def asked_nouns(question: str) -> list[str]:
    """The nouns naming what a question asks for: 哪个部委的答复 → 部委, 家乡是哪里 → 家乡."""
    found: list[str] = []
    for pattern, pick in ((_ASKS_AFTER, 0), (_ASKS_BEFORE, -1)):
        for m in pattern.finditer(question):
            words = posseg(m.group(1))
            word, flag = words[pick] if words else ("", "")
            if flag.startswith("n") and len(word) >= 2 and word not in found:
                found.append(word)
    return found


_QUANTITY = re.compile(
    r"多少|多长|多久|多大|几[个年月天岁位种大项点次倍名家]|哪一?年|how (many|much|long|old)|what year", re.IGNORECASE)
# Counted things count too (三大问题, 两三天): enough to tell that an answer states a number at all.
_NUMERAL = re.compile(rf"\d|{_CJK_NUMERAL}(?:{_UNITS}|大|项|点|种|次|倍|天|月|名|家)")


def asks_quantity(question: str) -> bool:
    """Whether the question asks for a number, an amount, a duration or a year."""
    return bool(_QUANTITY.search(question))


def has_numeral(text: str) -> bool:
    """Whether the text states a number (2个月, 两三年, 三大问题)."""
    return bool(_NUMERAL.search(text))


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


def numbers(text: str) -> set[str]:
    """Numbers in a text (Arabic, and Chinese numerals with a unit), as written (thousands commas dropped)."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


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
