"""The model backend interface: an async token stream per conversation, a prefix warm-up, the queue depth.

A backend takes chat messages (OpenAI-style dicts) and yields text pieces. The first message is the
stable prefix (system prompt with the content), which backends keep computed between requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from bot.types import Queued

ProgressFn = Callable[[int, int], None]


@dataclass
class Completion:
    """What a finished stream reports after its last piece."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cut: bool = False  # stopped at max_tokens, not at the model's own end: the last sentence may be unfinished


@dataclass(frozen=True)
class Picked:
    """An extraction's first step: the log-probability of each label (labels[0] is "none"), and the label
    whose source the answer is copied from next (the most probable one but "none")."""

    logprobs: tuple[float, ...]
    chosen: int


@dataclass
class Extraction:
    """What an extracting request found, filled as it runs (see `Backend.extract`)."""

    logprobs: list[float] = field(default_factory=list)  # per label, as in Picked
    chosen: int = 0
    text: str = ""  # the copied answer: a substring of the chosen source
    token_logprobs: list[float] = field(default_factory=list)  # each copied token's, the end's included
    none_first: float = 0.0  # log-probability of `none_word` at the copy's first token
    prompt_tokens: int = 0
    completion_tokens: int = 0


# The one queue rule both backends keep (the embedded one on its owner thread, the OpenAI-compatible one on
# the event loop): the earliest turn first (its key: the turn's start, then arrival), one request in flight
# per conversation key, and a turn's parts under keys of their own so that they run side by side.
T = TypeVar("T")


def in_turn(waiting: Iterable[T], key: Callable[[T], tuple[float, int]], conversation: Callable[[T], str],
            busy: Container[str]) -> Iterator[T]:
    """The waiting requests that may start, earliest first, skipping one whose conversation key has a request
    in flight (`busy`, read as each is offered: the caller adds the ones it starts)."""
    for item in sorted(waiting, key=key):
        if conversation(item) not in busy:
            yield item


def ahead(waiting_keys: Iterable[tuple[float, int]], key: tuple[float, int], running: int) -> int:
    """A queued request's place: the waiting ones before it and the running ones."""
    return sum(1 for k in waiting_keys if k < key) + running


PART = "\x1f"  # a turn's requests that run side by side are its conversation's parts


def part(conversation: str, i: int) -> str:
    """The key of a turn's i-th request run beside its others (one request per key is in flight)."""
    return f"{conversation}{PART}{i}"


def of_conversation(key: str, conversation: str) -> bool:
    """Whether a request's key is the conversation's or one of its parts."""
    return key == conversation or key.startswith(conversation + PART)


@runtime_checkable
class Backend(Protocol):
    """A model that streams an answer for a list of chat messages."""

    model_name: str
    timings: dict[str, Any]  # what its start took and where the prefix came from (empty when it does not say)

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None, *,
                   pin: bool = False) -> None:
        """Compute (or restore) the shared prefix so later requests start from it; a pinned one is kept
        whatever else is computed (the extraction instructions)."""
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

    def extract(
        self, messages: list[dict[str, str]], labels: Sequence[str], sources: Sequence[str], *, lead: str,
        none_word: str, conversation: str, result: Extraction, max_tokens: int = 48,
        priority: float | None = None,
    ) -> AsyncIterator[str | Queued | Picked]:
        """Read the next token's probability for each label (one forward pass, no sampling), yield `Picked`,
        then copy an answer out of the chosen label's source: after `label + lead`, only text occurring in
        that source may be generated (`none_word` is scored at its first token, never generated). Yields
        the copied text's pieces and fills `result`. A consumer that stops after `Picked` ends the request.
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
