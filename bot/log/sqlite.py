"""The log on a SQLite file (the embedded default): aiosqlite, WAL, full syncs."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.log.database import Database, Row

# Errors SQLite recovers from by itself or by an operator's hand (a full disk, another writer's lock).
_OUTAGE = ("full", "locked", "busy", "disk i/o", "readonly", "unable to open")


class SqliteDatabase(Database):
    """A SQLite file in WAL mode through aiosqlite (its own thread per connection)."""

    errors = (sqlite3.Error,)

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn, self.path = conn, path
        self.target: Path | str = path
        self._migrating = False

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        """Connect with a busy timeout, WAL and full syncs (a crash loses no committed turn)."""
        conn = await aiosqlite.connect(path)
        conn.row_factory = aiosqlite.Row
        db = cls(conn, path)
        try:
            await conn.execute("PRAGMA busy_timeout=5000")
            # Switching a new file to WAL while another connection does may fail at once, not after the busy
            # timeout: tried again for as long as that timeout.
            deadline = asyncio.get_running_loop().time() + 5.0
            while True:
                try:
                    await conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            await conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            await conn.close()  # its worker thread would keep the process alive
            raise
        return db

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed."""
        async with self.conn.execute(sql, tuple(args)) as cur:
            return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of arguments."""
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        async with self.conn.execute(sql, tuple(args)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def iterate(self, sql: str, args: Sequence[Any] = ()) -> AsyncIterator[Row]:
        """The rows of a query read in chunks."""
        async with self.conn.execute(sql, tuple(args)) as cur:
            async for row in cur:
                yield dict(row)

    async def commit(self) -> None:
        """Make the open transaction's writes."""
        await self.conn.commit()

    async def rollback(self) -> None:
        """Undo the open transaction's writes."""
        await self.conn.rollback()

    async def probe(self) -> None:
        """Take the write lock and let it go (raises while another writer holds it or the disk refuses)."""
        try:
            await self.conn.execute("BEGIN IMMEDIATE")
        finally:
            await self.conn.rollback()

    async def script(self, sql: str) -> None:
        """Several statements as one transaction (sqlite3's executescript commits what was open first);
        inside `migrating`, part of its transaction."""
        if not self._migrating:
            await self.conn.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
            return
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                await self.conn.execute(statement)
                statement = ""
        if statement.strip():
            raise sqlite3.OperationalError(f"incomplete SQL statement in a script: {statement.strip()[:80]}")

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        """One transaction holding the file's write lock (BEGIN IMMEDIATE) from reading which migrations are
        applied to the last one: processes opening a new log together migrate it once."""
        await self.conn.execute("BEGIN IMMEDIATE")
        self._migrating = True
        try:
            yield
            await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise
        finally:
            self._migrating = False

    async def columns(self, table: str) -> list[str]:
        """A table's column names, in schema order."""
        return [r["name"] for r in await self.fetchall(f"PRAGMA table_info({table})")]

    def outage(self, exc: BaseException) -> bool:
        """A full disk, a lock held too long, an unwritable file."""
        return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc).lower() for w in _OUTAGE)

    async def close(self) -> None:
        """Close the connection (its worker thread would keep the process alive)."""
        await self.conn.close()
