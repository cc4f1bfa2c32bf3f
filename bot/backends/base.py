"""The model backend interface: an async token stream per conversation, a prefix warm-up, the queue depth.

A backend takes chat messages (OpenAI-style dicts) and yields text pieces. The first message is the
stable prefix (system prompt with the content), which backends keep computed between requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.types import Queued

ProgressFn = Callable[[int, int], None]


@dataclass
class Completion:
    """What a finished stream reports after its last piece."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cut: bool = False  # stopped at max_tokens, not at the model's own end: the last sentence may be unfinished


@runtime_checkable
class Backend(Protocol):
    """A model that streams an answer for a list of chat messages."""

    model_name: str

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None) -> None:
        """Compute (or restore) the shared prefix so later requests start from it."""
        ...

    async def retain(self, prefixes: list[list[dict[str, str]]]) -> None:
        """Keep only these prefixes computed in memory (after a reload: the old content's go)."""
        ...

    def stream(
        self, messages: list[dict[str, str]], *, conversation: str, max_tokens: int | None = None,
        completion: Completion | None = None, priority: float | None = None,
    ) -> AsyncIterator[str | Queued]:
        """Yield text pieces (and `Queued` notes while waiting); fill `completion` at the end.

        Requests with a lower `priority` (the engine passes its turn's start, by time.perf_counter) are
        served first, so a turn's second pass does not wait behind turns that started after it.
        """
        ...

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's queued and running requests; how many there were."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of `text`."""
        ...

    async def close(self) -> None:
        """Stop the worker and free the model."""
        ...
