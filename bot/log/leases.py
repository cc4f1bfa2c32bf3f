"""Which bot instance is on which turn: a lease per turn, so that instances sharing one log answer each
question once and take over the turns of one that died.

An instance leases each question it takes, renews the leases of its unfinished turns while it lives, and
gives them up when it stops cleanly. Another instance (or a restart) takes a turn over only once its lease
has lapsed: a live instance's turns are never answered twice, a dead one's are answered after `lease_s`.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterable

from bot.log.backlog import Backlog
from bot.log.database import Database, Row

OPEN = "(status='pending' OR delivery='waiting')"  # a turn whose answer has not reached its reader yet
FREE = "(lease_until IS NULL OR lease_until < ? OR lease_owner = ?)"  # no other live instance is on it


class Leases:
    """This instance's claims on turns, written through the store's backlog."""

    def __init__(self, writes: Backlog, lease_s: float = 30.0) -> None:
        self.writes = writes
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease_s = lease_s  # a claim lapses this long after its last renewal (config log.lease_s)

    async def take(self, turn_id: int) -> bool:
        """Claim a turn for this instance unless another one holds a live lease on it; whether it was taken.
        Raises StoreUnavailable when the database takes no writes."""
        now = time.time()
        return await self.writes.now(lambda db: db.execute(
            f"UPDATE turns SET lease_owner=?, lease_until=? WHERE id=? AND {FREE}",
            (self.owner, now + self.lease_s, turn_id, now, self.owner))) == 1

    async def renew(self) -> int:
        """Extend this instance's leases on its unfinished turns; how many. Raises StoreUnavailable when the
        database takes no writes."""
        return await self.writes.now(lambda db: db.execute(
            f"UPDATE turns SET lease_until=? WHERE lease_owner=? AND {OPEN}", (time.time() + self.lease_s,
                                                                               self.owner)))

    async def release(self) -> None:
        """Give up this instance's leases (a clean stop): its unfinished turns go at once to whoever looks."""
        await self.writes.later(f"UPDATE turns SET lease_until=NULL WHERE lease_owner=? AND {OPEN}", (self.owner,))

    async def claim(self, max_age_s: float, channels: Iterable[str]) -> list[Row]:
        """Unfinished turns younger than max_age_s on these channels that no other live instance holds,
        claimed for this one, oldest first; older unanswered ones marked abandoned, older undelivered ones
        failed. Raises StoreUnavailable when the database takes no writes."""
        chans = list(channels)
        marks = ",".join("?" * len(chans))
        now = time.time()
        cutoff = now - max_age_s

        async def give_up_and_claim(db: Database) -> list[Row]:
            await db.execute(f"UPDATE turns SET status='abandoned' WHERE status='pending' AND created_at < ? "
                             f"AND channel IN ({marks})", (cutoff, *chans))
            await db.execute(
                "UPDATE turns SET delivery='failed', "
                "delivery_error=coalesce(delivery_error || '; ', '') || 'too old to re-send' "
                f"WHERE delivery='waiting' AND created_at < ? AND channel IN ({marks})", (cutoff, *chans))
            return await db.fetchall(
                f"UPDATE turns SET lease_owner=?, lease_until=? WHERE {OPEN} AND created_at >= ? AND channel IN "
                f"({marks}) AND {FREE} RETURNING *", (self.owner, now + self.lease_s, cutoff, *chans, now, self.owner))

        return sorted(await self.writes.now(give_up_and_claim), key=lambda r: r["id"])
