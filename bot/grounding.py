"""Deciding answer or decline from the text, not from the model's goodwill, and choosing true citations.

Measured on this machine, the 1.5B model answers a "does the text answer this?" self-check with yes for
every question, and invents answers to most questions the content does not cover. So the decision rests
on evidence in the text, each check a named rule (config.GROUNDING_RULES; `grounding.rules_off` switches
one off to measure it; README, Grounding, has what each one did on content it was not tuned on):

1. Before generation (`question_evidence`): a question none of whose key terms occurs in the content
   (`no_key_term`), or that opens with a noun the content never uses (`subject_missing`: 元皇后祖籍何处),
   is declined at once, without spending model time.
2. After generation (`support`): the answer's own claims (words that neither repeat the question nor
   frame the answer, units restated in another spelling excepted) must stand in the passages it cites
   (`coverage`), one of them holding the claims beside whom the question names and about what it asks
   (`topic`); numbers and Latin-script names verbatim in such a passage (`verbatim`, `question_anchor`);
   no question noun the content lacks asserted (`unknown_noun`); a wh-question is not answered with its
   own words (`restates`); shape checks for yes/no (`polarity`), what-kind (`kind`) and how-many
   (`quantity`) questions; and the sentence holding the claims says something of what was asked
   (`claim_sentence`).
3. The model's own "the content does not say" is honoured (`model_declined`, with the phrases of
   prompts/model_declines.txt).

The engine runs `support` on each sentence end of a streaming draft, so a user only ever sees a checked
prefix (bot/release.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from bot.citations import strip_markers
from bot.knowledge import ContentSet
from bot.shapes import names_kind, polarity_flipped
from bot.texts import language
from bot.translation import map_english
from bot.types import Passage
from bot.words import (
    FRAME_NOUNS,
    HAN_RUN,
    asks_quantity,
    asks_what,
    content_bigrams,
    has_numeral,
    key_terms,
    kind_noun,
    latin_names,
    noun_terms,
    number_in,
    numbers,
    posseg,
    restated_units,
    without_frame_words,
)

_INJECTION = re.compile(
    r"(忽略|无视|忘记|忘掉).{0,8}(指令|指示|规则|提示|设定|要求)|(系统|system)\s*(提示|prompt)|"
    r"ignore (all |any |the )?(previous|prior|above|earlier)? ?(instructions|rules|prompts?)|"
    r"(reveal|print|show|repeat|output).{0,20}(prompt|instructions)|jailbreak|developer mode|"
    r"钓鱼|phishing|恶意代码|攻击代码|malware",
    re.IGNORECASE,
)


@dataclass
class Evidence:
    """How well the question's key terms are found in the content."""

    terms: list[str]
    found: list[str]
    missing: list[str]
    # The question with English names mapped to the content's, for retrieval.
    query: str = ""
    # Words the question asks about that the content never uses (e.g. a hometown, a market value).
    missing_terms: list[str] = field(default_factory=list)
    # The question's first noun, its subject (元皇后, 亚硫酸盐), when the content never uses it.
    subject_missing: str = ""

    @property
    def none_found(self) -> bool:
        """Not one of the question's terms occurs in the content (an English question with no term the
        content shares counts too); words that only frame the question do not count either way."""
        return not self.found and not all(t in FRAME_NOUNS for t in self.missing or ["-"])

    def unanswerable(self, off: frozenset[str] = frozenset()) -> str | None:
        """Why no answer can come from the content, before any generation, or None (`off`: rules not run)."""
        if self.none_found and "no_key_term" not in off:
            return f"no_key_term: none of {', '.join(self.missing)} is in the content"
        if self.subject_missing and "subject_missing" not in off:
            return f"subject_missing: the question is about {self.subject_missing}, which the content never names"
        return None


@dataclass
class Support:
    """Which passages support an answer, and how much of the answer they cover."""

    supported: bool
    score: float
    passages: list[Passage]
    unsupported: list[str]
    reason: str = ""


def is_injection(question: str) -> bool:
    """A request to drop the rules, reveal the prompt, or produce something harmful."""
    return bool(_INJECTION.search(question))


def model_declined(answer: str, declines: re.Pattern[str]) -> bool:
    """The model said the article does not cover the question: `declines` (Prompts.declines) occurs in it."""
    return bool(declines.search(answer))


def _occurs(term: str, haystack: str) -> bool:
    return term.lower() in haystack


def _terms_of(question: str, content: ContentSet) -> tuple[list[str], list[str]]:
    """(key terms, nouns) of a question; an English one counts only the terms it shares with the content.

    English words without a mapping (aliases.yaml, pinyin) cannot be judged against Chinese text, so
    they neither count as evidence nor as missing.
    """
    mapped = map_english(question, content)
    if language(question) == "zh":
        return key_terms(mapped), noun_terms(mapped)
    named = re.findall(r"\(([^)]*)\)", mapped)
    latin = sorted(w for w in latin_names(question) | numbers(question) if w in content.whole)
    return list(dict.fromkeys(named + latin)), named


def shared_spans(question: str, whole: str, min_len: int = 3) -> list[str]:
    """Longest Chinese substrings (three characters or more) of the question that occur in the content.

    They catch names the word segmenter splits or does not know (周鸿祎).
    """
    spans: list[str] = []
    for run in HAN_RUN.findall(question):
        i = 0
        while i <= len(run) - min_len:
            j = i + min_len
            if run[i:j] not in whole:
                i += 1
                continue
            while j < len(run) and run[i : j + 1] in whole:
                j += 1
            spans.append(run[i:j])
            i = j
    return spans


def question_evidence(question: str, content: ContentSet, context: str = "") -> Evidence:
    """Which key terms of the question (plus follow-up context) occur in the content, and where together."""
    whole = content.whole
    terms, nouns = _terms_of(question, content)
    if context and len(terms) < 2:
        more, _ = _terms_of(context, content)
        terms += [t for t in more if t not in terms]
    found = [t for t in terms if _occurs(t, whole)]
    found += [t for t in shared_spans(question, whole) if t not in found and not any(t in f for f in found)]
    missing = [t for t in terms if t not in found and not any(t in f for f in found)]
    missing_terms = [t for t in missing if t in nouns and t not in FRAME_NOUNS]
    query = map_english(question, content) + (" " + context if context else "")
    # Whatever a question asks about its subject, an answer about another subject is wrong. The subject
    # is a noun the question opens with (元皇后祖籍何处); a noun further in may be a facet the content
    # words differently. It is judged on the question itself, not on a follow-up's context.
    subject = next((n for n in nouns if HAN_RUN.fullmatch(n) and n not in FRAME_NOUNS), "")
    opens = 0 <= question.strip().find(subject) <= 2
    gone = subject if subject and opens and subject in missing else ""
    return Evidence(terms, found, missing, query, missing_terms, gone)


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


def _coverage(items: list[str], text: str) -> float:
    return sum(1 for c in items if c in text) / len(items) if items else 0.0


def _topic(question: str, content: ContentSet, frames: bool = False) -> tuple[list[str], dict[str, float]]:
    """The question's Chinese bigrams that occur in the content, and their IDF weights. Frame nouns (名字,
    问题, 原因) say what kind of answer is wanted, not what it is about: left out unless `frames`."""
    idf = content.bigram_idf
    plain = map_english(question, content)
    plain = plain if frames else _FRAMES.sub("，", plain)
    return [bg for bg in dict.fromkeys(content_bigrams(plain)) if bg in idf], idf


_FRAMES = re.compile("|".join(sorted((re.escape(w) for w in FRAME_NOUNS if HAN_RUN.fullmatch(w)), key=len,
                                      reverse=True)))


def _weighted(topic: list[str], idf: dict[str, float], text: str) -> float:
    total = sum(idf[b] for b in topic)
    return sum(idf[b] for b in topic if b in text) / total if total else 1.0


def question_entities(question: str, content: ContentSet) -> list[str]:
    """The content's names of people and organisations that the question mentions."""
    names = [e for e in content.entities if e in question]
    return [e for e in names if not any(e != other and e in other for other in names)]


def _text(passages: list[Passage]) -> str:
    return "".join(p.section + p.text for p in passages)


def support(answer: str, question: str, content: ContentSet, cited: list[Passage], min_support: float,
            missing_terms: list[str] | tuple[str, ...] = (), min_topic: float = 0.45,
            off: frozenset[str] = frozenset()) -> Support:
    """Check the answer against its cited passages (or the best ones) and choose the citations to show.

    The cited text must hold the answer's own claims (share >= min_support), one passage holding them
    beside everyone the question names, and its numbers and names must stand in a passage about the
    question (its terms, weighted by rarity, covered >= min_topic). A true sentence about another person
    or another fact does not support the answer. Rules named in `off` are not run.
    """
    body = strip_markers(answer)
    if not HAN_RUN.search(body) and not latin_names(body) and "language" not in off:  # "OpenAI" is a name
        return Support(False, 0.0, [], [], "language: the draft is not in the content's language")
    chk = _checkable(body, question, content.whole)
    topic, idf = _topic(question, content)
    # Everyone and everything the question names must stand in one supporting passage, or an answer
    # that only repeats the question ("是的，刘庆峰是360集团的创始人") would pass on shared words.
    named = question_entities(question, content)

    def holds(p: Passage) -> bool:
        """One passage holds both whom the question names and some of the answer's claims."""
        claims_ok = not chk.claims or _coverage(chk.claims, _text([p])) >= 0.3
        # An answer that only repeats the question needs every name in this one passage; one with
        # claims of its own may draw on several passages, each about someone the question names.
        names_ok = (any if chk.claims else all)(n in _text([p]) for n in named) if named else True
        return claims_ok and names_ok

    def anchored(p: Passage) -> bool:
        """A passage that holds the answer is also about what the question asks (its rarer words)."""
        return holds(p) and _weighted(topic, idf, _text([p])) >= min_topic

    def good(ps: list[Passage]) -> bool:
        claims_ok = not chk.claims or _coverage(chk.claims, _text(ps)) >= min_support
        on_topic = [p for p in ps if anchored(p)]
        return (claims_ok and bool(on_topic) and all(n in _text(ps) for n in named)
                and _hard_share(chk.hard, body, _text(on_topic)) == 1.0)

    useful = [p for p in cited if not chk.claims or _coverage(chk.claims, _text([p])) >= 0.3]
    if not useful or not good(useful):
        # The model's markers are a hint, not the citation: the passages that hold the answer's claims,
        # numbers and names, about what the question asks, are chosen instead.
        ranked = sorted(content.passages, key=lambda p: -(_coverage(chk.claims, _text([p])) + _weighted(
            topic, idf, _text([p])) + _hard_share(chk.hard, body, _text([p]))))
        useful = ranked[:1] if good(ranked[:1]) else ranked[:2]
    joined = _text(useful)
    score = _coverage(chk.claims, joined) if chk.claims else 1.0

    def fail(reason: str, unsupported: list[str]) -> Support:
        return Support(False, score, useful, unsupported, reason)

    # "蒋家旻原本叫蒋家旻": an answer that only rearranges the question's words tells nothing it asked for.
    if not chk.claims and not chk.hard - _asked_anchors(question) and asks_what(question) and "restates" not in off:
        return fail("restates: the answer only repeats the question", [])
    if chk.claims and score < min_support and "coverage" not in off:
        return fail(f"coverage: only {score:.0%} of the answer is in the cited text",
                    [c for c in chk.claims if c not in joined])
    if "topic" not in off and (not any(anchored(p) for p in useful) or not all(n in joined for n in named)):
        return fail("topic: no cited passage holds the answer and is about what the question asks", topic)
    # Numbers and names must stand in a passage about the question, not in any passage that has them.
    on_topic = _text([p for p in useful if anchored(p)] or [p for p in useful if holds(p)])
    paired = partial(_paired, content=content, topic=topic, idf=idf, min_topic=min_topic)
    if misstated := _misstated(body, question, content, joined, on_topic, chk.hard, missing_terms, paired, off):
        return fail(*misstated)
    if "claim_sentence" not in off and (why := _off_question(question, content, named, topic, chk, body, useful)):
        return fail(why, [])
    return Support(True, score, useful, [c for c in chk.claims if c not in joined])


_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?]?")


def _off_question(question: str, content: ContentSet, named: list[str], topic: list[str], chk: _Checkable,
                  body: str, useful: list[Passage]) -> str | None:
    """Why the sentence that holds the answer's claims does not answer the question, or None.

    The right passage can hold the wrong fact (a question about a birth year answered with the year of a
    prize). So the cited sentence with most of the answer's own claims, numbers and names must also hold
    something the question asks about beyond the names it mentions: a word of the question, or one of its
    numbers or Latin names. Questions whose other words the content never uses cannot be judged and pass.
    """
    # Names are in every sentence about them: no evidence. A word holding a name (赛里木湖) counts whole.
    words = [w for run in HAN_RUN.findall(question) for w, _ in posseg(run)]
    names = {bg for n in named for w in [n, *(w for w in words if n in w)] for bg in content_bigrams(w)}
    asked = [bg for bg in topic if bg not in names]
    # A frame noun (建议, 原因) may show which sentence answers, but a question of names and frame nouns
    # alone cannot be judged (赛里木湖最深的地方…).
    framed = [bg for bg in _topic(question, content, frames=True)[0] if bg not in names]
    asked_numbers = (numbers(question) | latin_names(question)) & content.anchors
    if not (chk.claims or chk.hard) or not (asked or asked_numbers):
        return None
    sentences = [m.group(0) for p in useful for m in _SENTENCE.finditer(p.text)]
    scores = [_coverage(chk.claims, t) if not chk.hard else (_coverage(chk.claims, t) + _hard_share(
        chk.hard, body, t)) / 2 for t in sentences]
    top = max(scores, default=0.0)
    # The sentences the answer draws on: a long answer spreads its claims over several of them.
    best = [t for t, score in zip(sentences, scores, strict=True) if score > 0 and score >= top / 2]
    if any(bg in t for t in best for bg in framed) or any(
            number_in(n, t) or n in t.lower() for t in best for n in asked_numbers):
        return None
    return "claim_sentence: the sentence holding the answer says nothing of what the question asks"


def _asked_anchors(question: str) -> set[str]:
    """The question's own numbers and Latin-script words, as an answer's would be read."""
    return numbers(question) | latin_names(question, every_word=True)


def _paired(anchor: str, *, content: ContentSet, topic: list[str], idf: dict[str, float], min_topic: float) -> bool:
    """The content pairs this number or name with what the question asks: a passage holds both."""
    return any(anchor in numbers(t) | latin_names(t) and _weighted(topic, idf, t) >= min_topic
               for t in (p.section + p.text for p in content.passages))


def _hard_share(hard: set[str], body: str, text: str) -> float:
    """The share of the answer's numbers and Latin-script words that stand in `text` (1.0 when it has none)."""
    if not hard:
        return 1.0
    body_numbers, low = numbers(body), text.lower()
    return sum(1 for h in hard if (number_in(h, text) if h in body_numbers else h in low)) / len(hard)


def _misstated(body: str, question: str, content: ContentSet, joined: str, on_topic: str, hard: set[str],
               missing_terms: list[str] | tuple[str, ...], paired: Callable[[str], bool],
               off: frozenset[str]) -> tuple[str, list[str]] | None:
    """The first way the answer goes beyond or against the cited text `joined`: (reason, words), or None."""
    body_numbers = numbers(body)
    missing_hard = sorted(h for h in hard
                          if not (number_in(h, on_topic) if h in body_numbers else h in on_topic.lower()))
    if missing_hard and "verbatim" not in off:
        return f"verbatim: not in the cited text: {', '.join(missing_hard)}", missing_hard
    # Numbers and Latin-script names never overlap, so one set of the content's serves both.
    # A number or name of the question that the content pairs with the question's topic (从0到1) must be
    # in the cited text; one the content never pairs with it (a tag like "第1问") says nothing.
    anchors = (numbers(question) | latin_names(question)) & content.anchors
    unanchored = sorted(a for a in anchors if a not in numbers(joined) | latin_names(joined) and paired(a))
    if unanchored and "question_anchor" not in off:
        return f"question_anchor: the cited text does not mention {', '.join(unanchored)}", unanchored
    # Restating a question word the content never uses ("文心一言是恒银…") asserts what the text cannot
    # support; this also fails an answer that only repeats a question's premise, the safer mistake.
    asserted = [t for t in missing_terms if t.lower() in body.lower()]
    if asserted and "unknown_noun" not in off:
        return f"unknown_noun: the answer states {', '.join(asserted)}, which the content never uses", asserted
    if "polarity" not in off and (flipped := polarity_flipped(body, question, joined)):
        return f"polarity: the cited text says the opposite about {flipped}", [flipped]
    noun = kind_noun(question)
    if noun and noun in joined and not names_kind(body, question, noun, joined) and "kind" not in off:
        return f"kind: the answer does not say which {noun}, as the cited text does", [noun]
    if asks_quantity(question) and not has_numeral(body) and "quantity" not in off:
        return "quantity: the question asks for a number and the answer gives none", []
    return None
