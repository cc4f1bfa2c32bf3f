"""The SQLite log store: every turn (question before generation, answer after), events, dedupe keys."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bot.errors import ConfigError
from bot.log import export, migrations, retention
from bot.log.backlog import Backlog
from bot.log.usage import Usage, read_stats, read_usage
from bot.types import Citation, HistoryTurn, Incoming, Passage, PendingTurn, Reply, Stats


@dataclass(frozen=True)
class Received:
    """What the log made of a message: a repeat (with the turn logged for it, if any), or taken (a question's
    new turn id; None for a command or a refusal)."""

    repeat: bool = False
    prior: PendingTurn | None = None
    turn_id: int | None = None


async def _of_message(db: aiosqlite.Connection, channel: str, chat_id: str, message_id: str) -> PendingTurn | None:
    """The newest turn logged for a messenger message."""
    sql = "SELECT * FROM turns WHERE channel=? AND chat_id=? AND message_id=? ORDER BY id DESC LIMIT 1"
    async with db.execute(sql, (channel, chat_id, message_id)) as cur:
        row = await cur.fetchone()
    return _pending(row) if row else None


def _pending(r: aiosqlite.Row) -> PendingTurn:
    return PendingTurn(r["id"], r["channel"], r["chat_id"], r["user_id"], r["question"], r["created_at"],
                       r["message_id"], r["conversation"], status=r["status"], delivery=r["delivery"])


class LogStore:
    """An aiosqlite connection in WAL mode with the migrations applied."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self.writes = Backlog(db)  # writes that wait out a full disk or another writer's lock

    @classmethod
    async def open(cls, path: Path) -> LogStore:
        """Open (creating folders and schema as needed) and migrate."""
        unwritable = (f"fix: make {path.parent} writable by this user (and the file, if it exists), or set "
                      "`database` in config.yaml (or $BOT_DATABASE) to a writable path.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Tried with the standard library first: a failed aiosqlite connect leaves its worker thread
            # reporting to an event loop that is closed by then (a traceback after the error line).
            sqlite3.connect(path).close()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the log database {path}: {exc}; {unwritable}") from None
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        store = cls(db, path)
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await store.migrate()
        except Exception as exc:
            await db.close()  # its worker thread would keep the process alive
            text = str(exc).lower()
            if "readonly" in text or "unable to open" in text or "disk i/o" in text:
                raise ConfigError(f"cannot write the log database {path}: {exc}; {unwritable}") from None
            if "locked" in text or "busy" in text:
                raise ConfigError(f"the log database {path} is locked by another process ({exc}); fix: stop the "
                                  "other `bot` using it, or give this one its own `database`.") from None
            if "full" in text:
                raise ConfigError(f"the disk holding the log database {path} is full; fix: free space there, or "
                                  "set `database` to a path on another disk.") from None
            raise ConfigError(f"cannot migrate the log database {path}: {exc}; fix: restore a backup, or move the "
                              "file aside (set BOT_DATABASE) to start a new log.") from exc
        return store

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied (migrations.apply); their numbers."""
        return await migrations.apply(self.db)

    async def schema_version(self) -> int:
        """The highest applied migration."""
        return await migrations.version(self.db)

    async def close(self) -> None:
        """Make the kept writes if the database takes them again, and close the connection."""
        try:
            await self.writes.close()
        finally:
            await self.db.close()  # its worker thread would keep the process alive

    async def receive(self, msg: Incoming, key: str = "", *, question: bool = True) -> Received:
        """Take a message in one transaction: its dedupe `key` claimed and, for a question, its turn recorded
        before anything is generated (a crash cannot leave it seen but unlogged); a repeat finds the turn
        logged for it instead. Raises StoreUnavailable when the database takes no writes."""
        now = time.time()

        async def take(db: aiosqlite.Connection) -> Received:
            if key:
                cur = await db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (msg.channel, key, now))
                if cur.rowcount != 1:
                    prior = await _of_message(db, msg.channel, msg.chat_id, msg.message_id or "")
                    return Received(repeat=True, prior=prior)
            if not question:
                return Received()
            cur = await db.execute(
                "INSERT INTO turns (channel, chat_id, user_id, conversation, message_id, question, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg.channel, msg.chat_id, msg.user_id, msg.conversation_key, msg.message_id, msg.text, now))
            return Received(turn_id=int(cur.lastrowid or 0))

        return await self.writes.now(take)

    async def start_turn(self, msg: Incoming, claim: str = "") -> int | None:
        """Record a question (receive): its turn id, or None when `claim` was claimed already."""
        return (await self.receive(msg, claim)).turn_id

    async def finish_turn(self, turn_id: int, reply: Reply) -> None:
        """Record the answer, what it was answered from, timings and any error."""
        cites = json.dumps([{"id": c.id, "n": c.n, "section": c.section} for c in reply.citations],
                           ensure_ascii=False)
        status = "error" if reply.error else "answered"
        await self.writes.later(
            "UPDATE turns SET status=?, answer=?, draft=?, refused=?, retracted=?, decline_reason=?, citations=?, "
            "ttft_ms=?, total_ms=?, prompt_tokens=?, completion_tokens=?, model=?, content_version=?, error=?, "
            "answered_at=?, delivery='waiting', path=?, score=?, signals=? WHERE id=?",
            (status, reply.text, reply.draft, int(reply.refused), int(reply.retracted), reply.decline_reason,
             cites, reply.ttft_ms, reply.total_ms, reply.prompt_tokens, reply.completion_tokens, reply.model,
             reply.content_version, reply.error, time.time(), reply.path or None, reply.score,
             json.dumps(reply.signals) if reply.signals else None, turn_id),
            turn_id,
        )

    async def delivered(self, turn_id: int, error: str | None = None, *, final: bool = False, via: str = "") -> None:
        """The messenger confirmed the answer (no error; `via` how, where a channel has several ways); or it
        failed: kept waiting for a re-send, or `final` (the user blocked the bot, the answer is too old) given up."""
        if error is None:
            sql, args = ("UPDATE turns SET delivery='delivered', delivered_at=?, delivered_via=? WHERE id=?",
                         (time.time(), via or None, turn_id))
        elif final:  # an unanswered question is given up too: no restart answers it
            sql, args = ("UPDATE turns SET delivery='failed', delivery_error=?, status=CASE status WHEN 'pending' "
                         "THEN 'abandoned' ELSE status END WHERE id=? AND coalesce(delivery, '') != 'delivered'",
                         (error[:500], turn_id))
        else:
            sql, args = ("UPDATE turns SET delivery_error=? WHERE id=? AND coalesce(delivery, '') != 'delivered'",
                         (error[:500], turn_id))
        await self.writes.later(sql, args, turn_id)

    async def by_message(self, channel: str, chat_id: str, message_id: str) -> PendingTurn | None:
        """The turn logged for a messenger message, if any (a re-delivered message finds its turn here)."""
        return await _of_message(self.db, channel, chat_id, message_id)

    async def stored_reply(self, turn_id: int) -> Reply:
        """The logged answer of a turn, as the engine made it (to deliver it again without the model)."""
        async with self.db.execute("SELECT * FROM turns WHERE id=?", (turn_id,)) as cur:
            r = await cur.fetchone()
        if r is None or r["answer"] is None:
            raise LookupError(f"turn {turn_id} has no answer")
        return Reply(r["answer"], bool(r["refused"]), await self._citations(r["citations"]), turn_id=turn_id,
                     model=r["model"] or "", content_version=r["content_version"] or "",
                     retracted=bool(r["retracted"]), decline_reason=r["decline_reason"] or "", error=r["error"])

    async def _citations(self, cites: str | None) -> list[Citation]:
        """Logged citations (JSON) with their passages' texts."""
        out = []
        for c in json.loads(cites or "[]"):
            async with self.db.execute("SELECT text FROM passages WHERE id=?", (c["id"],)) as cur:
                prow = await cur.fetchone()
            out.append(Citation(c["id"], c["section"], prow[0] if prow else "", c["n"]))
        return out

    async def history(self, conversation: str, limit: int) -> list[HistoryTurn]:
        """The last `limit` answered turns of a conversation since its last /reset, oldest first."""
        sql = (
            "SELECT question, answer, refused FROM turns WHERE conversation=? AND status='answered' "
            "AND id > coalesce((SELECT after_turn FROM resets WHERE conversation=?), 0) ORDER BY id DESC LIMIT ?"
        )
        async with self.db.execute(sql, (conversation, conversation, limit)) as cur:
            rows = await cur.fetchall()
        return [HistoryTurn(r["question"], r["answer"] or "", bool(r["refused"])) for r in reversed(rows)]

    async def reset(self, conversation: str) -> None:
        """Forget the conversation's history for follow-ups (the turns stay in the log)."""
        async with self.db.execute("SELECT coalesce(max(id), 0) FROM turns") as cur:
            row = await cur.fetchone()
        await self.writes.later(  # the last turn now, not when a kept write is made
            "INSERT INTO resets VALUES (?, ?, ?) "
            "ON CONFLICT(conversation) DO UPDATE SET after_turn=excluded.after_turn, at=excluded.at",
            (conversation, int(row[0]) if row else 0, time.time()),
        )

    async def last_citations(self, conversation: str) -> list[Citation]:
        """The citations of the conversation's last answer, with passage texts."""
        sql = "SELECT citations FROM turns WHERE conversation=? AND status='answered' ORDER BY id DESC LIMIT 1"
        async with self.db.execute(sql, (conversation,)) as cur:
            row = await cur.fetchone()
        return await self._citations(row[0]) if row else []

    async def record_passages(self, passages: Iterable[Passage], version: str) -> None:
        """Keep every passage ever served, so logged citation ids stay resolvable after reloads."""
        rows = [(p.id, p.section, p.text, p.source, version, time.time()) for p in passages]
        await self.writes.now(lambda db: db.executemany("INSERT OR IGNORE INTO passages VALUES (?, ?, ?, ?, ?, ?)",
                                                        rows))

    async def log_event(self, channel: str, chat_id: str, user_id: str, kind: str, detail: str = "") -> None:
        """Record something that is not a turn (a denied admin command, a bad signature, a reload)."""
        await self.writes.later(
            "INSERT INTO events (at, channel, chat_id, user_id, kind, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), channel, chat_id, user_id, kind, detail),
        )

    async def claim(self, channel: str, key: str) -> bool:
        """True the first time `key` is seen for `channel` (persisted), False for a repeat; raises
        StoreUnavailable when the database takes no writes."""
        cur = await self.writes.now(
            lambda db: db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (channel, key, time.time())))
        return cur.rowcount == 1

    def writing(self, turn_id: int) -> bool:
        """Whether a write about this turn still waits in the backlog (its answer or delivery not logged yet)."""
        return self.writes.holds(turn_id)

    async def seen(self, channel: str, key: str) -> bool:
        """Whether `key` was claimed for `channel` (a message received before)."""
        async with self.db.execute("SELECT 1 FROM seen WHERE channel=? AND key=?", (channel, key)) as cur:
            return await cur.fetchone() is not None

    async def pending_turns(self, max_age_s: float, channels: Iterable[str]) -> list[PendingTurn]:
        """Turns younger than max_age_s on these channels left unanswered, or answered and not delivered;
        older unanswered ones are marked abandoned, older undelivered ones failed."""
        chans = list(channels)
        marks = ",".join("?" * len(chans))
        cutoff = time.time() - max_age_s

        async def give_up(db: aiosqlite.Connection) -> None:
            await db.execute(f"UPDATE turns SET status='abandoned' WHERE status='pending' AND created_at < ? "
                             f"AND channel IN ({marks})", (cutoff, *chans))
            await db.execute(
                "UPDATE turns SET delivery='failed', "
                "delivery_error=coalesce(delivery_error || '; ', '') || 'too old to re-send' "
                f"WHERE delivery='waiting' AND created_at < ? AND channel IN ({marks})", (cutoff, *chans))

        await self.writes.now(give_up)
        sql = (f"SELECT * FROM turns WHERE (status='pending' OR delivery='waiting') AND created_at >= ? "
               f"AND channel IN ({marks}) ORDER BY id")
        async with self.db.execute(sql, (cutoff, *chans)) as cur:
            rows = await cur.fetchall()
        return [_pending(r) for r in rows]

    async def recent_questions(self, within_s: float) -> list[tuple[str, str, float]]:
        """(channel, user id, age in seconds) of the questions logged within the last `within_s` seconds."""
        now = time.time()
        async with self.db.execute("SELECT channel, user_id, created_at FROM turns WHERE created_at >= ?",
                                   (now - within_s,)) as cur:
            return [(r[0], r[1], now - r[2]) for r in await cur.fetchall()]

    async def stats(self, since_hours: float, channel: str | None = None) -> Stats:
        """Turns, distinct users, declines, errors and latency percentiles for the period."""
        return await read_stats(self.db, since_hours, channel)

    async def usage(self, since_hours: float, channel: str | None = None) -> Usage:
        """Questions per day, outcomes, answer times and the most-cited passages, for /stats's chart."""
        return await read_usage(self.db, since_hours, channel)

    async def recent(self, limit: int, channel: str | None = None) -> list[dict[str, Any]]:
        """The newest turns as dicts (newest last), for `bot logs`."""
        return await export.recent(self.db, limit, channel)

    async def columns(self, table: str) -> list[str]:
        """A log table's column names, in schema order."""
        return await export.columns(self.db, table)

    def export(self, table: str, channel: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every row of one log table (of one channel, for the tables that have one), read in chunks."""
        return export.rows(self.db, table, channel)

    async def prune(self, retention_days: float, redact_after_days: float = 0.0, key: bytes = b"") -> dict[str, int]:
        """Rows past the retention deleted, old ids and texts redacted (retention.prune); counts per kind."""
        return await retention.prune(self.db, self.writes, retention_days, redact_after_days, key)
