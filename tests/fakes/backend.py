"""A backend that replays canned tokens, for engine and channel tests without a model."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

from bot.backends.base import Completion, ProgressFn
from bot.errors import BackendBusy
from bot.types import Queued
from bot.words import HAN

Script = Callable[[list[dict[str, str]]], str]


def tokens_of(text: str) -> list[str]:
    """Split text into small pieces the way a tokenizer roughly would (a CJK char or a word)."""
    return re.findall(rf"[{HAN}]|\s*[^\s{HAN}]+|\s+", text)


class FakeBackend:
    """Answers with `script(messages)` (or a fixed text), a piece at a time, optionally slowly."""

    def __init__(self, answer: str | Script = "", *, delay: float = 0.0, model_name: str = "fake-model",
                 fail_after: int | None = None, queue_limit: int | None = None,
                 max_tokens: int | None = None) -> None:
        self.model_name = model_name
        self.max_tokens = max_tokens  # like model.max_tokens: a longer answer stops there, marked cut
        self.queue_limit = queue_limit  # like model.queue_limit: more waiting than this is BackendBusy
        self.answer = answer
        self.delay = delay
        self.fail_after = fail_after
        self.calls: list[list[dict[str, str]]] = []
        self.warmed: list[list[dict[str, str]]] = []
        self.cancelled: list[str] = []
        self.retained: list[list[list[dict[str, str]]]] = []
        self._lock = asyncio.Lock()
        self._waiting = 0

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None) -> None:
        self.warmed.append(prefix)
        if progress:
            progress(1, 1)

    async def stream(self, messages: list[dict[str, str]], *, conversation: str, max_tokens: int | None = None,
                     completion: Completion | None = None,
                     priority: float | None = None) -> AsyncIterator[str | Queued]:
        if self.queue_limit is not None and self._waiting > self.queue_limit:
            raise BackendBusy(f"{self._waiting} requests queued (model.queue_limit)")
        self._waiting += 1
        try:
            if self._lock.locked():
                yield Queued(self._waiting - 1)
            async with self._lock:
                self.calls.append(messages)
                text = self.answer(messages) if callable(self.answer) else self.answer
                pieces = tokens_of(text)
                limit = max_tokens or self.max_tokens
                cut = limit is not None and len(pieces) > limit
                pieces = pieces[:limit] if cut else pieces
                for i, piece in enumerate(pieces):
                    if self.fail_after is not None and i >= self.fail_after:
                        raise RuntimeError("fake backend failure")
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    yield piece
                if completion is not None:
                    completion.prompt_tokens = sum(len(m["content"]) for m in messages)
                    completion.completion_tokens = len(pieces)
                    completion.cut = cut
        finally:
            self._waiting -= 1

    async def retain(self, prefixes: list[list[dict[str, str]]]) -> None:
        self.retained.append(prefixes)

    def cancel(self, conversation: str) -> int:
        self.cancelled.append(conversation)
        return 0

    def count_tokens(self, text: str) -> int:
        return len(tokens_of(text))

    async def close(self) -> None:
        return None
