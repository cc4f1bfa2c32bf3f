"""One calibrated decision, answer or decline, from an extraction's signals: a logistic model whose
weights are fitted on tuning sets (`bot calibrate`) and kept in a data file, one per model (a score is
calibrated on the signals of the model that produced it); the operating point is
`grounding.answer_threshold`.

The signals are the model's own: the pick's label probabilities and the copy's first token against the
none word; the fit decides what each is worth (lexical signals were measured and did not earn a place).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.config import Config
from bot.errors import ConfigError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "data" / "decision"
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
DEFAULT_WEIGHTS = WEIGHTS_DIR / f"{DEFAULT_MODEL}.json"
PICKS = ("numbered", "judged")  # how a pick's signals are read (grounding.pick)
# Every signal bot/answering/extraction.py computes; `bot calibrate --signals` fits a subset.
DEFAULT_SIGNALS = ("margin", "top", "none", "gap", "mass", "copy_vs_none", "copy_mean")


def shipped_weights(model: str, pick: str = "") -> Path | None:
    """The shipped weights fitted on this model's own signals (read the `pick` way, when given: the judged
    pick's are <model>.judged.json), or None when none were fitted for it."""
    path = WEIGHTS_DIR / (f"{model}.{pick}.json" if pick and pick != "numbered" else f"{model}.json")
    return path if path.is_file() else None


def weights_path(cfg: Config) -> Path:
    """The weights file: `grounding.weights` (relative to the config file), else the model's shipped one for
    the configured pick, else the default model's."""
    g = cfg.grounding
    if g.weights:
        return cfg.path(g.weights)
    return shipped_weights(cfg.model.name, g.pick) or shipped_weights(DEFAULT_MODEL, g.pick) or DEFAULT_WEIGHTS


@dataclass(frozen=True)
class Weights:
    """A fitted logistic model over named signals (standardised by the tuning data's mean and scale)."""

    signals: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted_on: tuple[str, ...] = ()
    pick: str = "numbered"  # how the signals were read (grounding.pick): they mean something else the other way
    aucs: dict[str, float] = field(default_factory=dict)  # each signal's alone, on the data it was fitted on

    def probability(self, values: dict[str, float]) -> float:
        """The fitted probability that answering is right (a signal not given counts as its mean)."""
        z = self.intercept
        for name, m, s, c in zip(self.signals, self.mean, self.scale, self.coef, strict=True):
            z += c * (values.get(name, m) - m) / s
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    def dumps(self) -> str:
        """The data file's text."""
        return json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> Weights:
        """Read a weights file, or raise ConfigError naming the key and the fix."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            weights = cls(tuple(raw["signals"]), tuple(raw["mean"]), tuple(raw["scale"]), tuple(raw["coef"]),
                          float(raw["intercept"]), tuple(raw.get("fitted_on", ())), str(raw.get("pick", "numbered")),
                          dict(raw.get("aucs", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"grounding.weights: cannot read {path} ({exc}); fix: point it at a file written by "
                              "`bot calibrate`, or leave it empty for the shipped one.") from None
        if weights.pick not in PICKS:
            raise ConfigError(f"grounding.weights: {path} was fitted on the pick {weights.pick!r}; fix: write it "
                              f"again with `bot calibrate` (picks: {', '.join(PICKS)}).")
        if not len(weights.signals) == len(weights.mean) == len(weights.scale) == len(weights.coef):
            raise ConfigError(f"grounding.weights: {path} lists {len(weights.signals)} signals but not as many "
                              "means, scales and weights; fix: write it again with `bot calibrate`.")
        return weights


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """The chance that a random positive scores above a random negative (ties count half)."""
    if not positive or not negative:
        return float("nan")
    ranks = _ranks(list(positive) + list(negative))
    p = len(positive)
    return (sum(ranks[:p]) - p * (p + 1) / 2) / (p * len(negative))


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def fit(rows: Sequence[tuple[dict[str, float], bool]], signals: Sequence[str], *, l2: float = 1.0,
        fitted_on: Sequence[str] = (), pick: str = "numbered") -> Weights:
    """Logistic regression (Newton's method, an L2 penalty) of `right` on the standardised signals."""
    x = np.array([[values.get(name, 0.0) for name in signals] for values, _ in rows], dtype=np.float64)
    y = np.array([1.0 if right else 0.0 for _, right in rows])
    if len(set(y)) < 2:
        raise ValueError("the tuning rows must hold both answers that are right and ones that are not")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    penalty = np.diag([0.0] + [l2] * len(signals))
    for _ in range(50):
        p = 1 / (1 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + penalty @ w
        hess = z.T @ (z * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    aucs = {name: round(auc([v for v, t in zip(x[:, i], y, strict=True) if t],
                            [v for v, t in zip(x[:, i], y, strict=True) if not t]), 3)
            for i, name in enumerate(signals)}
    return Weights(tuple(signals), tuple(mean.round(6)), tuple(scale.round(6)), tuple(w[1:].round(6)),
                   round(float(w[0]), 6), tuple(fitted_on), pick, aucs)


def training_rows(reports: Sequence[dict[str, Any]]) -> list[tuple[dict[str, float], bool]]:
    """(signals, answering is right) for every extracted Chinese question of `bot eval` reports: right when
    the question is answerable and the extraction's answer holds a span; an out-of-scope one never is."""
    rows = []
    for report in reports:
        for r in report.get("results", []):
            if r.get("path") == "extract" and r.get("signals") and r.get("lang", "zh") == "zh":
                rows.append((dict(r["signals"]), r["kind"] != "out_of_scope" and bool(r.get("right_if_answered"))))
    return rows
