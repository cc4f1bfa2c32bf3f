"""The log read out for `bot logs`: the newest turns, and every row of a table, in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiosqlite

EXPORT_COLUMNS = [
    "id", "channel", "chat_id", "user_id", "conversation", "question", "status", "answer", "refused",
    "retracted", "decline_reason", "citations", "ttft_ms", "total_ms", "prompt_tokens", "completion_tokens",
    "model", "content_version", "error", "created_at", "answered_at", "delivery", "delivered_at", "delivery_error",
    "delivered_via",
]
EXPORT_TABLES = ("turns", "events", "passages", "resets", "seen")  # everything `bot logs --export` writes


def _exported(table: str) -> str:
    """`table`, checked to be one of the log's exported tables (it is put into SQL text)."""
    if table not in EXPORT_TABLES:
        raise ValueError(f"no table {table!r} to export; one of {', '.join(EXPORT_TABLES)}")
    return table


async def recent(db: aiosqlite.Connection, limit: int, channel: str | None = None) -> list[dict[str, Any]]:
    """The newest turns as dicts (newest last), for `bot logs`."""
    sql = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM turns"
    args: list[Any] = []
    if channel:
        sql += " WHERE channel = ?"
        args.append(channel)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    async with db.execute(sql, args) as cur:
        rows = await cur.fetchall()
    return [dict(r) for r in reversed(rows)]


async def columns(db: aiosqlite.Connection, table: str) -> list[str]:
    """A log table's column names, in schema order."""
    async with db.execute(f"PRAGMA table_info({_exported(table)})") as cur:
        return [r[1] for r in await cur.fetchall()]


async def rows(db: aiosqlite.Connection, table: str, channel: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """Every row of one log table (of one channel, for the tables that have one), in insertion order,
    read in chunks: memory stays flat on a big log."""
    where, args = "", ()
    if channel is not None and table == "resets":
        where, args = "WHERE conversation LIKE ? || ':%'", (channel,)
    elif channel is not None and table != "passages":
        where, args = "WHERE channel=?", (channel,)
    async with db.execute(f"SELECT * FROM {_exported(table)} {where} ORDER BY rowid", args) as cur:
        async for row in cur:
            yield dict(row)
