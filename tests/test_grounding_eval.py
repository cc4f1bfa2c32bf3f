"""The grounding bar on the default model: the development set and our own fresh set, one run each at
temperature 0 (every out-of-scope question declined, no answerable one declined, every fact answered with
an accepted span), the held-out article sets and content the checks were never written for at their
measured levels. The large unseen set (30 paragraphs) runs whole, in group mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.model
BOT = str(Path(sys.executable).parent / "bot")
DEV = ROOT.parent / "shared" / "eval" / "dev_qa.jsonl"
FRESH = ROOT / "tests" / "data" / "qa_fresh.jsonl"


UNSEEN = ROOT.parent / "shared" / "eval" / "unseen"


def run_eval(path: Path, tmp_path: Path, data_dir: Path, content: Path | None = None, concurrency: int = 1) -> dict:
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {data_dir}\ndatabase: {tmp_path / 'eval.sqlite3'}\n"
                      f"model:\n  dir: {ROOT / 'models'}\ncontent:\n  dir: {ROOT / 'content'}\n", encoding="utf-8")
    env = dict(os.environ, BOT_CONFIG=str(config))
    env.pop("BOT_MODEL", None)
    report = tmp_path / f"{path.stem}.json"
    extra = (["--content", str(content)] if content else []) + ["--concurrency", str(concurrency)]
    run = subprocess.run([BOT, "eval", str(path), "--report", str(report), *extra], env=env, capture_output=True,
                         text=True, timeout=1800, cwd=tmp_path)
    print(run.stdout)  # the per-question lines show in CI's output on failure
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(report.read_text(encoding="utf-8"))["summary"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-data")


# The article sets run four conversations at once: decoded in one batch, their answers must still all
# be right (batched kernels may round differently from a lone stream; the scores must not move).
def test_dev_set_on_the_default_model(tmp_path: Path, data_dir: Path) -> None:
    summary = run_eval(DEV, tmp_path, data_dir, concurrency=4)
    kinds = summary["by_kind"]
    assert summary["model"] == "qwen2.5-coder-1.5b"
    assert kinds["out_of_scope"]["correct"] == kinds["out_of_scope"]["total"] == 5
    assert summary["false_declines"] == []
    assert kinds["fact"]["correct"] == kinds["fact"]["total"] == 15


def test_fresh_set_on_the_default_model(tmp_path: Path, data_dir: Path) -> None:
    summary = run_eval(FRESH, tmp_path, data_dir, concurrency=4)
    kinds, cats = summary["by_kind"], summary["by_category"]
    assert kinds["out_of_scope"]["correct"] == kinds["out_of_scope"]["total"]
    assert cats["injection"]["correct"] == cats["injection"]["total"] == 3
    assert cats["followup"]["correct"] == cats["followup"]["total"]
    assert summary["false_declines"] == []
    assert kinds["fact"]["correct"] == kinds["fact"]["total"]


# Held-out sets, written by a helper after the dev and fresh tuning (qa_holdout2 after the changes its
# predecessor prompted). They are not the bar: they guard the measured level against regressions
# (the closing note gives each first run). Misses at this level: yes/no questions with a false premise
# that the model declines, English questions the model mistranslates, and one out-of-scope question
# (h17, a 'what direction' question answered with a true sentence of the right passage). Measured on
# 2026-12-02's machine: qa_holdout 12/15 facts, 6/7 declined; qa_holdout2 11/15, 6/7 (the same as the
# round before; k08's draft paraphrases 专精特新企业 and is declined).
@pytest.mark.parametrize(("name", "facts", "out_of_scope"), [("qa_holdout", 11, 5), ("qa_holdout2", 10, 5)])
def test_held_out_sets_on_the_default_model(tmp_path: Path, data_dir: Path, name: str, facts: int,
                                             out_of_scope: int) -> None:
    summary = run_eval(ROOT / "tests" / "data" / f"{name}.jsonl", tmp_path, data_dir)
    kinds = summary["by_kind"]
    assert kinds["out_of_scope"]["correct"] >= out_of_scope
    assert kinds["fact"]["correct"] >= facts


# Content the checks were never written for (CMRC 2018 trial paragraphs, ../shared/eval/unseen/small) with
# its own questions, questions about paragraphs that are not loaded, and our near-miss questions (topic
# loaded, fact absent), split into the half the checks were tuned on, a held-out half, and two fresh sets
# written later by someone who saw only the paragraphs. The bars are the measured levels (README,
# Grounding), not the targets: the lexical checks decline paraphrased questions, and span scoring
# counts a right answer worded off a long annotated span as wrong (由于 for 因为). A fact counts when the
# reply holds the span, the quoted source sentence included. Measured (the round that added the quote):
# tune 18/20 facts (14 on the answer alone), 11/12 declined, 1 invented; held-out 11/16 (9), 9/10, 1;
# fresh 8/12 (6), 9/10, 1; fresh2 7/12 (7), 8/10, 2 (first run, before the prompt asked for one
# sentence: 6/12, 8/10, 2). One question of slack each, for floating-point differences between CPU
# builds.
@pytest.mark.parametrize(("name", "facts", "alone", "declines", "invented"), [
    ("small_tune", 17, 13, 10, 2), ("small_holdout", 10, 8, 8, 2), ("small_fresh", 7, 5, 8, 2),
    ("small_fresh2", 6, 6, 7, 3)])
def test_unseen_content_on_the_default_model(tmp_path: Path, data_dir: Path, name: str, facts: int, alone: int,
                                             declines: int, invented: int) -> None:
    summary = run_eval(ROOT / "tests" / "data" / "unseen" / f"{name}.jsonl", tmp_path, data_dir, UNSEEN / "small")
    kinds = summary["by_kind"]
    assert kinds["fact"]["correct"] >= facts
    assert summary["facts_answer_only"] >= alone  # the short answer alone, without the quoted sentence
    assert kinds["out_of_scope"]["correct"] >= declines
    assert len(summary["invented"]) <= invented


# The large content (../shared/eval/unseen/large, about 13k tokens): four groups of passages, each its own
# cached prefix (computed once, about 6 minutes here), a question routed to its group. Measured on the
# whole halves (2026-12-02): tune 15/18 facts, 8/10 declined, 2 invented; held-out 16/18, 10/12, 2 (in
# retrieval mode the round before: 17/18, 8/10, 2 and 16/18, 10/12, 2). One or two questions of slack:
# a tuning run that also recomputed a group gave 14/18.
@pytest.mark.parametrize(("name", "facts", "declines", "invented"), [
    ("large_tune", 13, 7, 3), ("large_holdout", 14, 9, 3)])
def test_large_unseen_content_on_the_default_model(tmp_path: Path, data_dir: Path, name: str, facts: int,
                                                   declines: int, invented: int) -> None:
    summary = run_eval(ROOT / "tests" / "data" / "unseen" / f"{name}.jsonl", tmp_path, data_dir, UNSEEN / "large")
    kinds = summary["by_kind"]
    assert kinds["fact"]["correct"] >= facts
    assert kinds["out_of_scope"]["correct"] >= declines
    assert len(summary["invented"]) <= invented
