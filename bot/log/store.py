"""The log store: every turn (question before generation, answer after), events, dedupe keys; on SQLite or
PostgreSQL (database.py), the same behaviour on both."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, StoreUnavailable
from bot.log import export, migrations, retention
from bot.log.backlog import Backlog
from bot.log.database import Database, Row, is_url, shown
from bot.log.leases import Leases
from bot.log.postgres import PostgresDatabase
from bot.log.proposals import Proposals
from bot.log.ratings import Ratings
from bot.log.sqlite import SqliteDatabase
from bot.log.usage import Usage, read_stats, read_usage
from bot.types import Citation, HistoryTurn, Incoming, Passage, PendingTurn, Reply, Stats

_CLAIM = "INSERT INTO seen VALUES (?, ?, ?) ON CONFLICT DO NOTHING"  # one winner, across instances too


@dataclass(frozen=True)
class Received:
    """What the log made of a message: a repeat (with the turn logged for it, if any), or taken (a question's
    new turn id; None for a command or a refusal)."""

    repeat: bool = False
    prior: PendingTurn | None = None
    turn_id: int | None = None


async def _of_message(db: Database, channel: str, chat_id: str, message_id: str) -> PendingTurn | None:
    """The newest turn logged for a messenger message."""
    sql = "SELECT * FROM turns WHERE channel=? AND chat_id=? AND message_id=? ORDER BY id DESC LIMIT 1"
    row = await db.fetchone(sql, (channel, chat_id, message_id))
    return _pending(row) if row else None


def _pending(r: Row) -> PendingTurn:
    return PendingTurn(r["id"], r["channel"], r["chat_id"], r["user_id"], r["question"], r["created_at"],
                       r["message_id"], r["conversation"], status=r["status"], delivery=r["delivery"],
                       placeholder=r.get("placeholder"))


def _unwritable(path: Path) -> str:
    return (f"fix: make {path.parent} writable by this user (and the file, if it exists), or set `database` in "
            "config.yaml (or $BOT_DATABASE) to a writable path.")


async def connect(target: Path | str) -> Database:
    """A connection to the log's database (schema untouched), or a ConfigError naming the fix."""
    if is_url(target):
        try:
            return await PostgresDatabase.open(str(target))
        except Exception as exc:
            raise ConfigError(f"cannot connect to the log database {shown(target)}: {str(exc).strip()}; fix: start "
                              "PostgreSQL there, or correct `log.database_url` (or $BOT_DATABASE_URL; the password "
                              "may come from $PGPASSWORD).") from None
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Tried with the standard library first: a failed aiosqlite connect leaves its worker thread
        # reporting to an event loop that is closed by then (a traceback after the error line).
        sqlite3.connect(path).close()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open the log database {path}: {exc}; {_unwritable(path)}") from None
    try:
        return await SqliteDatabase.open(path)
    except Exception as exc:
        raise _unusable(path, exc) from exc


def _unusable(target: Path | str, exc: Exception) -> ConfigError:
    """Why a log cannot be set up or migrated, with the fix."""
    if is_url(target):
        return ConfigError(f"cannot migrate the log database {shown(target)}: {str(exc).strip()}; fix: give the "
                           "user in the URL the right to create tables there (or restore a backup).")
    path, text = Path(target), str(exc).lower()
    if "readonly" in text or "unable to open" in text or "disk i/o" in text:
        return ConfigError(f"cannot write the log database {path}: {exc}; {_unwritable(path)}")
    if "locked" in text or "busy" in text:
        return ConfigError(f"the log database {path} is locked by another process ({exc}); fix: stop the "
                           "other `bot` using it, or give this one its own `database`.")
    if "full" in text:
        return ConfigError(f"the disk holding the log database {path} is full; fix: free space there, or "
                           "set `database` to a path on another disk.")
    return ConfigError(f"cannot migrate the log database {path}: {exc}; fix: restore a backup, or move the "
                       "file aside (set BOT_DATABASE) to start a new log.")


class LogStore:
    """The log on one database connection (SQLite in WAL mode, or PostgreSQL), migrations applied."""

    def __init__(self, db: Database, path: Path | None = None) -> None:
        self.db = db
        self.path = path  # the SQLite file; None on PostgreSQL
        self.writes = Backlog(db)  # writes that wait out a full disk, another writer's lock, a server restart
        self.leases = Leases(self.writes)  # which instance is on which turn (several may share the log)
        self.proposals = Proposals(self.writes)  # admins' content changes waiting for their Confirm
        self.ratings = Ratings(self.writes, db)  # readers' ratings, replies awaited, digests sent
        self.closed = False

    @classmethod
    async def open(cls, target: Path | str) -> LogStore:
        """Open a SQLite file (creating folders and schema as needed) or a PostgreSQL URL, and migrate
        (instances starting together migrate one at a time)."""
        db = await connect(target)
        store = cls(db, None if is_url(target) else Path(target))
        try:
            await store.migrate()
        except Exception as exc:
            await db.close()  # aiosqlite's worker thread would keep the process alive
            raise _unusable(target, exc) from exc
        return store

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied (migrations.apply); their numbers."""
        return await migrations.apply(self.db)

    async def schema_version(self) -> int:
        """The highest applied migration."""
        return await migrations.version(self.db)

    async def close(self) -> None:
        """Release this instance's leases, make the kept writes if the database takes them, and close (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            if not self.writes.out:  # else the restart finds the leases lapsed
                await self.leases.release()
            await self.writes.close()
        finally:
            await self.db.close()  # its worker thread would keep the process alive

    async def receive(self, msg: Incoming, key: str = "", *, question: bool = True) -> Received:
        """Take a message in one transaction: its dedupe `key` claimed and, for a question, its turn recorded
        before anything is generated (a crash cannot leave it seen but unlogged); a repeat finds the turn
        logged for it instead. Raises StoreUnavailable when the database takes no writes."""
        now = time.time()

        async def take(db: Database) -> Received:
            if key and await db.execute(_CLAIM, (msg.channel, key, now)) != 1:
                prior = await _of_message(db, msg.channel, msg.chat_id, msg.message_id or "")
                return Received(repeat=True, prior=prior)
            if not question:
                return Received()
            turn_id = await db.insert(
                "INSERT INTO turns (channel, chat_id, user_id, conversation, message_id, question, created_at, "
                "lease_owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (msg.channel, msg.chat_id, msg.user_id, msg.conversation_key, msg.message_id, msg.text, now,
                 self.leases.owner, now + self.leases.lease_s))
            return Received(turn_id=turn_id)

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
            "answered_at=?, delivery='waiting', path=?, score=?, signals=?, closest=? WHERE id=?",
            (status, reply.text, reply.draft, int(reply.refused), int(reply.retracted), reply.decline_reason,
             cites, reply.ttft_ms, reply.total_ms, reply.prompt_tokens, reply.completion_tokens, reply.model,
             reply.content_version, reply.error, time.time(), reply.path or None, reply.score,
             json.dumps(reply.signals) if reply.signals else None, reply.sentence or None,
             turn_id),
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

    async def placed(self, turn_id: int, placeholder: str) -> None:
        """Where the turn's answer is being shown (a messenger's message id), for whoever finishes it."""
        await self.writes.later("UPDATE turns SET placeholder=? WHERE id=?", (placeholder, turn_id), turn_id)

    async def by_message(self, channel: str, chat_id: str, message_id: str) -> PendingTurn | None:
        """The turn logged for a messenger message, if any (a re-delivered message finds its turn here)."""
        return await _of_message(self.db, channel, chat_id, message_id)

    async def stored_reply(self, turn_id: int) -> Reply:
        """The logged answer of a turn, as the engine made it (to deliver it again without the model)."""
        r = await self.db.fetchone("SELECT * FROM turns WHERE id=?", (turn_id,))
        if r is None or r["answer"] is None:
            raise LookupError(f"turn {turn_id} has no answer")
        return Reply(r["answer"], bool(r["refused"]), await self._citations(r["citations"]), turn_id=turn_id,
                     model=r["model"] or "", content_version=r["content_version"] or "",
                     retracted=bool(r["retracted"]), decline_reason=r["decline_reason"] or "", error=r["error"])

    async def _citations(self, cites: str | None) -> list[Citation]:
        """Logged citations (JSON) with their passages' texts."""
        out = []
        for c in json.loads(cites or "[]"):
            prow = await self.db.fetchone("SELECT text FROM passages WHERE id=?", (c["id"],))
            out.append(Citation(c["id"], c["section"], prow["text"] if prow else "", c["n"]))
        return out

    async def history(self, conversation: str, limit: int) -> list[HistoryTurn]:
        """The last `limit` answered turns of a conversation since its last /reset, oldest first."""
        sql = (
            "SELECT question, answer, refused FROM turns WHERE conversation=? AND status='answered' "
            "AND id > coalesce((SELECT after_turn FROM resets WHERE conversation=?), 0) ORDER BY id DESC LIMIT ?"
        )
        rows = await self.db.fetchall(sql, (conversation, conversation, limit))
        return [HistoryTurn(r["question"], r["answer"] or "", bool(r["refused"])) for r in reversed(rows)]

    async def reset(self, conversation: str) -> None:
        """Forget the conversation's history for follow-ups (the turns stay in the log)."""
        row = await self.db.fetchone("SELECT coalesce(max(id), 0) AS last FROM turns")
        await self.writes.later(  # the last turn now, not when a kept write is made
            "INSERT INTO resets VALUES (?, ?, ?) "
            "ON CONFLICT(conversation) DO UPDATE SET after_turn=excluded.after_turn, at=excluded.at",
            (conversation, int(row["last"]) if row else 0, time.time()),
        )

    async def last_citations(self, conversation: str) -> list[Citation]:
        """The citations of the conversation's last answer, with passage texts."""
        sql = "SELECT citations FROM turns WHERE conversation=? AND status='answered' ORDER BY id DESC LIMIT 1"
        row = await self.db.fetchone(sql, (conversation,))
        return await self._citations(row["citations"]) if row else []

    async def record_passages(self, passages: Iterable[Passage], version: str) -> None:
        """Keep every passage ever served, so logged citation ids stay resolvable after reloads."""
        rows = [(p.id, p.section, p.text, p.source, version, time.time()) for p in passages]
        await self.writes.now(lambda db: db.executemany(
            "INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows))

    async def log_event(self, channel: str, chat_id: str, user_id: str, kind: str, detail: str = "") -> None:
        """Record something that is not a turn (a denied admin command, a bad signature, a reload)."""
        await self.writes.later(
            "INSERT INTO events (at, channel, chat_id, user_id, kind, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), channel, chat_id, user_id, kind, detail),
        )

    async def claim(self, channel: str, key: str) -> bool:
        """True the first time `key` is seen for `channel` (persisted), False for a repeat; raises
        StoreUnavailable when the database takes no writes."""
        return await self.writes.now(lambda db: db.execute(_CLAIM, (channel, key, time.time()))) == 1

    def writing(self, turn_id: int) -> bool:
        """Whether a write about this turn still waits in the backlog (its answer or delivery not logged yet)."""
        return self.writes.holds(turn_id)

    async def seen(self, channel: str, key: str) -> bool:
        """Whether `key` was claimed for `channel` (a message received before)."""
        return await self.db.fetchone("SELECT 1 AS one FROM seen WHERE channel=? AND key=?", (channel, key)) is not None

    async def pending_turns(self, max_age_s: float, channels: Iterable[str]) -> list[PendingTurn]:
        """Turns younger than max_age_s on these channels left unanswered, or answered and not delivered,
        that no other live instance holds: claimed for this one. Older unanswered ones are marked abandoned,
        older undelivered ones failed."""
        return [_pending(r) for r in await self.leases.claim(max_age_s, channels)]

    async def last_event(self, kind: str) -> dict[str, Any] | None:
        """The newest event of a kind (id, chat_id, detail), or None."""
        rows = await self._read("SELECT id, chat_id, detail FROM events WHERE kind=? ORDER BY id DESC LIMIT 1", (kind,))
        return rows[0] if rows else None

    async def questions_of(self, channel: str, user_id: str, within_s: float) -> list[float]:
        """Ages in seconds of one user's questions logged within the last `within_s` seconds, by any instance;
        raises StoreUnavailable when the database cannot be read."""
        now = time.time()
        rows = await self._read("SELECT created_at FROM turns WHERE created_at >= ? AND channel = ? AND user_id = ?",
                                (now - within_s, channel, user_id))
        return [now - r["created_at"] for r in rows]

    async def _read(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """A query's rows; StoreUnavailable when the database cannot be read (a PostgreSQL restart)."""
        try:
            return await self.db.fetchall(sql, args)
        except self.db.errors as exc:
            if not self.db.outage(exc):
                raise
            raise StoreUnavailable(f"the log database cannot be read: {exc}") from exc

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

    async def snapshot(self, path: Path) -> dict[str, int]:
        """The whole log copied into a new SQLite file at `path` (the log page reads SQLite only); rows per table."""
        path.unlink(missing_ok=True)
        target = await LogStore.open(path)
        try:
            return await export.copy(self.db, target.db)
        finally:
            await target.close()

    async def prune(self, retention_days: float, redact_after_days: float = 0.0, key: bytes = b"") -> dict[str, int]:
        """Rows past the retention deleted, old ids and texts redacted (retention.prune); counts per kind."""
        return await retention.prune(self.db, self.writes, retention_days, redact_after_days, key)
