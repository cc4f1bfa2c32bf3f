"""`bot eval`: run a question set (the dev_qa.jsonl format) through the core and score it.

Scored the way reading-comprehension sets are: a fact is right when the reply is not a decline and
holds at least 80 % of one `expect_any` span as one unbroken run (the reply as the user sees it, the
quoted source sentence included; `facts_answer_only` counts the answer without the quote), whitespace
and punctuation removed on both sides and Latin letters compared case-insensitively (a span contained
whole always counts). An out-of-scope question is right when it is declined; answered, it is an
invented answer. A yes/no fact (a row with `polarity`) answered by a bare yes or no word of the other
sense is wrong, whatever its quote holds. Each decline names the rule that made it (`rule: detail`), so
every rule's hits on facts and on out-of-scope questions are counted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.answering.extraction import polar_sense
from bot.config import GROUNDING_RULES, GroundingConfig
from bot.core.runtime import Core
from bot.errors import ContentError
from bot.text.markers import without_quote
from bot.text.phrases import language
from bot.text.words import holds_span
from bot.types import Incoming, Notice

# Question sets name what must be declined in several ways: ours `out_of_scope`, the near-miss sets
# `near_miss` (topic loaded, fact absent) and `off_topic` (the article is not loaded); all are scored alike.
DECLINE_KINDS = ("out_of_scope", "near_miss", "off_topic")
HALVES = ("tune", "holdout")


@dataclass
class Case:
    """One row of a question set."""

    id: str
    kind: str
    question: str
    expect_any: list[str] = field(default_factory=list)
    category: str = ""
    # Rows with the same conversation run in order in one conversation (follow-up questions).
    conversation: str = ""
    polarity: str = ""  # a yes/no fact's answer: "yes" or "no"


@dataclass
class Result:
    """One question's outcome."""

    id: str
    kind: str
    question: str
    answer: str
    refused: bool
    correct: bool
    citations: list[str]
    ttft_ms: int | None
    total_ms: int | None
    decline_reason: str = ""
    category: str = ""
    # Scored on the answer alone, without the source sentence quoted under it: the quote holds the
    # span even when the short answer picked the wrong phrase, so both are reported.
    answer_only_correct: bool = False
    lang: str = "zh"
    # How it was decided (Reply.path, score, signals) and, for an extraction, both of its outcomes: right
    # if answered (the copied answer or its quoted sentence holds a span), shown if declined (the sentence
    # quoted in the decline holds one); `shown` is the run's own outcome. bot/measure/curve.py reads these.
    path: str = ""
    score: float | None = None
    signals: dict[str, float] = field(default_factory=dict)
    copied: str = ""
    sentence: str = ""
    right_if_answered: bool = False
    shown_if_declined: bool = False
    shown: bool = False


def load_cases(path: Path, half: str = "") -> list[Case]:
    """Read a JSONL question set (`expect_any` or `answers`; near_miss and off_topic rows are out of scope);
    with `half`, only its tuning or held-out half. A bad line names its number."""
    cases = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            kind = "out_of_scope" if row["kind"] in DECLINE_KINDS else row["kind"]
            cases.append(Case(str(row["id"]), kind, row["question"],
                              list(row.get("expect_any") or row.get("answers") or []),
                              str(row.get("category") or row["kind"]), str(row.get("conversation") or ""),
                              str(row.get("polarity") or "")))
        except (json.JSONDecodeError, KeyError) as exc:
            fix = "fix: give id, kind, question (and expect_any for facts)"
            raise ContentError(f"{path}:{i}: not a question row ({exc}); {fix}.") from exc
    return [c for c in cases if not half or half_of(c.id) == half]


def half_of(case_id: str) -> str:
    """The half a question belongs to, by the parity of its id's sha256 (tests/data/unseen/README.md)."""
    return HALVES[int(hashlib.sha256(case_id.encode()).hexdigest(), 16) % 2]


def naive(g: GroundingConfig) -> None:
    """The naive prompt: answer from the content as the system prompt says, no check, no extraction; only
    the model's own "the article does not say" counts as a decline."""
    g.extractive = g.evidence_check = g.support_check = g.retry_with_passages = g.quote_source = False
    g.rules_off = [rule for rule in GROUNDING_RULES if rule != "model_declined"]


def is_correct(case: Case, answer: str, refused: bool) -> bool:
    """The scoring rule of the module docstring."""
    if case.kind == "out_of_scope":
        return refused
    if case.polarity and polar_sense(without_quote(answer)) not in ("", case.polarity):
        return False
    return not refused and any(holds_span(answer, p) for p in case.expect_any)


def rule_of(result: Result) -> str:
    """The rule that declined an answer (the `rule:` prefix of its reason), or "" for an answer."""
    if not result.refused:
        return ""
    head = result.decline_reason.split(":", 1)[0]
    return head if head.isidentifier() else "other"


async def run_case(core: Core, case: Case, run_id: str = "") -> Result:
    """Ask one question in a fresh conversation (or its follow-up conversation)."""
    key = f"eval:{run_id}:{case.conversation or case.id}"
    final = await core.ask(Incoming("eval", "eval", "eval", case.question, conversation=key))
    if isinstance(final, Notice):  # refused by the gate (empty, too long): a decline without a turn
        return Result(case.id, case.kind, case.question, final.text, True, is_correct(case, final.text, True), [],
                      None, None, "gate", case.category)
    reply = final
    fact = case.kind != "out_of_scope"

    def holds(text: str) -> bool:
        return fact and bool(text) and any(holds_span(text, p) for p in case.expect_any)

    correct = is_correct(case, reply.text, reply.refused)
    return Result(case.id, case.kind, case.question, reply.text, reply.refused, correct,
                  [c.id for c in reply.citations], reply.ttft_ms, reply.total_ms, reply.decline_reason,
                  case.category, is_correct(case, without_quote(reply.text), reply.refused),
                  language(case.question), reply.path, reply.score, reply.signals, reply.copied, reply.sentence,
                  holds(reply.copied) or holds(reply.sentence), holds(reply.sentence),
                  (correct and fact) or (reply.refused and holds(reply.text)))


def summarise(results: list[Result], model: str) -> dict[str, Any]:
    """Per-kind and per-category totals, decline rate, false declines, refusal precision and latency."""
    kinds: dict[str, dict[str, int]] = {}
    categories: dict[str, dict[str, int]] = {}
    for r in results:
        for table, name in ((kinds, r.kind), (categories, r.category or r.kind)):
            k = table.setdefault(name, {"total": 0, "correct": 0, "declined": 0})
            k["total"] += 1
            k["correct"] += int(r.correct)
            k["declined"] += int(r.refused)
    declined = [r for r in results if r.refused]
    false_declines = [r.id for r in declined if r.kind != "out_of_scope"]
    totals = sorted(r.total_ms for r in results if r.total_ms is not None)
    ttfts = [r.ttft_ms for r in results if r.ttft_ms is not None]
    rules: dict[str, dict[str, int]] = {}
    for r in declined:
        k = rules.setdefault(rule_of(r), {"fired": 0, "right": 0})
        k["fired"] += 1
        k["right"] += int(r.kind == "out_of_scope")
    return {
        "model": model,
        "questions": len(results),
        "correct": sum(r.correct for r in results),
        "facts_answer_only": sum(r.answer_only_correct for r in results if r.kind != "out_of_scope"),
        "by_kind": kinds,
        "by_category": categories,
        "decline_rate": round(len(declined) / len(results), 3) if results else 0.0,
        "false_declines": false_declines,
        "invented": [r.id for r in results if r.kind == "out_of_scope" and not r.refused],
        "wrong_answers": [r.id for r in results if r.kind != "out_of_scope" and not r.refused and not r.correct],
        "refusal_precision": round(1 - len(false_declines) / len(declined), 3) if declined else None,
        "rules": rules,
        "avg_total_ms": round(sum(totals) / len(totals)) if totals else None,
        "p95_total_ms": totals[min(len(totals) - 1, round(0.95 * (len(totals) - 1)))] if totals else None,
        "avg_ttft_ms": round(sum(ttfts) / len(ttfts)) if ttfts else None,
    }


def result_lines(r: Result) -> list[str]:
    """Two lines for one question: verdict and timing, then the answer."""
    mark = "ok " if r.correct else "BAD"
    what = "declined" if r.refused else "answered"
    return [f"{mark} {r.id:<5} {r.kind:<12} {what:<8} {r.total_ms or 0:>6} ms  {r.question}",
            f"      -> {r.answer[:160]}" + (f"   ({r.decline_reason})" if r.decline_reason else "")]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The totals: per kind, declines, refusal precision, latency."""
    lines = []
    for kind, k in summary["by_kind"].items():
        label = "facts answered with an accepted phrase" if kind == "fact" else (
            "out-of-scope declined" if kind == "out_of_scope" else f"{kind} correct")
        lines.append(f"{kind}: {k['correct']}/{k['total']} {label} ({k['declined']} declined)")
        if kind == "fact" and "facts_answer_only" in summary:
            lines.append(f"fact: {summary['facts_answer_only']}/{k['total']} on the answer alone, the quoted "
                         "source sentence left out")
    if set(summary.get("by_category", {})) != set(summary["by_kind"]):
        lines.append("by category: " + ", ".join(f"{name} {k['correct']}/{k['total']}"
                                                for name, k in summary["by_category"].items()))
    lines.append(f"total: {summary['correct']}/{summary['questions']} correct; decline rate "
                 f"{summary['decline_rate']:.0%}; false declines: {len(summary['false_declines'])} "
                 f"{summary['false_declines'] or ''}; refusal precision {summary['refusal_precision']}")
    lines.append(f"invented answers: {len(summary['invented'])} {summary['invented'] or ''}; wrong answers: "
                 f"{len(summary['wrong_answers'])} {summary['wrong_answers'] or ''}")
    if summary["rules"]:
        lines.append("declines by rule (fired / on out-of-scope): " + ", ".join(
            f"{name} {k['fired']}/{k['right']}" for name, k in sorted(summary["rules"].items())))
    lines.append(f"latency: average first words shown {summary['avg_ttft_ms']} ms, average answer "
                 f"{summary['avg_total_ms']} ms, p95 {summary['p95_total_ms']} ms; model {summary['model']}")
    return lines


def report_json(results: list[Result], summary: dict[str, Any]) -> str:
    """The whole run as JSON, for `--report`."""
    return json.dumps({"summary": summary, "results": [asdict(r) for r in results]}, ensure_ascii=False, indent=2)
