"""Prompt building: the chat messages the model sees, from the templates in prompts/ and the content.

The first message (instructions plus every passage) is the same for every question over one content
version, so the backend computes it once and keeps it. Content past `content.max_prefix_tokens` is cut
into groups of passages that each fit one such prefix; a question goes to the group holding its best
passages, whose prefix the backend keeps or restores. A question whose evidence spans groups (or content
with `content.groups: false`) gets the instructions alone with the retrieved passages quoted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.answering.prompts import Prompts
from bot.config import Config
from bot.content.knowledge import ContentSet
from bot.text.markers import strip_markers, without_quote
from bot.types import HistoryTurn, Passage

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Plan:
    """How one content version is put to the model: its passage groups, each one cached prefix (one group
    holding everything in prefix mode; none when every question quotes retrieved passages)."""

    groups: tuple[tuple[Passage, ...], ...]

    @property
    def mode(self) -> str:
        """prefix, groups or retrieval."""
        return "retrieval" if not self.groups else "prefix" if len(self.groups) == 1 else "groups"


class PromptBuilder:
    """Builds every request to the model, from a plan made once per content version."""

    def __init__(self, cfg: Config, prompts: Prompts, count_tokens: Callable[[str], int]) -> None:
        self.cfg, self.prompts, self.count_tokens = cfg, prompts, count_tokens
        self._plans: dict[str, Plan] = {}

    def plan(self, content: ContentSet) -> Plan:
        """The content's passages in groups that each fit `content.max_prefix_tokens` as one prefix."""
        if (known := self._plans.get(content.version)) is not None:
            return known
        limit, groups = self.cfg.content.max_prefix_tokens, [[]]
        base = self.count_tokens(self._system(content, ()))
        used = base
        for p in content.passages:
            cost = self.count_tokens(self.passages([p])) + 1
            if groups[-1] and used + cost > limit:
                groups.append([])
                used = base
            groups[-1].append(p)
            used += cost
        fits = all(base + sum(self.count_tokens(self.passages([p])) + 1 for p in g) <= limit for g in groups)
        if not fits or (len(groups) > 1 and not self.cfg.content.groups):
            groups = []
        plan = Plan(tuple(tuple(g) for g in groups if g))
        if plan.mode != "prefix":
            log.info("content exceeds content.max_prefix_tokens: %s", f"{len(plan.groups)} groups, each its own "
                     "prefix" if plan.groups else f"retrieving {self.cfg.content.retrieve_top_k} passages a question")
        self._plans = {content.version: plan, **dict(list(self._plans.items())[:1])}  # this and the one before
        return plan

    def prefixes(self, content: ContentSet) -> list[Messages]:
        """The shared first message of every group (one in prefix mode; the instructions alone if none)."""
        groups = self.plan(content).groups or ((),)
        return [[{"role": "system", "content": self._system(content, g)}] for g in groups]

    def route(self, content: ContentSet, question: str) -> tuple[Passage, ...] | None:
        """The group whose prefix answers `question`: the one holding its best passages; None when the
        evidence is spread over groups (below `content.route_min_share` of the retrieval score) or there
        are no groups."""
        groups = self.plan(content).groups
        if len(groups) <= 1:
            return groups[0] if groups else None
        hits = content.retrieve(question, self.cfg.content.retrieve_top_k)
        if not hits:
            return groups[0]
        best = next(g for g in groups if hits[0][0] in g)
        share = sum(s for p, s in hits if p in best) / sum(s for _, s in hits)
        return best if share >= self.cfg.content.route_min_share else None

    def _system(self, content: ContentSet, group: tuple[Passage, ...]) -> str:
        shown = self.passages(group) if group else "（每个问题附带检索到的段落）"
        return self.prompts.render("system", title=content.title, passages=shown)

    def passages(self, passages: tuple[Passage, ...] | list[Passage]) -> str:
        """Passages as the model sees them: numbered, with their section."""
        return "\n".join(self.prompts.render("passage", n=p.order + 1, section=p.section, text=p.text)
                         for p in passages)

    def trim(self, history: list[HistoryTurn]) -> list[HistoryTurn]:
        """The latest turns that fit `conversation.history_tokens`, oldest first."""
        budget = self.cfg.conversation.history_tokens
        kept: list[HistoryTurn] = []
        for turn in reversed(history):
            cost = self.count_tokens(turn.question + without_quote(turn.answer))  # the quote is not sent
            if cost > budget:
                break
            budget -= cost
            kept.insert(0, turn)
        return kept

    def answer(self, content: ContentSet, history: list[HistoryTurn], question: str,
               quoted: list[Passage]) -> Messages:
        """The request for an answer: prefix, earlier turns, then the question (with quoted passages)."""
        group = self.route(content, question)
        messages = [{"role": "system", "content": self._system(content, group or ())}]
        for turn in history:
            messages.append({"role": "user", "content": turn.question})
            messages.append({"role": "assistant", "content": strip_markers(without_quote(turn.answer))})
        if group is None and not quoted:
            quoted = [p for p, _ in content.retrieve(question, self.cfg.content.retrieve_top_k)]
        if quoted:
            # Quoted passages need no paragraph hint; a second note after the question distracted the model.
            text = self.prompts.render("retrieved", passages=self.passages(sorted(quoted, key=lambda p: p.order)),
                                       question=question)
        else:
            # Naming the best-matching paragraphs costs a few tokens and keeps a small model on them.
            hint = "、".join(f"[{p.order + 1}]" for p, _ in content.retrieve(question, 4) if p in (group or ()))
            hint = "、".join(hint.split("、")[:2]) or "-"
            text = self.prompts.render("question", question=question, hint=hint)
        messages.append({"role": "user", "content": text})
        return messages

    def to_chinese(self, content: ContentSet, question: str) -> Messages:
        """The request to put an English question into Chinese (names already in the content's spelling)."""
        return self._start(content) + [{"role": "user", "content": self.prompts.render("translate_zh",
                                                                                        question=question)}]

    def to_english(self, content: ContentSet, answer: str, glossary: str) -> Messages:
        """The request to put a checked Chinese answer into English, names spelled as the glossary says."""
        return self._start(content) + [{"role": "user", "content": self.prompts.render(
            "translate_en", answer=answer, glossary=glossary)}]

    def _start(self, content: ContentSet) -> Messages:
        """A translation's prefix: the whole content's in prefix mode; with groups, the instructions alone,
        which every group's prefix starts with (so no group is swapped in for a translation)."""
        plan = self.plan(content)
        return self.prefixes(content)[0] if plan.mode == "prefix" else [
            {"role": "system", "content": self._system(content, ())}]
