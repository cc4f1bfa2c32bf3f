"""Deciding answer or decline from the text, not from the model's goodwill, and choosing true citations.

Measured on this machine, the 1.5B model answers a "does the text answer this?" self-check with yes for
every question, and invents answers to most questions the content does not cover. So the decision rests
on evidence in the text, each check a named rule (config.GROUNDING_RULES; `grounding.rules_off` switches
one off to measure it; README, Grounding, has what each one did on content it was not tuned on):

Fact questions take the extractive path (bot/answering/extraction.py); these checks judge the free draft that
open questions (summaries, comparisons, opinions) still get:

1. Before generation (bot/grounding/evidence.py): a question none of whose key terms occurs in the content
   (`no_key_term`) is declined at once.
2. After generation (`support`): the answer's own claims (words that neither repeat the question nor
   frame the answer, units restated in another spelling excepted) must stand in the passages it cites
   (`coverage`), one of them holding the claims beside whom the question names and about what it asks
   (`topic`); numbers (with the text's unit) and Latin-script names verbatim in such a passage
   (`verbatim`).
3. The model's own "the content does not say" is honoured (`model_declined`, with the phrases of
   prompts/model_declines.txt).

The engine runs `support` on each sentence end of a streaming draft, and shows a prefix only when it
is `decisive` too (it adds something of its own to judge), so a user only ever sees a checked start
(bot/answering/release.py). `source_sentence` picks the cited sentence quoted under a checked answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.content.knowledge import ContentSet
from bot.grounding.translation import map_english
from bot.text import sentences
from bot.text.markers import strip_markers
from bot.text.words import (
    FRAME_NOUNS,
    HAN_RUN,
    blank_words,
    content_bigrams,
    holds_span,
    latin_names,
    number_in,
    numbers,
    restated_units,
    unit_mismatches,
    without_frame_words,
)
from bot.types import Passage


@dataclass
class Support:
    """Which passages support an answer, and how much of the answer they cover."""

    supported: bool
    score: float
    passages: list[Passage]
    unsupported: list[str]
    reason: str = ""


def model_declined(answer: str, declines: re.Pattern[str]) -> bool:
    """The model said the article does not cover the question: `declines` (Prompts.declines) occurs in it."""
    return bool(declines.search(answer))


@dataclass
class _Checkable:
    """What of an answer can be checked against the text."""

    claims: list[str]  # Chinese bigrams that do not merely repeat the question or frame the answer
    hard: set[str]  # numbers and Latin-script words that must occur verbatim


def _checkable(body: str, question: str, whole: str) -> _Checkable:
    # What the answer repeats of the question is no claim; neither are the bigrams that straddle a
    # repeated phrase and a new word (方达 in "…最深的地方达106米") or that only rearrange the question's
    # characters (年只 from "1961年…只剩下").
    asked = set(question)
    plain = without_frame_words(restated_units(_without(question, body), whole))
    claims = [bg for bg in content_bigrams(plain) if not set(bg) <= asked]
    return _Checkable(claims, numbers(body) | latin_names(body, every_word=True))


def _without(question: str, body: str) -> str:
    """The body with every run of two or more characters that also stands in the question blanked."""
    out, i = [], 0
    while i < len(body):
        j = i + 2
        while j <= len(body) and body[i:j] in question:
            j += 1
        if j - 1 - i >= 2 and HAN_RUN.fullmatch(body[i : j - 1]):
            out.append("，")
            i = j - 1
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


# A list item's number ("2. 成果源头…", "（3）") orders the answer; it is no number the text must hold.
_LIST_MARK = re.compile(r"(?m)^\s*(?:(?:\d{1,2}|[一二三四五六七八九十])(?:[.．](?!\d)|[、)）])|[（(]\d{1,2}[)）])\s*")


def _body(answer: str) -> str:
    """The answer as the checks read it: without its [n] markers and the numbers of its list items (only
    a list, two marked lines or more, has any: "1.5万人…" and "3、4月份…" at a line's start keep theirs)."""
    body = strip_markers(answer)
    return _LIST_MARK.sub("", body) if len(_LIST_MARK.findall(body)) >= 2 else body


def _coverage(items: list[str], text: str) -> float:
    return sum(1 for c in items if c in text) / len(items) if items else 0.0


def _topic(question: str, content: ContentSet) -> tuple[list[str], dict[str, float]]:
    """The question's Chinese bigrams that occur in the content, and their IDF weights. Frame nouns (名字,
    问题, 原因) say what kind of answer is wanted, not what it is about: left out."""
    idf = content.bigram_idf
    plain = blank_words(map_english(question, content), FRAME_NOUNS)
    return [bg for bg in dict.fromkeys(content_bigrams(plain)) if bg in idf], idf


def _weighted(topic: list[str], idf: dict[str, float], text: str) -> float:
    total = sum(idf[b] for b in topic)
    return sum(idf[b] for b in topic if b in text) / total if total else 1.0


def question_entities(question: str, content: ContentSet) -> list[str]:
    """The content's names of people and organisations that the question mentions."""
    names = [e for e in content.entities if e in question]
    return [e for e in names if not any(e != other and e in other for other in names)]


def _text(passages: list[Passage]) -> str:
    return "".join(p.section + p.text for p in passages)


@dataclass
class _Reading:
    """One answer read against one question: which passages hold it, and which are about the question."""

    body: str
    chk: _Checkable
    topic: list[str]
    idf: dict[str, float]
    # Everyone and everything the question names must stand in one supporting passage, or an answer
    # that only repeats the question ("是的，刘庆峰是360集团的创始人") would pass on shared words.
    named: list[str]
    min_topic: float

    def holds(self, p: Passage) -> bool:
        """One passage holds both whom the question names and some of the answer's claims."""
        claims_ok = not self.chk.claims or _coverage(self.chk.claims, _text([p])) >= 0.3
        # An answer that only repeats the question needs every name in this one passage; one with
        # claims of its own may draw on several passages, each about someone the question names.
        names_ok = (any if self.chk.claims else all)(n in _text([p]) for n in self.named) if self.named else True
        return claims_ok and names_ok

    def anchored(self, p: Passage) -> bool:
        """A passage that holds the answer is also about what the question asks (its rarer words)."""
        return self.holds(p) and _weighted(self.topic, self.idf, _text([p])) >= self.min_topic

    def choose(self, cited: list[Passage], passages: tuple[Passage, ...], min_support: float) -> list[Passage]:
        """The passages to check against and cite: the model's markers when they hold the answer, else
        the passages that hold its claims, numbers and names, about what the question asks."""
        chk = self.chk

        def good(ps: list[Passage]) -> bool:
            claims_ok = not chk.claims or _coverage(chk.claims, _text(ps)) >= min_support
            on_topic = [p for p in ps if self.anchored(p)]
            return (claims_ok and bool(on_topic) and all(n in _text(ps) for n in self.named)
                    and _hard_share(chk.hard, self.body, _text(on_topic)) == 1.0)

        useful = [p for p in cited if not chk.claims or _coverage(chk.claims, _text([p])) >= 0.3]
        if useful and good(useful):
            return useful
        ranked = sorted(passages, key=lambda p: -(_coverage(chk.claims, _text([p])) + _weighted(
            self.topic, self.idf, _text([p])) + _hard_share(chk.hard, self.body, _text([p]))))
        return ranked[:1] if good(ranked[:1]) else ranked[:2]


def support(answer: str, question: str, content: ContentSet, cited: list[Passage], min_support: float,
            min_topic: float = 0.45, off: frozenset[str] = frozenset()) -> Support:
    """Check the answer against its cited passages (or the best ones) and choose the citations to show.

    The cited text must hold the answer's own claims (share >= min_support), one passage holding them
    beside everyone the question names, and its numbers and names must stand in a passage about the
    question (its terms, weighted by rarity, covered >= min_topic). A true sentence about another person
    or another fact does not support the answer. Rules named in `off` are not run.
    """
    body = _body(answer)
    if not HAN_RUN.search(body) and not latin_names(body) and "language" not in off:  # "OpenAI" is a name
        return Support(False, 0.0, [], [], "language: the draft is not in the content's language")
    chk = _checkable(body, question, content.whole)
    topic, idf = _topic(question, content)
    read = _Reading(body, chk, topic, idf, question_entities(question, content), min_topic)
    useful = read.choose(cited, content.passages, min_support)
    joined = _text(useful)
    score = _coverage(chk.claims, joined) if chk.claims else 1.0

    def fail(reason: str, unsupported: list[str]) -> Support:
        return Support(False, score, useful, unsupported, reason)

    if chk.claims and score < min_support and "coverage" not in off:
        return fail(f"coverage: only {score:.0%} of the answer is in the cited text",
                    [c for c in chk.claims if c not in joined])
    if "topic" not in off and (not any(map(read.anchored, useful)) or not all(n in joined for n in read.named)):
        return fail("topic: no cited passage holds the answer and is about what the question asks", topic)
    # Numbers and names must stand in a passage about the question, not in any passage that has them.
    on_topic = _text([p for p in useful if read.anchored(p)] or [p for p in useful if read.holds(p)])
    if "verbatim" not in off and (missing_hard := _not_verbatim(body, on_topic, chk.hard)):
        return fail(f"verbatim: not in the cited text: {', '.join(missing_hard)}", missing_hard)
    return Support(True, score, useful, [c for c in chk.claims if c not in joined])


_LONGEST_QUOTE = 160  # characters; a longer sentence is quoted by its clause


def _parts(sentence: str) -> list[str]:
    """The sentence, or its clauses (at ；, then at ，) where it runs past _LONGEST_QUOTE characters."""
    if len(sentence) <= _LONGEST_QUOTE:
        return [sentence]
    clauses = sentences.CHECKED_CLAUSE.findall(sentence)
    return [c for clause in clauses for c in (sentences.CHECKED_COMMA.findall(clause) if len(clause) > _LONGEST_QUOTE
                                               else [clause])]


def source_sentence(answer: str, question: str, content: ContentSet, texts: list[str]) -> tuple[int, str] | None:
    """(index into `texts`, sentence): the cited sentence holding most of the answer's own claims, numbers
    and names and of what the question asks, quoted under the answer in the source's own words
    so the user can check it; None when no sentence holds any of them or the answer already quotes it."""
    body = _body(answer)
    chk = _checkable(body, question, content.whole)
    topic, idf = _topic(question, content)
    scored: list[tuple[float, float, int, str]] = []
    for i, text in enumerate(texts):
        for m in sentences.CHECKED_SENTENCE.finditer(text):
            sentence = m.group(0).strip().lstrip("”’」』）)】，,、；; ")  # the quote closing the last one
            parts = _parts(sentence)
            for part in map(str.strip, parts):
                held = _coverage(chk.claims, part) + (_hard_share(chk.hard, body, part) if chk.hard else 0.0)
                scored.append((held, _weighted(topic, idf, part), i, part))
    if not scored:
        return None
    # What the question asks breaks ties and outweighs a stray shared word; the answer's claims lead.
    held, about, i, sentence = max(scored, key=lambda s: s[0] + s[1] / 2)
    if (held == 0 if chk.claims or chk.hard else about == 0) or holds_span(body, sentence):
        return None
    return i, sentence


def decisive(answer: str, question: str, content: ContentSet) -> bool:
    """Whether the checks can judge this start of an answer on its own, as they must before it is shown
    while the draft still streams: it adds words, numbers or names of its own ("是的。" adds none)."""
    chk = _checkable(_body(answer), question, content.whole)
    return bool(chk.claims or chk.hard - numbers(question) - latin_names(question, every_word=True))


def _hard_share(hard: set[str], body: str, text: str) -> float:
    """The share of the answer's numbers and Latin-script words that stand in `text` (1.0 when it has none)."""
    if not hard:
        return 1.0
    body_numbers, low = numbers(body), text.lower()
    return sum(1 for h in hard if (number_in(h, text) if h in body_numbers else h in low)) / len(hard)


def _not_verbatim(body: str, on_topic: str, hard: set[str]) -> list[str]:
    """The answer's numbers and Latin-script words that the passages about the question (`on_topic`) do not
    hold as they stand, and its numbers with another unit than the text gives them (约12周 for 约12万张)."""
    body_numbers = numbers(body)
    missing = sorted(h for h in hard if not (number_in(h, on_topic) if h in body_numbers else h in on_topic.lower()))
    return missing + unit_mismatches(body, on_topic)
