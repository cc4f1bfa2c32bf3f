"""What a question asks and whether the content can answer it at all, judged before any generation.

A question none of whose key terms occurs in the content (`no_key_term`) is declined without spending
model time; so is a prompt injection or harmful request (`injection`). English names are mapped to the
content's Chinese ones first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.content.knowledge import ContentSet
from bot.grounding.translation import map_english
from bot.text.phrases import language
from bot.text.words import FRAME_NOUNS, HAN_RUN, key_terms, latin_names, noun_terms, numbers

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

    @property
    def none_found(self) -> bool:
        """Not one of the question's terms occurs in the content (an English question with no term the
        content shares counts too); words that only frame the question do not count either way."""
        return not self.found and not all(t in FRAME_NOUNS for t in self.missing or ["-"])

    def unanswerable(self, off: frozenset[str] = frozenset()) -> str | None:
        """Why no answer can come from the content, before any generation, or None (`off`: rules not run)."""
        if self.none_found and "no_key_term" not in off:
            return f"no_key_term: none of {', '.join(self.missing) or 'its words'} is in the content"
        return None


def is_injection(question: str) -> bool:
    """A request to drop the rules, reveal the prompt, or produce something harmful."""
    return bool(_INJECTION.search(question))


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
    return Evidence(terms, found, missing, query, missing_terms)
