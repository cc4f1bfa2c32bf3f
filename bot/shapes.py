"""The shape of an answer a question asks for: the polarity of a yes/no answer, the kind a "what kind
of N" answer names, each read against the cited text, and someone named where the question asks who."""

from __future__ import annotations

import re

import jieba

from bot.words import HAN, HAN_RUN, latin_names, posseg

_NEGATION = re.compile(r"(不|没有|没|未|并非|非|无)$")
_YES_NO = re.compile(rf"([{HAN}]+?)(?:了)?吗[？?]?\s*$")


def yes_no_predicate(question: str) -> str | None:
    """The word a yes/no question asks about: the head of its last content word before 吗 (技术落后吗 → 落后)."""
    m = _YES_NO.search(question.strip())
    words = [w for w, flag in posseg(m.group(1)) if len(w) >= 2 and flag[:1] not in "rcpuyex"] if m else []
    if not words:
        return None
    # A compound's head comes last in Chinese: 技术落后 is about 落后.
    heads = [w for w in jieba.cut_for_search(words[-1]) if len(w) >= 2 and w != words[-1] and words[-1].endswith(w)]
    return heads[-1] if heads else words[-1]


def polarity_flipped(answer: str, question: str, text: str) -> str | None:
    """For a yes/no question (…落后吗？), the predicate if the answer states it with the opposite
    polarity to every place the cited text does (落后 where the text says 并不落后), else None."""
    word = yes_no_predicate(question)
    if not word or word not in text or word not in answer:
        return None

    def negated(source: str) -> set[bool]:
        return {bool(_NEGATION.search(source[max(0, m.start() - 2) : m.start()]))
                for m in re.finditer(re.escape(word), source)}

    said, stated = negated(text), negated(answer)
    return word if len(said) == 1 and stated and not (stated & said) else None


_QUOTES = str.maketrans("", "", "“”\"'‘’「」『』 ")


def names_kind(answer: str, question: str, noun: str, text: str) -> bool:
    """Whether the answer names the kind of `noun` the question asks for as the text does: some
    "…noun" in it is qualified by words of the text (人大代表, 先试的准入机制), not of the question."""
    ans, src = answer.translate(_QUOTES), text.translate(_QUOTES)
    for m in re.finditer(re.escape(noun), ans):
        i = m.start()
        qual = ans[max(0, i - 3) : i] if ans[i - 1 : i] == "的" else ans[max(0, i - 2) : i]
        core = qual.removesuffix("的")
        if len(core) == 2 and core.isalnum() and core not in question and qual + noun in src:
            return True
    return False


_WHO = re.compile(r"谁|哪位|何人")
# Parts of speech that can name someone: nouns and names of every kind, abbreviations, Latin words.
_NAMING = ("n", "j", "eng")


def asks_who(question: str) -> bool:
    """Whether the question asks who (谁, 哪位, 何人)."""
    return bool(_WHO.search(question))


def names_someone(added: str) -> bool:
    """Whether what an answer adds to its question holds a noun or a name: "…是由1993年被发现的" names no one."""
    if latin_names(added):
        return True
    return any(flag.startswith(_NAMING) for run in HAN_RUN.findall(added) for _, flag in posseg(run))
