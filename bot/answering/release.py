"""Releasing a streaming draft to the user one sentence at a time, each only once it has passed the checks.

A draft used to stream as it came and be withdrawn when the check failed, so an invented answer stood
on the screen for seconds. Now the draft up to each sentence end is checked as if it were the whole
answer; the new sentences are shown only when it passes. What was shown is always a checked answer: if
the full draft fails later, the reply is the part already shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.text import sentences
from bot.text.markers import MarkerRenumber

# Sentences end as sentences.STREAM_END says (a cut-off draft: WHOLE_END); a marker still arriving is held.
_PARTIAL = re.compile(r"\s*[\[【]\d{0,3}$")


def whole_sentences(text: str) -> str:
    """`text` up to its last sentence end and the markers after it: what stands when the rest was cut off."""
    ends = [m.end() for m in sentences.WHOLE_END.finditer(text)]
    return text[: ends[-1]] if ends else ""


class Release:
    """The checked, shown part of one draft; `check(prefix)` says whether a prefix may stand as the answer."""

    def __init__(self, check: Callable[[str], bool]) -> None:
        self.check = check
        self.raw = ""  # everything the model wrote
        self.upto = 0  # raw[:upto] has passed the check and been shown
        self._judged = 0  # the last sentence end already checked (a failed prefix is not checked again)
        self._renumber = MarkerRenumber()

    @property
    def shown(self) -> str:
        """The model's text that the user has seen (with the model's own markers)."""
        return self.raw[: self.upto]

    def feed(self, piece: str) -> str:
        """Take one streamed piece; return the text to show now (empty until a sentence passes)."""
        self.raw += piece
        ends = [m.end() for m in sentences.STREAM_END.finditer(self.raw, self.upto)]
        # A marker may still follow a sentence end, maybe split over pieces ("[", "3"): wait for it.
        complete = [e for e in ends if self._judged < e < len(self.raw) and not _PARTIAL.match(self.raw, e)]
        return self._show_upto(complete[-1]) if complete else ""

    def finish(self, end: int | None = None) -> str:
        """The draft is complete (up to `end`: it was cut off there): show the rest if the whole passes."""
        return self._show_upto(len(self.raw.rstrip()) if end is None else end)

    def _show_upto(self, end: int) -> str:
        self._judged = max(self._judged, end)
        if end <= self.upto or not self.raw[:end].strip() or not self.check(self.raw[:end]):
            return ""
        piece, self.upto = self.raw[self.upto : end], end
        return self._renumber.feed(piece) + self._renumber.flush()
