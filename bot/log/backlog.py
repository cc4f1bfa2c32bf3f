"""The log's writes while the database takes none (disk full, locked by another writer): kept, made later.

A write that can wait (an answer, a delivery mark, an event, a /reset) is kept in order in memory and
made as soon as the database takes writes again; a write that cannot (logging a new question before it
is answered) raises `StoreUnavailable`, and the core refuses the question plainly instead of answering it
unlogged. If the process dies while writes are kept, the turns they were about are still `pending` or
`waiting` in the log, so the restart answers or re-sends them (at worst an answer arrives twice); kept
events and resets are lost then.

Every transaction runs in a task of its own, shielded from its caller's cancellation, under one lock:
a shutdown never leaves half a transaction open on the shared connection for another task to commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from bot.errors import StoreUnavailable
from bot.log.database import Database

log = logging.getLogger(__name__)
Statement = tuple[str, tuple[Any, ...]]
T = TypeVar("T")
MAX_KEPT = 20_000  # writes kept at most; past that new ones are dropped (their turns stay recoverable)
class _Wrong(Exception):
    """Statement `index` of a batch can never succeed (a bug, not an outage)."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(index, cause)
        self.index, self.cause = index, cause


async def _shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # an abandoned failure is not reported twice
    return await asyncio.shield(task)


class Backlog:
    """Writes made at once while the database takes them, kept in order and retried while it does not."""

    def __init__(self, db: Database, retry_s: float = 2.0) -> None:
        self.db, self.retry_s = db, retry_s
        self._kept: list[tuple[Statement, int | None]] = []  # (statement, the turn it is about), in order
        self.out = False  # the last write failed: none is tried again until a retry succeeds
        self.dropped = 0
        self._flusher: asyncio.Task[bool] | None = None
        self._retrying: asyncio.Task[None] | None = None
        self._closing = False
        # One writer at a time on the shared connection: a rollback must not undo another task's statements.
        self.lock = asyncio.Lock()

    @property
    def kept(self) -> int:
        """How many writes wait to be made."""
        return len(self._kept)

    def holds(self, turn_id: int) -> bool:
        """Whether a write about this turn waits (the log does not show its answer or delivery yet)."""
        return any(t == turn_id for _, t in self._kept)

    async def later(self, sql: str, args: tuple[Any, ...], turn_id: int | None = None) -> None:
        """Make this write now (after any kept ones), or keep it until the database takes writes again."""
        if len(self._kept) >= MAX_KEPT:
            self.dropped += 1
            log.error("log write dropped: %d writes already kept while the database takes none", MAX_KEPT)
            return
        self._kept.append(((sql, args), turn_id))
        if not self.out:  # else the next retry makes it, in order
            await asyncio.shield(self._flush_task())

    async def now(self, work: Callable[[Database], Awaitable[T]]) -> T:
        """Run `work`'s writes in one transaction and commit, or raise StoreUnavailable; what it returned."""
        if self.out:  # known to be out: refuse at once rather than wait out another busy timeout
            raise StoreUnavailable(f"the log database takes no writes ({self.kept} writes kept)")
        try:
            return await _shielded(self._transaction(work))
        except self.db.errors as exc:
            if not self.db.outage(exc):
                raise
            self._down(exc)
            raise StoreUnavailable(f"the log database takes no writes: {exc}") from exc

    async def _transaction(self, work: Callable[[Database], Awaitable[T]]) -> T:
        async with self.lock, self.db.transaction() as db:
            return await work(db)

    def _flush_task(self) -> asyncio.Task[bool]:
        """The running flush, or a new one: one at a time, so the kept writes stay in order."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
            self._flusher.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._flusher

    async def _flush(self) -> bool:
        """Make the kept writes, the ones added meanwhile too; on an outage keep them and retry soon."""
        while self._kept or self.out:
            batch = list(self._kept)
            try:
                await self._make([statement for statement, _ in batch])
            except _Wrong as wrong:  # a bug: drop that write alone, with the error in the log
                log.error("log write dropped, it cannot be made: %s (%s)", wrong.cause, batch[wrong.index][0][0][:80])
                self._kept.remove(batch[wrong.index])
                continue
            except self.db.errors as exc:
                if not self.db.outage(exc):
                    raise
                self._down(exc)
                return False
            del self._kept[: len(batch)]
            if self.out:
                log.warning("log database takes writes again; %d kept writes made", len(batch))
                self.out = False
        return True

    async def _make(self, statements: list[Statement]) -> None:
        """The statements in one transaction (none: a probe whether the database takes writes)."""
        async with self.lock:
            if not statements:
                await self.db.probe()
                return
            async with self.db.transaction() as db:
                for i, (sql, args) in enumerate(statements):
                    try:
                        await db.execute(sql, args)
                    except db.errors as exc:
                        if db.outage(exc):
                            raise
                        raise _Wrong(i, exc) from exc

    def _down(self, exc: Exception) -> None:
        """The database refused a write: keep writes and retry every retry_s (not once the log is closing)."""
        if not self.out:
            log.warning("log database takes no writes (%s); %d writes kept, retried every %.1f s", exc, self.kept,
                        self.retry_s)
        self.out = True
        if not self._closing and (self._retrying is None or self._retrying.done()):
            self._retrying = asyncio.create_task(self._retry())

    async def _retry(self) -> None:
        while self.out:
            await asyncio.sleep(self.retry_s)
            await asyncio.shield(self._flush_task())

    async def close(self) -> None:
        """Wait for a write in progress, and try the kept writes once more before the connection closes."""
        self._closing = True
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await self._flusher
        if self._kept and not await self._flush():
            log.error("%d log writes could not be made; their turns are answered or re-sent after the restart",
                      self.kept)
