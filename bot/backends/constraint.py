"""Copying under a constraint: only text that occurs in a source sentence may be generated.

The embedded backend masks the logits: a token is allowed when the answer so far plus its bytes still
occurs in the source (`Pieces.allowed`). An OpenAI-compatible server gets the same constraint as a GBNF
grammar (`grammar`), which llama.cpp's server and llama-cpp-python's accept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.backends.base import Extraction, Picked
from bot.text import sentences


class Pieces:
    """Every token's bytes, looked up by bytes: which tokens continue an answer inside a source text."""

    def __init__(self, n_vocab: int, piece: Callable[[int], bytes]) -> None:
        self.by_bytes: dict[bytes, list[int]] = {}
        self.of: list[bytes] = []
        for token in range(n_vocab):
            b = piece(token)
            self.of.append(b)
            if b:
                self.by_bytes.setdefault(b, []).append(token)
        self.longest = max((len(b) for b in self.by_bytes), default=1)

    def starting(self, prefix: bytes) -> list[int]:
        """Tokens whose bytes start with `prefix` (a closing quote, and the punctuation glued to it)."""
        return [t for b, ts in self.by_bytes.items() if b.startswith(prefix) for t in ts] if prefix else []

    def allowed(self, answer: bytes, source: bytes) -> list[int]:
        """Tokens after which `answer` still occurs in `source` (any start when the answer is empty)."""
        if answer:
            ends, i = [], source.find(answer)
            while i >= 0:
                ends.append(i + len(answer))
                i = source.find(answer, i + 1)
        else:
            ends = list(range(len(source)))
        out: set[int] = set()
        for p in set(ends):
            for n in range(1, min(self.longest, len(source) - p) + 1):
                out.update(self.by_bytes.get(source[p : p + n], ()))
        return sorted(out)


_CLOSING = {"“": "”", "「": "」", "‘": "’", '"': '"', "(": ")", "（": "）"}
# `Copying` may end on any token that opens with the closing quote ("”。" is often likelier than "”"
# alone): the grammar lets the quote take one mark after it, so a server's ways to end are the same.
AFTER_CLOSE = "[，,。.；;：:！!？?、\\n]"


def closing(lead: str) -> str:
    """What closes the bracket or quote a lead ends with ("" when it opens none)."""
    return _CLOSING.get(lead[-1:], "")


def complete_utf8(data: bytes) -> bool:
    """Whether `data` ends on a whole character (an answer may not stop inside one)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _literal(text: str) -> str:
    """A GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def grammar(labels: Sequence[str], sources: Sequence[str], lead: str) -> str:
    """GBNF for `label lead substring-of-its-source`, one alternative per source, the substring inside one
    clause as `Copying` copies it (then the closing quote, if the lead opened one, and a mark after it).

    Rule s<j>x<i> is a non-empty prefix of the clause text from character i on, so the alternatives over
    every start are every non-empty substring; the grammar grows with the sources' length, not its square.
    """
    lines, alts = [], []
    for j, (label, source) in enumerate(zip(labels, sources, strict=True)):
        starts: list[str] = []
        for c, clause in enumerate(s for s in sentences.COPY_CLAUSE_END.split(source) if s.strip()):
            for i, ch in enumerate(clause):
                rest = f" s{j}c{c}x{i + 1}?" if i + 1 < len(clause) else ""
                lines.append(f"s{j}c{c}x{i} ::= {_literal(ch)}{rest}")
                starts.append(f"s{j}c{c}x{i}")
        if not starts:
            continue
        lines.append(f"sub{j} ::= " + " | ".join(starts))
        close = f" ({_literal(closing(lead))} {AFTER_CLOSE}?)?" if closing(lead) else ""
        alts.append(f"{_literal(label + lead)} sub{j}{close}")
    return "\n".join([f"root ::= {' | '.join(alts)}", *lines]) + "\n"


@dataclass
class Step:
    """What a copying request does next: feed `feed` (empty: it is done), announce `picked` if set,
    and show `text` (bytes of the copied token)."""

    feed: list[int]
    picked: Picked | None = None
    text: bytes = b""


class Copying:
    """One extracting request on the owner thread: reads the labels' probabilities at the first step, then
    copies greedily out of the chosen source, one allowed token a step, until the end token is likelier."""

    def __init__(self, labels: list[int], sources: list[bytes], lead: list[int], none_token: int, end_token: int,
                 pieces: Pieces, result: Extraction, max_tokens: int, close: bytes = b"") -> None:
        self.labels, self.sources, self.lead = labels, sources, lead
        self.none_token, self.end_token, self.pieces = none_token, end_token, pieces
        # The answer may also end by closing what the lead opened (a quote): that is how the model ends it.
        self.ends = {end_token, *pieces.starting(close)}
        self.result, self.max_tokens = result, max_tokens
        self.source: bytes | None = None  # chosen once the labels are read
        self.answer = b""

    def step(self, logprobs: np.ndarray) -> Step:
        """The next move, given the log-softmax of the current position's logits."""
        r = self.result
        if self.source is None:
            r.logprobs = [float(logprobs[t]) for t in self.labels]
            r.chosen = 1 + int(np.argmax(r.logprobs[1:]))
            self.source = self.sources[r.chosen]
            return Step([self.labels[r.chosen], *self.lead], Picked(tuple(r.logprobs), r.chosen))
        if not self.answer:
            r.none_first = float(logprobs[self.none_token])
        options = self.pieces.allowed(self.answer, self.source)
        if self.answer and complete_utf8(self.answer):
            options.extend(self.ends - set(options))
        if not options:
            return Step([])
        best = options[int(np.argmax(logprobs[options]))]
        r.token_logprobs.append(float(logprobs[best]))
        # An answer is a phrase: it ends where the source's clause ends (the whole sentence is quoted under it).
        ends_clause = sentences.COPY_CLAUSE_END.search(self.pieces.of[best].decode("utf-8", "ignore"))
        if best in self.ends or (self.answer and ends_clause):
            return Step([])
        self.answer += self.pieces.of[best]
        done = len(r.token_logprobs) >= self.max_tokens
        return Step([] if done else [best], text=self.pieces.of[best])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from raw logits, in float64."""
    x = logits.astype(np.float64)
    top = x.max()
    return x - (top + np.log(np.exp(x - top).sum()))
