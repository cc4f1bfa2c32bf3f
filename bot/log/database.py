"""One connection to the log's database, the same to the store on either engine.

SQLite (sqlite.py: a file, the embedded default) or PostgreSQL (postgres.py: a log shared by several bot
instances). The store writes `?` placeholders and reads rows as dicts; each engine maps them, the migrations'
column types and what counts as an outage (the database takes no writes for now, as opposed to a wrong
statement).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bot.config.sections import POSTGRES_SCHEMES

Row = dict[str, Any]


def is_url(target: str | Path) -> bool:
    """Whether a configured log database names a PostgreSQL server rather than a SQLite file."""
    return str(target).startswith(POSTGRES_SCHEMES)


def shown(target: str | Path) -> str:
    """The database as it may be printed or logged: a URL's password masked."""
    if not is_url(target):
        return str(target)
    parts = urlsplit(str(target))
    if parts.password is None:
        return str(target)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class Database(ABC):
    """The log's connection: statements with `?` placeholders, rows as dicts, one write transaction at a time."""

    target: Path | str  # the SQLite file or the PostgreSQL URL
    errors: tuple[type[Exception], ...]  # what a statement may raise (an outage or a wrong statement)

    @abstractmethod
    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of arguments."""

    @abstractmethod
    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None

    async def insert(self, sql: str, args: Sequence[Any]) -> int:
        """Run an INSERT into a table with an `id` column; the new row's id."""
        rows = await self.fetchall(sql + " RETURNING id", args)
        return int(rows[0]["id"])

    @abstractmethod
    def iterate(self, sql: str, args: Sequence[Any] = ()) -> AsyncIterator[Row]:
        """The rows of a query read in chunks (memory stays flat on a big log)."""

    @abstractmethod
    async def commit(self) -> None:
        """Make the open transaction's writes."""

    @abstractmethod
    async def rollback(self) -> None:
        """Undo the open transaction's writes."""

    @abstractmethod
    async def probe(self) -> None:
        """Raise an outage error unless the database takes writes now (nothing is written)."""

    @abstractmethod
    async def script(self, sql: str) -> None:
        """Several statements (a migration's DDL, its column types as this engine spells them) as one transaction."""

    @abstractmethod
    def migrating(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while migrations are applied: one process migrates at a time."""

    @abstractmethod
    async def columns(self, table: str) -> list[str]:
        """A table's column names, in schema order."""

    @abstractmethod
    def outage(self, exc: BaseException) -> bool:
        """Whether `exc` means the database takes no writes for now (as opposed to a wrong statement)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection."""

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """Statements of the block in one transaction: committed at its end, rolled back on an error."""
        try:
            yield self
            await self.commit()
        except BaseException:
            await self.rollback()
            raise
