"""The gaps digest: the period's gaps sent to the admins who opted in (config `gaps.digest`), once per period
across restarts and instances (the log's `digests` table is claimed by the one that sends it)."""

from __future__ import annotations

from datetime import datetime

from bot.config import GapsConfig
from bot.core.gaps import report
from bot.core.services import Services
from bot.text import phrases

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


async def due(services: Services, now: datetime) -> tuple[str, str] | None:
    """(period, text) when this instance is the one to send the period's digest now; None otherwise."""
    cfg = services.gaps_config
    key = period(now, cfg)
    if key is None or not await services.store.ratings.claim_digest(key):
        return None
    days = 1.0 if cfg.digest == "daily" else 7.0
    heading = phrases.message("digest_heading", cfg.language, period=key)
    return key, heading + "\n" + report(await services.gaps(days), days, cfg.language, hint="digest_hint")


async def unsent(services: Services, key: str) -> None:
    """No admin could be reached: the period's digest is tried again at the next look."""
    await services.store.ratings.unclaim_digest(key)
