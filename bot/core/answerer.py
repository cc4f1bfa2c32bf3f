"""What the core needs of the answering engine, as a protocol: tests substitute a scripted one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from bot.backends.base import ProgressFn
from bot.content.knowledge import ContentSet
from bot.types import Event, HistoryTurn, Incoming, Reply


class Answerer(Protocol):
    """Answers one question over one content version; knows nothing of logs or messengers (answering.Engine)."""

    async def prepare(self, content: ContentSet, progress: ProgressFn | None = None) -> None:
        """Have the model read the content (or restore its saved state) before it is served."""
        ...

    async def retain(self, content: ContentSet) -> None:
        """Keep only this content's prefixes in the model's memory."""
        ...

    def run(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn]) -> AsyncIterator[Event]:
        """Queued, Progress and Delta events while the answer is made, then one Reply."""
        ...

    def failed(self, content: ContentSet, text: str, error: str, started: float) -> Reply:
        """The reply to a turn that raised: an apology for the user, the error for the log."""
        ...

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's queued or running requests; how many were."""
        ...
