"""A backend that replays canned tokens, for engine and channel tests without a model."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from bot.answering.prompts import Prompts
from bot.backends.base import Completion, Extraction, Picked, ProgressFn
from bot.errors import BackendBusy
from bot.text.words import HAN, bare, longest_common_run
from bot.types import Queued

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
        self.timings: dict[str, Any] = {}
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

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None, *,
                   pin: bool = False) -> None:
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

    async def extract(self, messages: list[dict[str, str]], labels: Sequence[str], sources: Sequence[str], *,
                      lead: str, none_word: str, conversation: str, result: Extraction, max_tokens: int = 48,
                      priority: float | None = None) -> AsyncIterator[str | Queued | Picked]:
        """Like a model that picks the source its scripted answer draws on, and copies what they share.

        The script may answer in the pick format ("2：答案", "0" for none) or as a free answer: then the
        source sharing the longest run with it is picked, and that run is copied (none if under two
        characters), as a model writing that answer would pick and copy.
        """
        text, used = "", Completion()
        async for piece in self.stream(messages, conversation=conversation, max_tokens=max_tokens,
                                       completion=used, priority=priority):
            if isinstance(piece, Queued):
                yield piece
            else:
                text += piece
        chosen, copied = _pick(text.strip(), labels, sources)
        best = chosen or max(range(1, len(sources)), key=lambda i: longest_common_run(bare(text), bare(sources[i])))
        result.logprobs = [-3.0 if chosen else -0.1] + [-4.0] * (len(labels) - 1)
        result.logprobs[best] = -0.1 if chosen else -3.0
        result.chosen, copied = best, copied if chosen else ""
        result.token_logprobs = [-0.2] * max(1, len(tokens_of(copied)))
        result.none_first = -10.0 if chosen else -0.5
        # Counted as the real backends count them (the prompt, the tokens generated).
        result.prompt_tokens, result.completion_tokens = used.prompt_tokens, used.completion_tokens
        yield Picked(tuple(result.logprobs), best)
        for piece in tokens_of(copied):  # the copy grows as it is read, as on the owner thread
            result.text += piece
            yield piece

    async def retain(self, prefixes: list[list[dict[str, str]]]) -> None:
        self.retained.append(prefixes)

    def cancel(self, conversation: str) -> int:
        self.cancelled.append(conversation)
        return 0

    def count_tokens(self, text: str) -> int:
        return len(tokens_of(text))

    async def close(self) -> None:
        return None


def _pick(text: str, labels: Sequence[str], sources: Sequence[str]) -> tuple[int, str]:
    """(label index, copied text) a scripted answer stands for; (0, "") for none."""
    for i, label in enumerate(labels):
        if i and (text.startswith(label + "：") or text.startswith(label + ":")):
            return i, _common(text[len(label) + 1:], sources[i])
    if not text or text == "0" or text.startswith("0：") or Prompts().declines.search(text):
        return 0, ""
    plain = re.sub(r"\s*[\[【]\d+[\]】]", "", text)
    best = max(range(1, len(sources)), key=lambda i: longest_common_run(bare(plain), bare(sources[i])), default=0)
    copied = _common(plain, sources[best]) if best else ""
    return (best, copied) if len(bare(copied)) >= 2 else (0, "")


def _common(text: str, source: str) -> str:
    """The longest run of `text` that occurs in `source` as written."""
    best = ""
    for i in range(len(text)):
        j = i + len(best) + 1
        while j <= len(text) and text[i:j] in source:
            best, j = text[i:j], j + 1
    return best.strip("，,。 ")
