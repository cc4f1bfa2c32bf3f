"""The log's writes while the database takes none (disk full, locked by another writer): kept, made later.

A write that can wait (an answer, a delivery mark, an event) is kept in order in memory and made as soon
as the database takes writes again; a write that cannot (logging a new question before it is answered)
raises `StoreUnavailable`, and the core refuses the question plainly instead of answering it unlogged.
If the process dies while writes are kept, their turns are still `pending` or `waiting` in the log, so
the restart answers or re-sends them: nothing is lost, at worst an answer arrives twice.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

from bot.errors import StoreUnavailable

log = logging.getLogger(__name__)
Statement = tuple[str, tuple[Any, ...]]
T = TypeVar("T")
# Errors the database recovers from by itself or by an operator's hand, as opposed to a bug in our SQL.
_OUTAGE = ("full", "locked", "busy", "disk i/o", "readonly", "unable to open")


def outage(exc: BaseException) -> bool:
    """Whether a database error means it takes no writes for now (as opposed to a wrong statement)."""
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc).lower() for word in _OUTAGE)


class Backlog:
    """Writes made at once while the database takes them, kept in order and retried while it does not."""

    def __init__(self, db: aiosqlite.Connection, retry_s: float = 2.0) -> None:
        self.db, self.retry_s = db, retry_s
        self._kept: list[tuple[Statement, int | None]] = []  # (statement, the turn it is about), in order
        self.out = False  # the last try failed: the database takes no writes until a retry succeeds
        self._flushing = False
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
        """Make this write now, or after the kept ones once the database takes writes again."""
        self._kept.append(((sql, args), turn_id))
        if not self._flushing and not self.out:  # else the running flush or the next retry makes it, in order
            await self._flush()

    async def now(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work`'s writes in one transaction and commit, or raise StoreUnavailable; what it returned."""
        if self.out:  # known to be out: refuse at once rather than wait out another busy timeout
            raise StoreUnavailable(f"the log database takes no writes ({self.kept} writes kept)")
        async with self.lock:
            try:
                result = await work(self.db)
                await self.db.commit()
            except sqlite3.OperationalError as exc:
                await self.db.rollback()
                if outage(exc):
                    raise StoreUnavailable(f"the log database takes no writes: {exc}") from exc
                raise
        return result

    async def _flush(self) -> bool:
        """Make the kept writes, the ones added meanwhile too; on an outage keep them and retry soon."""
        self._flushing = True
        try:
            while self._kept:
                batch = list(self._kept)
                try:
                    await self._make([statement for statement, _ in batch])
                except sqlite3.OperationalError as exc:
                    if not outage(exc):
                        del self._kept[: len(batch)]  # a wrong statement never succeeds: it would block the rest
                        raise
                    self._down(exc)
                    return False
                del self._kept[: len(batch)]
            self.out = False
            return True
        finally:
            self._flushing = False

    async def _make(self, statements: list[Statement]) -> None:
        async with self.lock:
            try:
                for sql, args in statements:
                    await self.db.execute(sql, args)
                await self.db.commit()
            except sqlite3.OperationalError:
                await self.db.rollback()
                raise

    def _down(self, exc: Exception) -> None:
        """The database refused: keep the writes and have them retried (once the log is closing, not)."""
        if not self.out:
            log.warning("log database takes no writes (%s); %d writes kept, retried every %.1f s", exc, self.kept,
                        self.retry_s)
        self.out = True
        if not self._closing and (self._retrying is None or self._retrying.done()):
            self._retrying = asyncio.create_task(self._retry())

    async def _retry(self) -> None:
        while self.out and self._kept:
            await asyncio.sleep(self.retry_s)
            n = self.kept
            try:
                if await self._flush():
                    log.warning("log database takes writes again; %d kept writes made", n)
            except Exception:
                log.exception("kept log writes dropped: one of them cannot be made")
        self.out = False

    async def close(self) -> None:
        """A last try at the kept writes before the connection closes."""
        self._closing = True
        if self._retrying is not None:
            self._retrying.cancel()
        if self._kept and not self._flushing and not await self._flush():
            log.error("%d log writes could not be made; their turns are answered or re-sent after the restart",
                      self.kept)
