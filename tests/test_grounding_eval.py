"""The grounding bar on the default model, one `bot eval` (one model load) per set at temperature 0: the
article sets, and content nobody tuned the bot for — the near-miss sets (XQuAD zh: the topic loaded, the
asked fact absent), the unseen CMRC sets, and the yes/no and why sets written on their paragraphs — each
in the half the decision was fitted on and the half it was not, at their measured levels with a question
of slack (README, Grounding: the curve)."""

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
SHARED = ROOT.parent / "shared" / "eval"
DEV = SHARED / "dev_qa.jsonl"
NEARMISS = SHARED / "nearmiss"
UNSEEN = SHARED / "unseen"
DATA = ROOT / "tests" / "data"

# Measured on 2026-12-05 (AMD EPYC, 2 cores), the operating point grounding.answer_threshold 0.7 with the
# shipped weights; the held-out halves' numbers are their first run (README, Grounding). One question of
# slack each, for floating-point differences between CPU builds and batch compositions.
DEV_FACTS = 11  # 12/15 measured (a yes/no answer declined, one sentence picked wrong, one English who-question)
FRESH_FACTS, FRESH_DECLINED = 15, 13  # 16/20 and 14/14 measured
ARTICLE_HELD_OUT = [("qa_holdout", 7, 6), ("qa_holdout2", 7, 6)]  # 8/15 and 7/7 measured, each
NEAR_MISS = [  # (set, half, right, shown, out-of-scope answered at most); measured right/shown/answered:
    ("small", "tune", 27, 30, 2),  # 28/37, 31/37, 1/32
    ("small", "holdout", 15, 20, 2),  # 16/25, 21/25, 1/37 (first run)
    ("large", "tune", 22, 26, 1),  # 23/30, 27/30, 0/29
    ("large", "holdout", 29, 32, 1),  # 30/39, 33/39, 0/24 (first run)
]
UNSEEN_SETS = [  # (set, right, out-of-scope declined, answered at most); measured:
    ("small_tune", 12, 11, 1),  # 13/20, 12/12, 0
    ("small_holdout", 6, 8, 2),  # 7/16, 9/10, 1 (first run)
    ("large_tune", 9, 8, 2),  # 10/18, 9/10, 1
    ("large_holdout", 11, 11, 1),  # 12/18, 12/12, 0 (first run)
]


def run_eval(path: Path, tmp_path: Path, data_dir: Path, content: Path | None = None, concurrency: int = 1,
             half: str = "", grounding: str = "") -> tuple[dict, dict]:
    """(the report's summary, the curve's operating point) of one `bot eval --curve` run (`grounding`: lines
    of the config's grounding section)."""
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {data_dir}\ndatabase: {tmp_path / 'eval.sqlite3'}\n"
                      f"model:\n  dir: {ROOT / 'models'}\ncontent:\n  dir: {ROOT / 'content'}\n"
                      + (f"grounding:\n  {grounding}\n" if grounding else ""), encoding="utf-8")
    env = dict(os.environ, BOT_CONFIG=str(config))
    env.pop("BOT_MODEL", None)
    report = tmp_path / f"{path.stem}.json"
    extra = (["--content", str(content)] if content else []) + ["--concurrency", str(concurrency)]
    extra += ["--half", half] if half else []
    run = subprocess.run([BOT, "eval", str(path), "--report", str(report), "--curve", *extra], env=env,
                         capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    print(run.stdout)  # the per-question lines show in CI's output on failure
    assert run.returncode == 0, run.stderr[-3000:]
    curve = json.loads(report.with_suffix(".curve.json").read_text(encoding="utf-8"))
    return json.loads(report.read_text(encoding="utf-8"))["summary"], curve["operating_point"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-data")


# The article sets run four conversations at once: decoded in one batch, their answers must still be
# right (batched kernels may round differently from a lone stream; the scores must not move).
def test_dev_set_on_the_default_model(tmp_path: Path, data_dir: Path) -> None:
    summary, _ = run_eval(DEV, tmp_path, data_dir, concurrency=4)
    kinds = summary["by_kind"]
    assert summary["model"] == "qwen2.5-coder-1.5b"
    assert kinds["out_of_scope"]["correct"] == kinds["out_of_scope"]["total"] == 5
    assert kinds["fact"]["correct"] >= DEV_FACTS


def test_fresh_set_on_the_default_model(tmp_path: Path, data_dir: Path) -> None:
    summary, _ = run_eval(DATA / "qa_fresh.jsonl", tmp_path, data_dir, concurrency=4)
    kinds, cats = summary["by_kind"], summary["by_category"]
    assert cats["injection"]["correct"] == cats["injection"]["total"] == 3
    assert kinds["out_of_scope"]["correct"] >= FRESH_DECLINED
    assert kinds["fact"]["correct"] >= FRESH_FACTS


# Noise around a question changes nothing (tags with numbers the article also uses: 1, 2 and 3 stand in
# it), asked through `bot ask --json`, one process for all: the same decision, the same copied answer.
def test_a_tag_around_a_question_changes_nothing_on_the_default_model(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {data_dir}\ndatabase: {tmp_path / 'ask.sqlite3'}\n"
                      f"model:\n  dir: {ROOT / 'models'}\ncontent:\n  dir: {ROOT / 'content'}\n", encoding="utf-8")
    plain = ["赵晓光是哪个研究所的研究员？", "刘庆峰希望让每个人都有什么？", "江浩然的家乡是哪里？"]
    tagged = [f"{q}（用户{i + 1}第{3 - i}问）" for i, q in enumerate(plain)]
    tagged[1] = "【用户2】" + plain[1] + "谢谢！"
    env = dict(os.environ, BOT_CONFIG=str(config))
    env.pop("BOT_MODEL", None)
    run = subprocess.run([BOT, "ask", "--json", "-"], input="\n".join(plain + tagged) + "\n", env=env,
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(replies) == 6 and all(r["path"] == "extract" for r in replies)
    for a, b in zip(replies[:3], replies[3:], strict=True):
        assert (a["refused"], a["answer"]) == (b["refused"], b["answer"]), (a, b)
    assert not replies[0]["refused"] and "自动化研究所" in replies[0]["answer"]
    assert replies[2]["refused"] and replies[2]["answer"].startswith("文章中没有直接说明")


@pytest.mark.parametrize(("name", "facts", "out_of_scope"), ARTICLE_HELD_OUT)
def test_held_out_article_sets_on_the_default_model(tmp_path: Path, data_dir: Path, name: str, facts: int,
                                                    out_of_scope: int) -> None:
    summary, _ = run_eval(DATA / f"{name}.jsonl", tmp_path, data_dir)
    kinds = summary["by_kind"]
    assert kinds["out_of_scope"]["correct"] >= out_of_scope
    assert kinds["fact"]["correct"] >= facts


# Near misses at scale (../shared/eval/nearmiss/: XQuAD zh, two paragraphs of each article loaded, the
# questions of its other paragraphs asked): small fits one prefix, large is three groups. Each row: set,
# half, facts answered right (the reply, its quoted sentence included), facts shown (right, or the
# sentence holding the answer quoted in the decline), out-of-scope answered at most.
@pytest.mark.parametrize(("name", "half", "right", "shown", "answered"), NEAR_MISS)
def test_near_miss_sets_on_the_default_model(tmp_path: Path, data_dir: Path, name: str, half: str, right: int,
                                             shown: int, answered: int) -> None:
    _, here = run_eval(NEARMISS / f"{name}.jsonl", tmp_path, data_dir, NEARMISS / name, half=half)
    assert here["right"] >= right and here["shown"] >= shown
    assert here["answered_out_of_scope"] <= answered


# Unseen CMRC 2018 paragraphs (../shared/eval/unseen/) with their questions, questions about paragraphs not
# loaded and our near misses, split by the parity of each id's sha256 (tests/data/unseen/README.md).
@pytest.mark.parametrize(("name", "right", "declined", "answered"), UNSEEN_SETS)
def test_unseen_content_on_the_default_model(tmp_path: Path, data_dir: Path, name: str, right: int,
                                             declined: int, answered: int) -> None:
    summary, here = run_eval(DATA / "unseen" / f"{name}.jsonl", tmp_path, data_dir, UNSEEN / name.split("_")[0])
    assert here["right"] >= right
    assert summary["by_kind"]["out_of_scope"]["correct"] >= declined and len(summary["invented"]) <= answered


# The judged pick (grounding.pick: judged, with its own shipped weights; README, Grounding, "Measured and not
# adopted"): each candidate asked alone, the three side by side. Measured on the unseen small held-out set,
# its first run: 8/16 right, 16/16 shown, 0/10 out-of-scope answered (today's pick: 7, 12, 1); a second
# run 1/10 answered (the parts' batches differ from run to run).
def test_the_judged_pick_on_unseen_content(tmp_path: Path, data_dir: Path) -> None:
    summary, here = run_eval(DATA / "unseen" / "small_holdout.jsonl", tmp_path, data_dir, UNSEEN / "small",
                             grounding="pick: judged")
    assert summary["pick"] == "judged"
    assert here["right"] >= 7 and here["shown"] >= 15 and here["answered_out_of_scope"] <= 2


def run_written_set(stem: str, tmp_path: Path, data_dir: Path, content: Path) -> tuple[dict, list[dict]]:
    """(the summary, every question's result) of one of our sets in tests/data/unseen/ on its paragraphs."""
    summary, _ = run_eval(DATA / "unseen" / f"{stem}.jsonl", tmp_path, data_dir, content)
    return summary, json.loads((tmp_path / f"{stem}.json").read_text(encoding="utf-8"))["results"]


# Yes/no questions on the unseen paragraphs (tests/data/unseen/*_yesno.jsonl): the model leans to 是 whatever
# the sentence says, so no reply may answer one with a bare yes or no word; a fact answered right, near
# misses declined. Measured (both halves): small 4/16 right, 0/8 answered; large 4/20, 0/10.
YES_NO_SETS = [("small", 3, 1), ("large", 3, 1)]  # (set, right at least, near misses answered at most)


@pytest.mark.parametrize(("name", "right", "answered"), YES_NO_SETS)
def test_yes_no_questions_are_never_answered_by_a_bare_yes_or_no(tmp_path: Path, data_dir: Path, name: str,
                                                                 right: int, answered: int) -> None:
    from bot.answering.extraction import polar_sense
    from bot.text.markers import without_quote

    summary, results = run_written_set(f"{name}_yesno", tmp_path, data_dir, UNSEEN / name)
    bare = [r["answer"] for r in results if not r["refused"] and polar_sense(without_quote(r["answer"]))]
    assert not bare
    assert summary["by_kind"]["fact"]["correct"] >= right and len(summary["invented"]) <= answered


# Why-questions on the unseen paragraphs (tests/data/unseen/*_why.jsonl): the reason is a clause of one
# sentence, and a drafted answer invents one for near misses (8 of 10 on the tuning halves: README,
# Grounding), so each is extracted (never drafted: "个体比较大" once routed one to the draft as a comparison),
# and near misses stay mostly declined. Measured (both halves): small 5/16 right, 1/8 answered; large 3/20,
# 3/10 (each a copy of the event, not its reason, with the sentence quoted under it).
WHY_SETS = [("small", 4, 2), ("large", 2, 4)]  # (set, right at least, near misses answered at most)


@pytest.mark.parametrize(("name", "right", "answered"), WHY_SETS)
def test_why_questions_are_extracted_and_their_near_misses_declined(tmp_path: Path, data_dir: Path, name: str,
                                                                    right: int, answered: int) -> None:
    from bot.answering.extraction import restates
    from bot.text.markers import without_quote

    summary, results = run_written_set(f"{name}_why", tmp_path, data_dir, UNSEEN / name)
    assert not [r["question"] for r in results if r["path"] == "draft"]
    # A copy the question already holds ("显烈王大妃" for "…为何又被人称作“显烈王大妃”？") is shown as its sentence.
    echoes = [r["answer"] for r in results if not r["refused"] and restates(without_quote(r["answer"]), r["question"])]
    assert not echoes
    assert summary["by_kind"]["fact"]["correct"] >= right and len(summary["invented"]) <= answered


# English questions about named people, organisations, numbers and dates (tests/data/names/): on the article
# and the near-miss content (tuned on), on the unseen content (held out: written apart from the code). Every
# name an English answer gives must be one the set lists for that question (pinyin, the content's characters,
# a known English name), or stand in the question, the content or aliases.yaml; scored on the answer alone
# (not the source quoted under it), with this file's own reading of the text, not the product's check.
# Measured on 2026-12-06 (README, Grounding: English names), right / misnamed: article 11/22, 0 (before the
# glossary: 3, 5); near misses 7/10, 0 (7, 1); unseen small 4/9, 0 and large 2/15, 0 (the held-out first run
# and the rest: README). One question of slack each.
NAMES = DATA / "names"
NAMES_SETS = [("article", ROOT / "content", 10), ("nearmiss", NEARMISS / "small", 6),
              ("unseen_small", UNSEEN / "small", 3), ("unseen_large", UNSEEN / "large", 1)]  # (set, content, right)
_OPENERS = {"the", "a", "an", "in", "on", "it", "he", "she", "they", "according", "both", "yes", "no", "from",
            "this", "that", "its", "his", "her", "their", "there", "one", "two", "three", "january", "february",
            "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"}


def name_outcome(row: dict, result: dict, allowed: str) -> str:
    """'misnamed' (a name neither listed nor in the question or content), 'right', 'wrong' (the asked name or
    fact missing) or 'declined', for one English answer."""
    import re

    from bot.text.markers import strip_markers, without_quote

    if result["refused"]:
        return "declined"
    answer = strip_markers(without_quote(result["answer"]))
    spellings = [s for group in row["names"] for s in group]
    known = " ".join([row["question"], *spellings, allowed]).lower()
    for word in re.findall(r"(?<![A-Za-z])[A-Z][A-Za-z]*", answer):
        if word.lower() not in _OPENERS and not re.search(rf"(?<![a-z]){word.lower()}(?![a-z])", known):
            return "misnamed"
    if not all(any(s.lower() in answer.lower() for s in group) for group in row["names"]):
        return "wrong"
    spans = [re.sub(r"[\s,]", "", s).lower() for s in row["expect_any"]]
    return "right" if any(s in re.sub(r"[\s,]", "", answer).lower() for s in spans) else "wrong"


def names_scores(path: Path, report: Path, content: Path) -> dict[str, list[str]]:
    """Each outcome -> the question ids that had it, for one run of a names set."""
    allowed = "\n".join(f.read_text(encoding="utf-8") for f in sorted(content.iterdir()) if f.is_file())
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = {r["id"]: r for r in (json.loads(line) for line in lines if line.strip())}
    out: dict[str, list[str]] = {"right": [], "wrong": [], "misnamed": [], "declined": []}
    for result in json.loads(report.read_text(encoding="utf-8"))["results"]:
        out[name_outcome(rows[result["id"]], result, allowed)].append(result["id"])
    return out


@pytest.mark.parametrize(("name", "content", "right"), NAMES_SETS)
def test_english_answers_name_people_as_the_content_does(tmp_path: Path, data_dir: Path, name: str,
                                                         content: Path, right: int) -> None:
    run_eval(NAMES / f"{name}.jsonl", tmp_path, data_dir, content)
    scores = names_scores(NAMES / f"{name}.jsonl", tmp_path / f"{name}.json", content)
    assert not scores["misnamed"], scores
    assert len(scores["right"]) >= right, scores
