"""What the content is missing: the declined and 👎-rated questions grouped into topics, most asked first,
as /gaps shows them and the digest sends them; and the re-asking of a topic's questions once content is added."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.log.ratings import Gap
from bot.text import embedding, phrases

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> unit-length row vectors
MAX_GROUPED = 1500  # distinct wordings grouped by meaning (about 2 s); rarer ones only by their text
SHOWN = 10  # topics listed (the rest counted in one line)
EXAMPLES = 2  # wordings shown per topic
REASKED = 3  # a topic's wordings asked again after content was added for it
MAX_REASKED = 10  # ... and at most this many in all (each a model run, queued with the readers' questions)


@dataclass
class Topic:
    """Questions taken for one topic: their wordings (the most asked first), how often, the closest sentence."""

    wordings: list[str] = field(default_factory=list)
    asked: int = 0
    closest: str = ""
    reasons: list[str] = field(default_factory=list)
    declined: int = 0

    def line(self, n: int, lang: str) -> str:
        """`n. 3× wording / wording — closest: 「…」` (no one's name: gaps show questions, not who asked)."""
        shown = " / ".join(self.wordings[:EXAMPLES])
        text = f"{n}. {self.asked}× {shown}"
        if self.reasons:
            text += phrases.message("gap_reason", lang, reason=self.reasons[0])
        closest = self.closest if len(self.closest) <= 60 else self.closest[:58] + "…"
        return text + (phrases.message("gap_closest", lang, sentence=closest) if closest else
                       phrases.message("gap_nothing_close", lang))


def average_link(similar: np.ndarray, threshold: float) -> list[int]:
    """Each row's group: the two most similar groups merged while their average similarity (over every pair
    of their members) reaches `threshold` (single link chains unrelated questions through neighbours)."""
    sim = similar.astype(np.float64, copy=True)
    n = len(sim)
    np.fill_diagonal(sim, -np.inf)
    size, label = np.ones(n), np.arange(n)
    while n > 1:
        i, j = divmod(int(np.argmax(sim)), n)
        if sim[i, j] < threshold:
            break
        merged = (size[i] * sim[i] + size[j] * sim[j]) / (size[i] + size[j])  # Lance-Williams, average
        sim[i], sim[:, i] = merged, merged
        sim[j], sim[:, j], sim[i, i] = -np.inf, -np.inf, -np.inf
        size[i] += size[j]
        label[label == j] = i
    return label.tolist()


def group(gaps: Sequence[Gap], threshold: float, encode: Encoder = embedding.encode) -> list[Topic]:
    """Gaps in topics by meaning (sentence vectors, average link at `threshold` cosine), the most asked first;
    past MAX_GROUPED distinct wordings the rarest ones are grouped only by their exact text (time: n³)."""
    wordings: dict[str, list[Gap]] = {}
    for gap in gaps:
        wordings.setdefault(" ".join(gap.question.split()), []).append(gap)
    texts = sorted(wordings, key=lambda t: -len(wordings[t]))
    grouped = texts[:MAX_GROUPED]
    vectors = encode(grouped) if len(grouped) > 1 else np.zeros((len(grouped), 1))
    labels = average_link(vectors @ vectors.T, threshold)
    labels += list(range(len(grouped), len(texts)))
    topics: dict[int, Topic] = {}
    for text, label in zip(texts, labels, strict=True):
        topic = topics.setdefault(label, Topic())
        asked = wordings[text]
        topic.wordings.append(text)
        topic.asked += len(asked)
        topic.declined += sum(g.declined for g in asked)
        topic.closest = topic.closest or next((g.closest for g in asked if g.closest), "")
        topic.reasons += [g.reason for g in asked if g.reason]
    return sorted(topics.values(), key=lambda t: (-t.asked, t.wordings[0]))


def report(topics: list[Topic], days: float, lang: str, *, hint: str = "gaps_hint") -> str:
    """The /gaps text: a heading, one numbered line per topic, how to add content for them (`hint`)."""
    if not topics:
        return phrases.message("no_gaps", lang, days=f"{days:g}")
    asked = sum(t.asked for t in topics)
    lines = [phrases.message("gaps_heading", lang, days=f"{days:g}", asked=asked, topics=len(topics))]
    lines += [t.line(n, lang) for n, t in enumerate(topics[:SHOWN], 1)]
    if len(topics) > SHOWN:
        lines.append(phrases.message("gaps_more", lang, n=len(topics) - SHOWN))
    lines.append(phrases.message(hint, lang))
    return "\n".join(lines)


def questions_of(topics: list[Topic]) -> list[list[str]]:
    """What a reply to a /gaps list refers to: each listed topic's wordings (to re-ask)."""
    return [t.wordings[:REASKED] for t in topics[:SHOWN]]


def chosen(listed: list[list[str]], pick: str) -> list[str]:
    """The questions a reply to a gaps list is about: the topics its caption or text numbers ("2", "1 3"),
    or every listed one."""
    numbers = [int(w) for w in re.findall(r"\d{1,3}", pick, re.ASCII)]
    picked = [listed[n - 1] for n in numbers if 0 < n <= len(listed)] or listed
    return [q for topic in picked for q in topic]


def chart(topics: list[Topic], title: str) -> bytes:
    """The most-asked topics as horizontal bars (numbered as in the text: fonts for Chinese may be missing)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    shown = topics[:SHOWN][::-1]
    fig: Any = Figure(figsize=(8, 0.5 * len(shown) + 1.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    names = [f"[{len(shown) - k}]" for k in range(len(shown))]
    ax.barh(names, [t.declined for t in shown], color="#c62828", label="declined")
    ax.barh(names, [t.asked - t.declined for t in shown], left=[t.declined for t in shown], color="#ef8c00",
            label="answered, rated down")
    ax.set_title(title)
    ax.set_xlabel("times asked")
    ax.legend(loc="lower right")
    ax.xaxis.get_major_locator().set_params(integer=True)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
