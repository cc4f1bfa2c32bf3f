"""What a command may use of the core (`Services`), and how a long one reports its progress (`Report`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.backends.base import ProgressFn
    from bot.config import GapsConfig
    from bot.content.knowledge import ContentSet
    from bot.content.library import Library
    from bot.core.gaps import Topic
    from bot.log.usage import Usage
    from bot.types import Citation, Incoming, ReloadReport, Reply, Stats

# What a long command reports while it runs: (step, fraction done or None); safe to call from any thread.
Report = Callable[[str, "float | None"], None]


class Services(Protocol):
    """What a command may use of the core (the core is one; commands see none of its turn machinery)."""

    library: Library

    @property
    def content(self) -> ContentSet: ...

    def about(self, lang: str) -> str: ...

    async def reset(self, conversation: str) -> None: ...

    async def sources(self, conversation: str) -> list[Citation]: ...

    async def stats(self, since_hours: float = 24.0, channel: str | None = None) -> Stats: ...

    async def usage(self, since_hours: float = 24.0, channel: str | None = None) -> Usage: ...

    async def reload(self, by: Incoming | None = None, progress: ProgressFn | None = None) -> ReloadReport: ...

    gaps_config: GapsConfig

    async def rate(self, msg: Incoming, turn_id: int, rating: int, reason: str = "") -> bool: ...

    async def rating_reason(self, turn_id: int, msg: Incoming, reason: str) -> bool: ...

    async def last_answer(self, conversation: str) -> int | None: ...

    async def gaps(self, days: float) -> list[Topic]: ...

    async def subscribe(self, msg: Incoming, on: bool) -> None: ...

    async def subscribers(self, channel: str) -> set[str]: ...

    async def reask(self, questions: list[str]) -> list[Reply | None]: ...
