"""The selective-answering curve of one eval run: as the operating point (`grounding.answer_threshold`)
moves, the share of answerable questions answered right, the share whose answer is at least shown (right,
or the sentence holding it quoted in the decline), against the share of out-of-scope questions answered.

Extracted answers are scored both ways in the run (as if answered and as if declined), so one run gives
the whole curve; answers of the free-draft path (and English ones, whose translation exists only when
answered) keep the outcome they had. Counts come with 95 % Wilson intervals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.measure.evaluation import Result

Z95 = 1.959964
# Measured reference points per set (the naive prompt's, the previous release's), drawn on its curve.
REFERENCES = Path(__file__).resolve().parents[1] / "data" / "curve_references.json"


def references(name: str, path: Path = REFERENCES) -> dict[str, dict[str, Any]]:
    """The reference points recorded for the set `name` (its file's stem, and `_tune`/`_holdout`)."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get(name, {}))


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def _movable(r: Result) -> bool:
    return r.path == "extract" and r.score is not None and r.lang == "zh"


def _outcome(r: Result, threshold: float) -> tuple[bool, bool, bool]:
    """(answered, right, shown) of one question at `threshold`."""
    if not _movable(r):
        return (not r.refused, r.correct and r.kind != "out_of_scope", r.shown)
    answered = (r.score or 0.0) >= threshold
    right = answered and r.right_if_answered
    return (answered, right, right or (not answered and r.shown_if_declined))


@dataclass
class Point:
    """The totals at one operating point."""

    threshold: float
    facts: int
    right: int
    shown: int
    out_of_scope: int
    answered_out_of_scope: int

    def as_dict(self) -> dict[str, Any]:
        """Shares with their intervals, for the JSON file."""
        return {"threshold": self.threshold, "facts": self.facts, "right": self.right, "shown": self.shown,
                "out_of_scope": self.out_of_scope, "answered_out_of_scope": self.answered_out_of_scope,
                "right_share": _share(self.right, self.facts), "right_ci": wilson(self.right, self.facts),
                "shown_share": _share(self.shown, self.facts), "shown_ci": wilson(self.shown, self.facts),
                "oos_answered_share": _share(self.answered_out_of_scope, self.out_of_scope),
                "oos_answered_ci": wilson(self.answered_out_of_scope, self.out_of_scope)}


def _share(k: int, n: int) -> float:
    return round(k / n, 4) if n else 0.0


def point(results: Sequence[Result], threshold: float) -> Point:
    """The totals if the operating point were `threshold`."""
    facts = [r for r in results if r.kind != "out_of_scope"]
    oos = [r for r in results if r.kind == "out_of_scope"]
    fact_outcomes = [_outcome(r, threshold) for r in facts]
    return Point(threshold, len(facts), sum(o[1] for o in fact_outcomes), sum(o[2] for o in fact_outcomes),
                 len(oos), sum(_outcome(r, threshold)[0] for r in oos))


def curve(results: Sequence[Result]) -> list[Point]:
    """One point per distinct score (and the ends), lowest threshold first."""
    scores = sorted({round(r.score, 4) for r in results if _movable(r) and r.score is not None})
    thresholds = sorted({0.0, *scores, 1.0001})
    return [point(results, t) for t in thresholds]


def write(results: Sequence[Result], threshold: float, base: Path, title: str,
          references: dict[str, dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """`base`.curve.json and `base`.curve.png: the curve, the operating point and the reference points."""
    points = curve(results)
    here = point(results, threshold)
    data = {"set": title, "operating_point": here.as_dict(), "points": [p.as_dict() for p in points],
            "references": references or {},
            "extracted": sum(1 for r in results if r.path == "extract"), "questions": len(results)}
    json_path, png_path = base.with_suffix(".curve.json"), base.with_suffix(".curve.png")
    json_path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    _plot(points, here, references or {}, title, png_path)
    return json_path, png_path


def _plot(points: list[Point], here: Point, references: dict[str, dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    xs = [p.answered_out_of_scope / max(p.out_of_scope, 1) for p in points]
    ax.step(xs, [p.right / max(p.facts, 1) for p in points], where="post", label="facts answered right")
    ax.step(xs, [p.shown / max(p.facts, 1) for p in points], where="post", linestyle="--",
            label="facts shown (right, or quoted in the decline)")
    hx = here.answered_out_of_scope / max(here.out_of_scope, 1)
    lo, hi = wilson(here.right, here.facts)
    ax.errorbar([hx], [here.right / max(here.facts, 1)], yerr=[[here.right / max(here.facts, 1) - lo],
                [hi - here.right / max(here.facts, 1)]], fmt="o", color="black", capsize=3,
                label=f"operating point (threshold {here.threshold:g})")
    for (name, ref), marker in zip(sorted(references.items()), "sD^v", strict=False):
        if ref.get("facts") and ref.get("out_of_scope"):
            ax.plot([ref["answered_out_of_scope"] / ref["out_of_scope"]], [ref["right"] / ref["facts"]], marker,
                    markersize=8, label=f"{name} ({ref.get('note', '')})".replace(" ()", ""))
    ax.set_xlabel("out-of-scope questions answered (share)")
    ax.set_ylabel("answerable questions (share)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}: {here.facts} answerable, {here.out_of_scope} out of scope", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
