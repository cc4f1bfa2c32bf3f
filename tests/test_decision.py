"""bot/answering/decision.py: the fitted answer-or-decline model, its file, and the rank statistic it reports."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bot.answering.decision import DEFAULT_WEIGHTS, WEIGHTS_DIR, Weights, auc, fit, training_rows, weights_path
from bot.errors import ConfigError
from tests.helpers import make_config


def test_auc_is_the_chance_a_positive_outranks_a_negative() -> None:
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 3], [2, 2]) == 0.5
    assert auc([1.0], [1.0]) == 0.5


def test_a_fit_separates_what_the_signal_separates_and_ignores_noise() -> None:
    rng = random.Random(0)
    rows = []
    for _ in range(400):
        right = rng.random() < 0.5
        rows.append(({"margin": rng.gauss(2.0 if right else -1.0, 1.0), "noise": rng.gauss(0, 1)}, right))
    w = fit(rows, ["margin", "noise"], fitted_on=["synthetic"])
    assert w.aucs["margin"] > 0.9 and 0.4 < w.aucs["noise"] < 0.6
    assert w.coef[0] > 1.0 and abs(w.coef[1]) < 0.3
    assert w.probability({"margin": 4.0, "noise": 0.0}) > 0.9 > 0.1 > w.probability({"margin": -3.0, "noise": 0.0})
    # A missing signal counts as its mean: the probability then rests on the others.
    assert w.probability({"margin": 4.0}) > 0.9


def test_weights_round_trip_through_their_file_and_errors_name_the_key(tmp_path: Path) -> None:
    w = fit([({"a": float(i)}, i > 5) for i in range(12)], ["a"])
    path = tmp_path / "w.json"
    path.write_text(w.dumps(), encoding="utf-8")
    assert Weights.load(path) == w
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="grounding.weights"):
        Weights.load(path)
    path.write_text(json.dumps({"signals": ["a", "b"], "mean": [0], "scale": [1], "coef": [1], "intercept": 0}))
    with pytest.raises(ConfigError, match="bot calibrate"):
        Weights.load(path)
    path.write_text(json.dumps({**json.loads(w.dumps()), "pick": "judge"}))  # a pick no route reads
    with pytest.raises(ConfigError, match="'judge'; fix: "):
        Weights.load(path)
    with pytest.raises(ValueError, match="both"):
        fit([({"a": 1.0}, True), ({"a": 2.0}, True)], ["a"])


def test_each_model_is_decided_by_weights_fitted_on_its_own_signals(tmp_path: Path) -> None:
    shipped = sorted(WEIGHTS_DIR.glob("*.json"))
    assert DEFAULT_WEIGHTS in shipped and len(shipped) >= 3  # the default model (both picks) and the small one
    cfg = make_config(tmp_path)
    for path in shipped:
        cfg.model.name, _, cfg.grounding.pick = path.stem.partition(".judged")[0], "", \
            "judged" if path.stem.endswith(".judged") else ""
        assert weights_path(cfg) == path
        assert Weights.load(path).pick == (cfg.grounding.pick or "numbered")  # read the way they were fitted
    cfg.grounding.pick = ""
    cfg.model.name = "some-other-model"  # none fitted for it: the default model's, with a warning at start
    assert weights_path(cfg) == DEFAULT_WEIGHTS
    cfg.grounding.weights = "mine.json"  # configured: relative to the config file
    assert weights_path(cfg) == cfg.path("mine.json")


def test_the_shipped_weights_load_and_rank_a_confident_pick_above_a_none() -> None:
    w = Weights.load(DEFAULT_WEIGHTS)
    assert w.signals and len(w.signals) == len(w.coef)
    confident = {"margin": 6.0, "top": -0.05, "none": -6.0, "gap": 4.0, "mass": -0.01, "overlap": 0.8}
    unsure = {"margin": -3.0, "top": -3.5, "none": -0.5, "gap": 0.1, "mass": -0.3, "overlap": 0.2}
    assert w.probability(confident) > w.probability(unsure)


def test_training_rows_take_extracted_chinese_questions_right_only_when_answerable_and_held() -> None:
    report = {"results": [
        {"path": "extract", "lang": "zh", "kind": "fact", "signals": {"margin": 1.0}, "right_if_answered": True},
        {"path": "extract", "lang": "zh", "kind": "fact", "signals": {"margin": 0.5}, "right_if_answered": False},
        {"path": "extract", "lang": "zh", "kind": "out_of_scope", "signals": {"margin": 2.0},
         "right_if_answered": True},
        {"path": "draft", "lang": "zh", "kind": "fact", "signals": {}, "right_if_answered": False},
        {"path": "extract", "lang": "en", "kind": "fact", "signals": {"margin": 1.0}, "right_if_answered": True},
    ]}
    assert training_rows([report]) == [({"margin": 1.0}, True), ({"margin": 0.5}, False), ({"margin": 2.0}, False)]


async def test_a_pick_the_weights_were_not_fitted_on_is_refused_at_start(tmp_path: Path) -> None:
    from bot.answering.engine import Engine
    from bot.answering.prompts import Prompts
    from tests.fakes.backend import FakeBackend

    cfg = make_config(tmp_path)
    cfg.grounding.pick = "judged"
    assert Engine(cfg, FakeBackend(), Prompts()).extractor.pick == "judged"  # its own shipped weights
    cfg.grounding.weights = str(DEFAULT_WEIGHTS)  # fitted on the numbered pick
    with pytest.raises(ConfigError, match="grounding.pick is 'judged'.*fix: "):
        Engine(cfg, FakeBackend(), Prompts())
