"""bot/measure/curve.py: the selective-answering curve from one eval run, with Wilson intervals, as JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

from bot.measure.curve import curve, point, wilson, write
from bot.measure.evaluation import Result


def result(kind: str, *, score: float | None = None, right: bool = False, shown: bool = False,
           refused: bool = False, correct: bool = False, path: str = "extract", lang: str = "zh") -> Result:
    return Result("q", kind, "问题", "答案", refused, correct, [], None, None, lang=lang, path=path, score=score,
                  copied="答案" if path == "extract" else "", right_if_answered=right, shown_if_declined=shown,
                  shown=correct)


def test_wilson_intervals_match_the_textbook_values() -> None:
    assert wilson(0, 60) == (0.0, 0.0602)  # "0 answered" of 60 bounds the rate below 6 %
    lo, hi = wilson(45, 60)
    assert (round(lo, 3), round(hi, 3)) == (0.628, 0.842)
    assert wilson(0, 0) == (0.0, 1.0)


def test_a_point_moves_extractions_with_the_threshold_and_keeps_fixed_outcomes() -> None:
    rows = [result("fact", score=0.9, right=True, shown=True), result("fact", score=0.3, right=True, shown=True),
            result("fact", score=0.6, right=False, shown=False), result("out_of_scope", score=0.7),
            result("out_of_scope", score=0.2),
            result("fact", path="draft", refused=False, correct=True),  # a draft: the same at every point
            result("fact", score=0.1, right=True, lang="en", refused=True)]  # English: its outcome stays
    high = point(rows, 0.8)
    assert (high.facts, high.right, high.shown, high.out_of_scope, high.answered_out_of_scope) == (5, 2, 3, 2, 0)
    low = point(rows, 0.25)
    assert (low.right, low.shown, low.answered_out_of_scope) == (3, 3, 1)
    everything = point(rows, 0.0)
    assert (everything.right, everything.answered_out_of_scope) == (3, 2)
    points = curve(rows)
    assert points[0].threshold == 0.0 and points[-1].threshold > 1.0
    assert points[-1].answered_out_of_scope == 0 and points[-1].right == 1  # only the draft's answer is left


def test_write_puts_the_curve_json_and_png_beside_the_report(tmp_path: Path) -> None:
    rows = [result("fact", score=0.9, right=True, shown=True), result("out_of_scope", score=0.4)]
    refs = {"naive prompt": {"facts": 1, "right": 1, "out_of_scope": 1, "answered_out_of_scope": 1}}
    json_path, png_path = write(rows, 0.5, tmp_path / "set.json", "set", refs)
    assert json_path == tmp_path / "set.curve.json" and png_path == tmp_path / "set.curve.png"
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["operating_point"]["right"] == 1 and data["operating_point"]["answered_out_of_scope"] == 0
    assert data["operating_point"]["right_ci"] == list(wilson(1, 1))
    assert data["references"] == refs and len(data["points"]) >= 3
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
