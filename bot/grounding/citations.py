"""The citations a checked answer shows: its markers renumbered to display order, unsupported ones dropped."""

from __future__ import annotations

from bot.content.knowledge import ContentSet
from bot.text.markers import MARKER, markers, strip_markers
from bot.types import Citation, Passage


def cite(answer: str, passages: list[Passage], content: ContentSet) -> tuple[str, list[Citation]]:
    """Renumber markers to display order, keeping only supporting passages; add one if none is marked."""
    keep = {p.order + 1 for p in passages}
    order = [k for k in markers(answer) if k in keep]
    order += [p.order + 1 for p in passages if p.order + 1 not in order]
    body = strip_markers(answer) if not set(markers(answer)) & keep else answer

    def sub(m: object) -> str:
        k = int(m.group(1))  # type: ignore[attr-defined]
        return f"[{order.index(k) + 1}]" if k in order else ""

    text = MARKER.sub(sub, body).strip()
    unmarked = "".join(f"[{i + 1}]" for i in range(len(order)) if f"[{i + 1}]" not in text)
    if unmarked:
        end = len(text.rstrip("。.!！?？"))
        text = text[:end] + unmarked + text[end:]
    citations = [Citation(content.passages[k - 1].id, content.passages[k - 1].section,
                          content.passages[k - 1].text, i + 1) for i, k in enumerate(order)]
    return text, citations
