"""The log read out for `bot logs`: the newest turns, and every row of a table, in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from bot.log.database import Database

EXPORT_COLUMNS = [
    "id", "channel", "chat_id", "user_id", "conversation", "question", "status", "answer", "refused",
    "retracted", "decline_reason", "citations", "ttft_ms", "total_ms", "prompt_tokens", "completion_tokens",
    "model", "content_version", "error", "created_at", "answered_at", "delivery", "delivered_at", "delivery_error",
    "delivered_via",
]
EXPORT_TABLES = ("turns", "events", "passages", "resets", "seen", "ratings")  # everything `bot logs --export` writes
# Insertion order, as both engines can tell it (PostgreSQL has no rowid).
_ORDER = {"turns": "id", "events": "id", "passages": "first_seen, id", "resets": "at, conversation",
          "seen": "at, channel, key", "ratings": "at, turn_id, user_id"}


def _exported(table: str) -> str:
    """`table`, checked to be one of the log's exported tables (it is put into SQL text)."""
    if table not in EXPORT_TABLES:
        raise ValueError(f"no table {table!r} to export; one of {', '.join(EXPORT_TABLES)}")
    return table


async def recent(db: Database, limit: int, channel: str | None = None) -> list[dict[str, Any]]:
    """The newest turns as dicts (newest last), for `bot logs`."""
    sql = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM turns"
    args: list[Any] = []
    if channel:
        sql += " WHERE channel = ?"
        args.append(channel)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return list(reversed(await db.fetchall(sql, args)))


async def columns(db: Database, table: str) -> list[str]:
    """A log table's column names, in schema order."""
    return await db.columns(_exported(table))


async def rows(db: Database, table: str, channel: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """Every row of one log table (of one channel, for the tables that have one), oldest first,
    read in chunks: memory stays flat on a big log."""
    where, args = "", ()
    if channel is not None and table == "resets":
        where, args = "WHERE conversation LIKE ? || ':%'", (channel,)
    elif channel is not None and table != "passages":
        where, args = "WHERE channel=?", (channel,)
    async for row in db.iterate(f"SELECT * FROM {_exported(table)} {where} ORDER BY {_ORDER[table]}", args):
        yield row


async def copy(source: Database, target: Database) -> dict[str, int]:
    """Every exported table's rows from one log into another of the same schema (a SQLite snapshot of the
    shared PostgreSQL log, for the log page); rows copied per table."""
    done = {}
    for table in EXPORT_TABLES:
        names = await source.columns(table)
        sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        batch: list[list[Any]] = []
        done[table] = 0
        async with target.transaction():
            async for row in rows(source, table):
                batch.append([row[n] for n in names])
                if len(batch) == 500:
                    await target.executemany(sql, batch)
                    done[table] += len(batch)
                    batch.clear()
            await target.executemany(sql, batch)
            done[table] += len(batch)
    return done
