"""The admins' content proposals in the log: a preview shown by one instance is confirmed by whichever
instance the press reaches, once (the library's Book, on the shared log)."""

from __future__ import annotations

import json
import time

from bot.content.library import Proposal
from bot.log.backlog import Backlog
from bot.log.database import Database


class Proposals:
    """Proposals written before their preview is shown, and taken with one atomic update."""

    def __init__(self, writes: Backlog) -> None:
        self.writes = writes

    async def keep(self, proposal: Proposal) -> None:
        """Record a new proposal (raises StoreUnavailable: no preview is shown that no one could confirm)."""
        p = proposal
        await self.writes.now(lambda db: db.execute(
            "INSERT INTO proposals (token, conversation, action, name, markdown, created_at, questions) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (p.token, p.by, p.action, p.name, p.markdown, p.at,
             json.dumps(p.questions, ensure_ascii=False) if p.questions else None)))

    async def take(self, token: str, by: str, ttl_s: float) -> Proposal | None:
        """The proposal, once, for the admin it was made for, if younger than ttl_s (None otherwise)."""
        now = time.time()

        async def taking(db: Database) -> list[dict]:
            return await db.fetchall(
                "UPDATE proposals SET taken_at=? WHERE token=? AND conversation=? AND taken_at IS NULL "
                "AND created_at > ? RETURNING *", (now, token, by, now - ttl_s))

        rows = await self.writes.now(taking)
        if not rows:
            return None
        r = rows[0]
        return Proposal(r["token"], r["conversation"], r["action"], r["name"], r["markdown"], r["created_at"],
                        tuple(json.loads(r["questions"])) if r["questions"] else ())
