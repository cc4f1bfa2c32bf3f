"""Citation markers ([3], 【3】) in answers: reading and stripping them, renumbering them to display order
while the answer streams, and the quoted source line under an answer."""

from __future__ import annotations

import re

MARKER = re.compile(r"\s*[\[【](\d{1,3})[\]】]")


def strip_markers(text: str) -> str:
    """The answer without its [n] citation markers."""
    return MARKER.sub("", text)


# The line quoting the source sentence under an answer (texts "source_quote"): `\n原文[1]：「…」`.
_QUOTE_LINE = re.compile(r"\n原文\[\d{1,3}\]：「[^\n]*」\s*$")


def without_quote(text: str) -> str:
    """The answer without the quoted source sentence under it (what a follow-up question needs)."""
    return _QUOTE_LINE.sub("", text)


def markers(text: str) -> list[int]:
    """The passage numbers cited in the text, in order of first appearance."""
    return list(dict.fromkeys(int(m) for m in MARKER.findall(text)))


class MarkerRenumber:
    """Rewrites the model's passage markers ([12]) into display order ([1]) while text streams."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self._pending = ""

    def feed(self, piece: str) -> str:
        """Return the text that can be shown now; a possibly unfinished marker is held back."""
        self._pending += piece
        out = []
        while self._pending:
            start = min((i for i in (self._pending.find("["), self._pending.find("【")) if i >= 0), default=-1)
            if start < 0:
                out.append(self._pending)
                self._pending = ""
                break
            out.append(self._pending[:start])
            rest = self._pending[start:]
            end = next((i for i, ch in enumerate(rest) if ch in "]】"), -1)
            if end < 0:
                if len(rest) > 5:  # not a marker after all
                    out.append(rest)
                    rest = ""
                self._pending = rest
                break
            inner = rest[1:end]
            out.append(self._display(int(inner)) if inner.isdigit() else rest[: end + 1])
            self._pending = rest[end + 1 :]
        return "".join(out)

    def flush(self) -> str:
        """Whatever is still held back."""
        rest, self._pending = self._pending, ""
        return rest

    def _display(self, k: int) -> str:
        if k not in self.order:
            self.order.append(k)
        return f"[{self.order.index(k) + 1}]"
