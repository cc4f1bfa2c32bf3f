"""Names across scripts: a Chinese person's name in standard pinyin, and the Latin-script names an English
text uses, found as whole words."""

from __future__ import annotations

import re
from functools import lru_cache

from pypinyin import lazy_pinyin

from bot.text.quantities import MONTHS
from bot.text.words import EN_STOP, HAN_RUN, lexicon, lexicon_lines

# Surname -> its toneless reading as a surname (lexicon/surnames.txt); compound ones are two characters.
_SURNAMES = {line[0]: line[1] for line in lexicon_lines("surnames")}
# Words that start an English sentence without being a name (the, she, according, ...).
_OPENERS = EN_STOP | frozenset(lexicon("openers_en"))
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$|^\s*$")


def surname(name: str) -> str:
    """The surname a Chinese name starts with ('欧阳' of 欧阳修, '刘' of 刘庆峰), or '' when none is known."""
    for size in (2, 1):
        if len(name) > size and name[:size] in _SURNAMES:
            return name[:size]
    return ""


def is_person(name: str) -> bool:
    """A two-to-four character Chinese run that starts with a known surname."""
    return 2 <= len(name) <= 4 and bool(HAN_RUN.fullmatch(name)) and bool(surname(name))


def spell_person(name: str) -> str:
    """Standard pinyin of a Chinese person's name: surname first, given name joined (刘庆峰 -> Liu Qingfeng,
    单雄信 -> Shan Xiongxin, 欧阳修 -> Ouyang Xiu); the surname read as a surname."""
    family = surname(name)
    given = "".join(lazy_pinyin(name[len(family):]))
    return f"{_SURNAMES[family].capitalize()} {given.capitalize()}".strip()


@lru_cache(maxsize=1)
def _syllables() -> frozenset[str]:
    """Every toneless pinyin syllable (from pypinyin's own table), 'ng'/'m' and the like left out."""
    from pypinyin import Style, pinyin_dict
    from pypinyin.style import convert

    out = {convert(r, Style.NORMAL, strict=True) for v in pinyin_dict.pinyin_dict.values() for r in v.split(",")}
    return frozenset(s for s in out if re.fullmatch(r"[a-z]*[aeiouv][a-z]*", s))


def pinyin_like(word: str) -> bool:
    """The word reads as one or more pinyin syllables (Li, Xiaowang, Qingfeng), so it may be a Chinese name."""
    w, syllables = word.lower(), _syllables()
    ok = [True] + [False] * len(w)
    for end in range(1, len(w) + 1):
        ok[end] = any(ok[start] and w[start:end] in syllables for start in range(max(0, end - 6), end))
    return bool(w) and ok[len(w)]


def _whole(phrase: str) -> str:
    """A pattern for `phrase` as whole words: no letter just before or after it."""
    return rf"(?<![A-Za-z]){re.escape(phrase)}(?![A-Za-z])"


def whole_word(phrase: str, text: str) -> bool:
    """`phrase` stands in `text` as whole words, case aside ('Li' is not in 'National Library')."""
    return re.search(_whole(phrase), text, re.IGNORECASE) is not None


def unknown_names(english: str, spellings: list[str], known: str) -> list[str]:
    """Capitalised words of `english` that are no whole-word part of a listed spelling or of `known` text.

    Listed spellings are masked as whole phrases first, so 'Jiang Hao' does not pass by 'Jiang Haoran'. A
    sentence's first word counts only when it reads as pinyin and is not a function word ('Xiaowang.');
    month names are dates (their numbers are checked as quantities). Any other capitalised word needs a
    source: an organisation put into English words ('Ministry of Agriculture') is no spelling of the content.
    """
    text = english
    for phrase in sorted({s for s in spellings if s.strip()}, key=len, reverse=True):
        text = re.sub(_whole(phrase), " ~ ", text, flags=re.IGNORECASE)
    out = []
    for m in _WORD.finditer(text):
        word = m.group(0).strip("'-")
        if not word[:1].isupper() or word.lower() in MONTHS or whole_word(word, known):
            continue
        starts = bool(_SENTENCE_END.search(text[: m.start()]))
        if starts and (word.lower() in _OPENERS or not pinyin_like(word)):
            continue
        out.append(word)
    return out
