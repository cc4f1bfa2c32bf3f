"""Ranking content for a question: BM25 over passages or sentences, and the content's sentences.

BM25 runs over jieba words plus character bigrams (pure Python): the content is small, it needs no index
on disk, and bigrams cover the two-character words SQLite's trigram tokenizer cannot match. Sentences are
what the extractive path picks from and copies out of (bot/answering/extraction.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.text import sentences
from bot.text.words import bare, terms
from bot.types import Passage

# A candidate sentence ends as sentences.CANDIDATE says; one past LONG_SENTENCE characters is cut at ；; and
# then at ，, so that a candidate stays short enough to read in a few dozen tokens.
LONG_SENTENCE = 160
# A sentence this short ("周鸿祎如此解释。", "赵晓光说。") says who said the one before it: they are one candidate.
SHORT_SENTENCE = 8


def idf_weights(docs: Sequence[Iterable[str]]) -> dict[str, float]:
    """BM25's inverse document frequency of every term, given each document's distinct terms."""
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(doc)
    n = len(docs)
    return {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}


class Bm25:
    """Okapi BM25 over pre-tokenised documents."""

    def __init__(self, docs: list[list[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tfs = [Counter(d) for d in docs]
        self.lens = [len(d) for d in docs]
        self.avg = (sum(self.lens) / len(docs)) if docs else 1.0
        self.idf = idf_weights([tf.keys() for tf in self.tfs])

    def scores(self, query: list[str]) -> list[float]:
        """BM25 score of every document for the query terms."""
        out = []
        for tf, length in zip(self.tfs, self.lens, strict=True):
            s = 0.0
            for t in set(query):
                f = tf.get(t)
                if f:
                    norm = f + self.k1 * (1 - self.b + self.b * length / self.avg)
                    s += self.idf[t] * f * (self.k1 + 1) / norm
            out.append(s)
        return out


@dataclass(frozen=True)
class Sentence:
    """One sentence of the content: its text, its passage and its place in the whole content."""

    n: int  # position among all the content's sentences
    passage: Passage
    text: str


def split_sentences(text: str) -> list[str]:
    """A passage's sentences; a very short one joined to the one before it (an attribution after a quote),
    a very long one cut into its clauses (at ；, then at ，)."""
    out: list[str] = []
    for m in sentences.CANDIDATE.finditer(text):
        sentence = m.group(0).strip()
        if len(bare(sentence)) < 2:
            continue
        if out and len(bare(sentence)) <= SHORT_SENTENCE and len(out[-1]) + len(sentence) <= LONG_SENTENCE * 2:
            out[-1] += sentence
            continue
        out.extend(_short(sentence))
    return out


def _short(sentence: str) -> list[str]:
    if len(sentence) <= LONG_SENTENCE:
        return [sentence]
    parts = [c.strip() for c in sentences.CANDIDATE_CLAUSE.findall(sentence) if c.strip()]
    if len(parts) == 1:
        parts = [c.strip() for c in sentences.CANDIDATE_COMMA.findall(sentence) if c.strip()]
    # Clauses are joined back up to the limit: a candidate is as long as it may be, no longer.
    joined: list[str] = []
    for part in parts:
        if joined and len(joined[-1]) + len(part) <= LONG_SENTENCE:
            joined[-1] += part
        else:
            joined.append(part)
    return joined


class SentenceIndex:
    """Every sentence of the content with BM25 over them; built once per content version."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.sentences = tuple(Sentence(i, p, t) for i, (p, t) in enumerate(
            (p, t) for p in passages for t in split_sentences(p.text)))
        self._bm25 = Bm25([terms(s.passage.section + " " + s.text) for s in self.sentences])

    def candidates(self, query: str, k: int, within: Sequence[Passage] | None = None) -> list[Sentence]:
        """The k sentences that best match `query`, best first; only sentences of `within` when given.

        Best first: the model leans towards the first label, so that lean follows the ranking rather than
        the page (README, Grounding). The best one's neighbours used to come too: they found no answer the
        three best missed and cost a fifth of the prompt (measured, same README section)."""
        scores = self._bm25.scores(terms(query))
        allowed = None if within is None else {p.id for p in within}
        ranked = [i for i in sorted(range(len(scores)), key=lambda i: -scores[i])
                  if scores[i] > 0 and (allowed is None or self.sentences[i].passage.id in allowed)][:k]
        return [self.sentences[i] for i in ranked]
