"""The log's housekeeping: rows past the retention deleted, old user ids and texts redacted."""

from __future__ import annotations

import hashlib
import hmac
import time

from bot.log.backlog import Backlog
from bot.log.database import Database
from bot.log.ratings import AWAIT_S

SEEN_KEEP_S = 2 * 86400  # dedupe keys outlive any repeat: Telegram keeps an update 24 h, WeCom retries for minutes
REDACTED = "[redacted]"


async def prune(db: Database, writes: Backlog, retention_days: float, redact_after_days: float = 0.0,
            key: bytes = b"") -> dict[str, int]:
    """Delete turns, events and resets past the retention (0: none), dedupe keys past their use, and
    replace user ids and texts past `redact_after_days` (ids by a keyed hash, so one user's turns still
    group together). Counts of rows touched, per kind."""
    now, done = time.time(), {}
    seen_keep = min(SEEN_KEEP_S, retention_days * 86400) if retention_days else SEEN_KEEP_S

    async def delete(db: Database) -> None:
        done["seen"] = await db.execute("DELETE FROM seen WHERE at < ?", (now - seen_keep,))
        # Proposals live ten minutes; the taken and expired ones go after a day.
        done["proposals"] = await db.execute("DELETE FROM proposals WHERE created_at < ?", (now - 86400,))
        # Replies awaited hold questions: kept a week at most, and no longer than the turns they came from.
        keep = min(AWAIT_S, retention_days * 86400) if retention_days else AWAIT_S
        done["awaiting"] = await db.execute("DELETE FROM awaiting WHERE at < ?", (now - keep,))
        if retention_days:
            cutoff = now - retention_days * 86400
            for table, column in (("turns", "created_at"), ("events", "at"), ("resets", "at")):
                done[table] = await db.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,))
            # A rating goes with its answer, or at the retention (a rating may be younger than its answer).
            done["ratings"] = await db.execute("DELETE FROM ratings WHERE at < ? OR turn_id NOT IN "
                                               "(SELECT id FROM turns)", (cutoff,))
        if redact_after_days:
            done["redacted"] = await _redact(db, now - redact_after_days * 86400, key)

    await writes.now(delete)
    return done


async def _redact(db: Database, before: float, key: bytes) -> int:
    """Replace ids and texts of turns and events older than `before` (not committed)."""
    def pseudo(value: str) -> str:
        return "r:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    sql = "SELECT id, chat_id, user_id, conversation FROM turns WHERE created_at < ? AND question != ?"
    rows = await db.fetchall(sql, (before, REDACTED))
    await db.executemany(
        "UPDATE turns SET chat_id=?, user_id=?, conversation=?, question=?, answer=CASE WHEN answer IS NULL "
        "THEN NULL ELSE ? END, draft=NULL, delivery_error=NULL WHERE id=?",
        [(pseudo(r["chat_id"]), pseudo(r["user_id"]), pseudo(r["conversation"]), REDACTED, REDACTED, r["id"])
         for r in rows])
    events = await db.fetchall("SELECT id, chat_id, user_id FROM events WHERE at < ? AND user_id NOT LIKE 'r:%'",
                               (before,))
    await db.executemany("UPDATE events SET chat_id=?, user_id=?, detail='' WHERE id=?",
                         [(pseudo(e["chat_id"]), pseudo(e["user_id"]), e["id"]) for e in events])
    await db.execute("DELETE FROM resets WHERE at < ?", (before,))  # keys hold user ids
    ratings = await db.fetchall("SELECT turn_id, user_id FROM ratings WHERE at < ? AND user_id NOT LIKE 'r:%'",
                                (before,))
    await db.executemany("UPDATE ratings SET user_id=?, reason=CASE WHEN reason IS NULL THEN NULL ELSE ? END "
                         "WHERE turn_id=? AND user_id=?",
                         [(pseudo(r["user_id"]), REDACTED, r["turn_id"], r["user_id"]) for r in ratings])
    await db.execute("DELETE FROM awaiting WHERE at < ?", (before,))  # rows hold user ids
    return len(rows)
