"""bot/log/usage.py: /stats's numbers per day from the log, and the chart that draws exactly those numbers."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import matplotlib.image
import pytest

from bot.log.store import LogStore
from bot.log.usage import chart, figure
from bot.types import Incoming, Reply

DAY = 86400


@pytest.fixture
async def store(log_target: Path | str) -> AsyncIterator[LogStore]:
    """The same numbers from either engine (SQLite, PostgreSQL)."""
    s = await LogStore.open(log_target)
    yield s
    await s.close()


async def turn(store: LogStore, channel: str, days_ago: float, *, refused: bool = False, error: bool = False,
               total_ms: int = 1000, cites: tuple[str, ...] = ()) -> None:
    tid = await store.start_turn(Incoming(channel, "c", "u", "问题"))
    assert tid is not None
    reply = Reply("答案", refused, total_ms=total_ms, error="boom" if error else None)
    await store.finish_turn(tid, reply)
    citations = json.dumps([{"id": c, "n": 1, "section": f"节{c}"} for c in cites], ensure_ascii=False)
    await store.db.execute("UPDATE turns SET created_at=?, citations=? WHERE id=?",
                           (time.time() - days_ago * DAY, citations, tid))
    await store.db.commit()


async def seeded(store: LogStore) -> None:
    await turn(store, "telegram", 2, total_ms=1000, cites=("p1",))
    await turn(store, "telegram", 2, total_ms=3000, cites=("p1", "p2"))
    await turn(store, "wecom", 2, refused=True, total_ms=500)
    await turn(store, "telegram", 0, total_ms=2000, cites=("p2",))
    await turn(store, "cli", 0, error=True, total_ms=100)
    await turn(store, "wecom", 0, total_ms=4000, cites=("p1",))


async def test_usage_counts_questions_outcomes_times_and_citations_per_day(store: LogStore) -> None:
    await seeded(store)
    usage = await store.usage(3 * 24)
    assert len(usage.days) in (3, 4) and usage.days == sorted(usage.days)
    first, last = usage.days.index(usage.days[-3]), len(usage.days) - 1  # two days ago, today
    assert usage.by_channel["telegram"][first] == 2 and usage.by_channel["telegram"][last] == 1
    assert usage.by_channel["wecom"][first] == 1 and usage.by_channel["cli"][last] == 1
    assert (usage.answered[first], usage.declined[first], usage.errors[first]) == (2, 1, 0)
    assert (usage.answered[last], usage.declined[last], usage.errors[last]) == (2, 0, 1)
    assert usage.p50_ms[first] == 1000 and usage.p95_ms[first] == 3000
    assert usage.cited == [("p1", "节p1", 3), ("p2", "节p2", 2)]
    assert (await store.usage(24, "wecom")).cited == [("p1", "节p1", 1)]


async def test_the_chart_draws_exactly_those_numbers_and_decodes_as_a_png(store: LogStore) -> None:
    await seeded(store)
    usage = await store.usage(3 * 24)
    fig = figure(usage, "Last 72 h")
    per_day, outcome, _, cited = fig.axes
    heights = [round(p.get_height()) for p in per_day.patches]
    assert sum(heights) == 6  # every question once, stacked by channel
    answered = [round(p.get_height()) for p in outcome.containers[0]]
    declined = [round(p.get_height()) for p in outcome.containers[1]]
    assert answered == usage.answered and declined == usage.declined
    assert [round(p.get_width()) for p in cited.patches] == [2, 3]  # p2, then p1 on top
    png = chart(usage, "Last 72 h")
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (750, 1100)
