"""The gaps digest: the period's gaps sent to the admins who opted in (config `gaps.digest`), once per period
across restarts and instances (the log's `digests` table is claimed by the one that sends it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from bot.config import GapsConfig
from bot.core.gaps import report
from bot.core.services import Services
from bot.text import phrases

# (the admins who opted in, per channel; the text) -> how many of them got it
Notify = Callable[[dict[str, set[str]], str], Awaitable[int]]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def period(now: datetime, cfg: GapsConfig) -> str | None:
    """The period whose digest is due at `now` (local time): "2026-12-07" daily, "2026-W50" weekly, from the
    configured day and hour on; None before that, or when the digest is off."""
    if cfg.digest == "daily":
        return now.strftime("%Y-%m-%d") if now.hour >= cfg.hour else None
    if cfg.digest == "weekly":
        year, week, weekday = now.isocalendar()
        day = WEEKDAYS.index(cfg.day) + 1
        return f"{year}-W{week:02d}" if (weekday, now.hour) >= (day, cfg.hour) else None
    return None


async def send(services: Services, notify: Notify, now: datetime) -> tuple[str, int] | None:
    """The period's digest, if it is due, an admin opted in and no instance has sent it: composed, claimed in
    the log, sent to those admins; (period, admins reached), or None when there was nothing to send. Given
    back when no admin was reached or the sending broke off, so the period is never lost."""
    cfg, ratings = services.gaps_config, services.store.ratings
    key = period(now, cfg)
    if key is None or await ratings.digest_sent(key) or not (readers := await ratings.subscribers()):
        return None
    days = 1.0 if cfg.digest == "daily" else 7.0
    heading = phrases.message("digest_heading", cfg.language, period=key)
    text = heading + "\n" + report(await services.gaps(days), days, cfg.language, hint="digest_hint")
    if not await ratings.claim_digest(key):
        return None  # another instance claimed it meanwhile
    try:
        reached = await notify(readers, text)
    except BaseException:
        await asyncio.shield(ratings.unclaim_digest(key))
        raise
    if not reached:
        await ratings.unclaim_digest(key)
    return key, reached
