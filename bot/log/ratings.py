"""Readers' ratings of answers, bot messages awaiting a reply, the gaps read back, and digests sent once."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from bot.log.backlog import Backlog
from bot.log.database import Database

AWAIT_S = 7 * 86400  # a reply to a 👎's question or to a /gaps list counts for a week
LATEST = "latest"  # where a channel without replies keeps the last notice asking for one (per chat)
LATEST_S = 30 * 60  # ... and how long the next document or link counts as the answer to it


def _one_line(reason: str) -> str:
    """A reader's reason as kept: one line, at most 500 characters."""
    return " ".join(reason.split())[:500]


@dataclass(frozen=True)
class Awaited:
    """What a reply to one bot message means: `kind` (reason, gaps), for whom, with its data."""

    user_id: str
    kind: str
    data: Any


@dataclass(frozen=True)
class Gap:
    """A question the content did not answer: declined, or rated 👎 (its reason, when given)."""

    turn_id: int
    question: str
    closest: str
    declined: bool
    reason: str
    at: float


class Ratings:
    """Ratings, awaited replies and digest claims, written through the store's backlog."""

    def __init__(self, writes: Backlog, db: Database) -> None:
        self.writes, self.db = writes, db

    async def rate(self, turn_id: int, channel: str, chat_id: str, user_id: str, rating: int,
                   reason: str = "") -> bool:
        """Record (or change) a reader's rating of an answer shown in this chat, a 👎 with its reason if given
        (0: withdraw it); False when there is no such answer here. A 👍 drops an earlier 👎's reason."""
        if rating == 0:
            return await self.writes.now(lambda db: db.execute(
                "DELETE FROM ratings WHERE turn_id=? AND user_id=? AND channel=? AND turn_id IN "
                "(SELECT id FROM turns WHERE chat_id=?)", (turn_id, user_id, channel, chat_id))) == 1
        sql = ("INSERT INTO ratings (turn_id, user_id, channel, rating, reason, at) "
               "SELECT id, ?, channel, ?, ?, ? FROM turns WHERE id=? AND channel=? AND chat_id=? "
               "AND status != 'pending' "
               "ON CONFLICT (turn_id, user_id) DO UPDATE SET rating=excluded.rating, at=excluded.at, "
               "reason=CASE WHEN excluded.rating > 0 THEN NULL ELSE coalesce(excluded.reason, ratings.reason) END")
        text = (_one_line(reason) or None) if rating < 0 else None
        args = (user_id, rating, text, time.time(), turn_id, channel, chat_id)
        return await self.writes.now(lambda db: db.execute(sql, args)) == 1

    async def reason(self, turn_id: int, user_id: str, reason: str) -> bool:
        """The reason for a reader's 👎 (one line, at most 500 characters); False when there is no 👎."""
        text = _one_line(reason)
        return await self.writes.now(lambda db: db.execute(
            "UPDATE ratings SET reason=? WHERE turn_id=? AND user_id=? AND rating < 0", (text, turn_id, user_id))) == 1

    async def last_answer(self, conversation: str) -> int | None:
        """The conversation's last answered turn (what /good and /bad rate)."""
        row = await self.db.fetchone(
            "SELECT id FROM turns WHERE conversation=? AND status='answered' ORDER BY id DESC LIMIT 1",
            (conversation,))
        return int(row["id"]) if row else None

    async def await_reply(self, channel: str, chat_id: str, message_id: str, user_id: str, kind: str,
                          data: Any) -> None:
        """A bot message whose reply means `kind` for `user_id` (kept through the backlog)."""
        await self.writes.later(
            "INSERT INTO awaiting (channel, chat_id, message_id, user_id, kind, data, at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (channel, chat_id, message_id) DO UPDATE SET user_id=excluded.user_id, kind=excluded.kind, "
            "data=excluded.data, at=excluded.at",
            (channel, chat_id, message_id, user_id, kind, json.dumps(data, ensure_ascii=False), time.time()))

    async def awaited(self, channel: str, chat_id: str, message_id: str, within_s: float = AWAIT_S) -> Awaited | None:
        """What a reply to this bot message means, if anything (younger than `within_s`)."""
        row = await self.db.fetchone(
            "SELECT user_id, kind, data FROM awaiting WHERE channel=? AND chat_id=? AND message_id=? AND at > ?",
            (channel, chat_id, message_id, time.time() - within_s))
        return Awaited(row["user_id"], row["kind"], json.loads(row["data"])) if row else None

    async def gaps(self, since_s: float) -> list[Gap]:
        """Questions declined or rated 👎 in the last `since_s` seconds, oldest first; no user ids."""
        rows = await self.db.fetchall(
            "SELECT t.id, t.question, t.closest, t.refused, min(r.rating) AS rating, max(r.reason) AS reason, "
            "t.created_at FROM turns t LEFT JOIN ratings r ON r.turn_id = t.id "
            "WHERE t.created_at >= ? AND t.status = 'answered' AND t.question != '[redacted]' "
            "GROUP BY t.id, t.question, t.closest, t.refused, t.created_at "
            "HAVING t.refused = 1 OR min(r.rating) < 0 ORDER BY t.id", (time.time() - since_s,))
        return [Gap(int(r["id"]), r["question"], r["closest"] or "", bool(r["refused"]), r["reason"] or "",
                    r["created_at"]) for r in rows]

    async def subscribe(self, channel: str, user_id: str, on: bool) -> None:
        """An admin opts in to the digest (or out)."""
        if on:
            sql, args = ("INSERT INTO digest_admins (channel, user_id, at) VALUES (?, ?, ?) "
                         "ON CONFLICT (channel, user_id) DO NOTHING", (channel, user_id, time.time()))
        else:
            sql, args = "DELETE FROM digest_admins WHERE channel=? AND user_id=?", (channel, user_id)
        await self.writes.now(lambda db: db.execute(sql, args))

    async def subscribers(self) -> dict[str, set[str]]:
        """The admins who opted in to the digest, per channel."""
        found: dict[str, set[str]] = {}
        for r in await self.db.fetchall("SELECT channel, user_id FROM digest_admins"):
            found.setdefault(r["channel"], set()).add(r["user_id"])
        return found

    async def digest_sent(self, period: str) -> bool:
        """Whether an instance has claimed (and so sent, or is sending) this period's digest."""
        return await self.db.fetchone("SELECT 1 AS x FROM digests WHERE period=?", (period,)) is not None

    async def claim_digest(self, period: str) -> bool:
        """True for the one instance (across restarts) that sends this period's digest."""
        return await self.writes.now(lambda db: db.execute(
            "INSERT INTO digests (period, sent_at) VALUES (?, ?) ON CONFLICT (period) DO NOTHING",
            (period, time.time()))) == 1

    async def unclaim_digest(self, period: str) -> None:
        """The digest could not be sent to anyone: the next look tries again."""
        await self.writes.later("DELETE FROM digests WHERE period=?", (period,))
