"""Usage of the bot as /stats shows it: the numbers read from the log, and the same numbers as a chart.

The chart is a PNG drawn headless (matplotlib's Agg): questions per day by channel, answered against
declined, median and p95 answer time, and the most-cited passages. Its labels are ASCII (the machine may
have no Chinese font); the text beside it names the passages' sections.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.log.database import Database
from bot.types import Stats

DAY_S = 86400


def percentile(values: list[int], q: float) -> int | None:
    """The q-quantile of `values` (nearest rank), None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Usage:
    """Per-day counts and times, and the passages cited most, over a period."""

    days: list[str] = field(default_factory=list)  # "2026-12-02", oldest first
    by_channel: dict[str, list[int]] = field(default_factory=dict)  # channel -> questions per day
    answered: list[int] = field(default_factory=list)
    declined: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    p50_ms: list[int | None] = field(default_factory=list)
    p95_ms: list[int | None] = field(default_factory=list)
    cited: list[tuple[str, str, int]] = field(default_factory=list)  # (passage id, section, times), most first


async def read_stats(db: Database, since_hours: float, channel: str | None) -> Stats:
    """Turns, distinct users, declines, errors and latency percentiles for the period."""
    rows = await _turns(db, time.time() - since_hours * 3600, channel)
    ttft = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]
    total = [r["total_ms"] for r in rows if r["total_ms"] is not None]
    return Stats(
        turns=len(rows), users=len({r["user_id"] for r in rows}),
        refusals=sum(1 for r in rows if r["refused"]), errors=sum(1 for r in rows if r["status"] == "error"),
        ttft_p50_ms=percentile(ttft, 0.5), ttft_p95_ms=percentile(ttft, 0.95),
        total_p50_ms=percentile(total, 0.5), total_p95_ms=percentile(total, 0.95), since_hours=since_hours,
    )


async def read_usage(db: Database, since_hours: float, channel: str | None, top: int = 8) -> Usage:
    """The period's questions grouped by day (UTC), and its most-cited passages."""
    since = time.time() - since_hours * 3600
    rows = await _turns(db, since, channel)
    first = datetime.fromtimestamp(since, UTC).date().toordinal()
    last = datetime.now(UTC).date().toordinal()
    days = [datetime.fromordinal(d).date().isoformat() for d in range(first, last + 1)]
    index = {d: i for i, d in enumerate(days)}
    out = Usage(days, answered=[0] * len(days), declined=[0] * len(days), errors=[0] * len(days))
    totals: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        i = index[datetime.fromtimestamp(r["created_at"], UTC).date().isoformat()]
        out.by_channel.setdefault(r["channel"], [0] * len(days))[i] += 1
        if r["status"] in ("answered", "error"):  # a question still pending has no outcome yet
            kind = out.errors if r["status"] == "error" else out.declined if r["refused"] else out.answered
            kind[i] += 1
        if r["total_ms"] is not None:
            totals[i].append(r["total_ms"])
    out.p50_ms = [percentile(totals[i], 0.5) for i in range(len(days))]
    out.p95_ms = [percentile(totals[i], 0.95) for i in range(len(days))]
    out.cited = await _cited(db, since, channel, top)
    return out


async def _turns(db: Database, since: float, channel: str | None) -> list[Any]:
    sql = "SELECT channel, user_id, refused, status, ttft_ms, total_ms, created_at FROM turns WHERE created_at >= ?"
    args: list[Any] = [since]
    if channel:
        sql += " AND channel = ?"
        args.append(channel)
    return await db.fetchall(sql, args)


async def _cited(db: Database, since: float, channel: str | None, top: int) -> list[tuple[str, str, int]]:
    """The `top` passages cited most often (counted here: SQLite and PostgreSQL read JSON differently)."""
    sql = "SELECT citations FROM turns WHERE created_at >= ? AND status = 'answered' AND citations IS NOT NULL"
    args: list[Any] = [since]
    if channel:
        sql += " AND channel = ?"
        args.append(channel)
    counts: Counter[str] = Counter()
    sections: dict[str, str] = {}
    async for r in db.iterate(sql, args):
        for c in json.loads(r["citations"] or "[]"):
            counts[c["id"]] += 1
            sections[c["id"]] = max(sections.get(c["id"], ""), c.get("section") or "")
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(pid, sections[pid], n) for pid, n in ranked]


def chart(usage: Usage, title: str) -> bytes:
    """The usage as a 2x2 PNG chart."""
    out = io.BytesIO()
    figure(usage, title).savefig(out, format="png")
    return out.getvalue()


def figure(usage: Usage, title: str) -> Any:
    """The matplotlib Figure behind `chart`."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    fig.suptitle(title)
    (per_day, outcome), (times, cited) = fig.subplots(2, 2)
    x = list(range(len(usage.days)))
    labels = [d[5:] for d in usage.days]  # MM-DD
    bottom = [0] * len(x)
    for name, counts in sorted(usage.by_channel.items()):
        per_day.bar(x, counts, bottom=bottom, label=name)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    _axes(per_day, "Questions per day by channel", x, labels, "questions")
    width = 0.4
    outcome.bar([i - width / 2 for i in x], usage.answered, width, label="answered", color="#2e7d32")
    outcome.bar([i + width / 2 for i in x], usage.declined, width, label="declined", color="#c62828")
    _axes(outcome, "Answered vs declined", x, labels, "questions")
    for values, name, style in ((usage.p50_ms, "median", "o-"), (usage.p95_ms, "p95", "s--")):
        points = [(i, v / 1000) for i, v in zip(x, values, strict=True) if v is not None]
        times.plot([p[0] for p in points], [p[1] for p in points], style, label=name)
    _axes(times, "Answer time", x, labels, "seconds")
    names = [f"[{k + 1}] {pid}" for k, (pid, _, _) in enumerate(usage.cited)][::-1]
    cited.barh(names, [n for _, _, n in usage.cited][::-1], color="#1565c0")
    cited.set_title("Most-cited passages (sections listed below)")
    cited.set_xlabel("citations")
    cited.xaxis.get_major_locator().set_params(integer=True)
    return fig


def _axes(ax: Any, title: str, x: list[int], labels: list[str], unit: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.yaxis.set_major_locator(MaxNLocator(integer=unit == "questions"))
    step = max(1, len(x) // 10)  # at most about ten day labels
    ax.set_xticks(x[::step], labels[::step])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize="small")
