"""Prompt building: the chat messages the model sees, from the templates in prompts/ and the content.

The first message (instructions plus every passage) is the same for every question over one content
version, so the backend computes it once and keeps it; content past `content.max_prefix_tokens` keeps
only the instructions there and quotes the retrieved passages with each question instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.citations import strip_markers, without_quote
from bot.config import Config
from bot.knowledge import ContentSet
from bot.prompts import Prompts
from bot.types import HistoryTurn, Passage
from bot.words import kind_noun

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


class PromptBuilder:
    """Builds every request to the model; remembers whether the served content fits one prefix."""

    def __init__(self, cfg: Config, prompts: Prompts, count_tokens: Callable[[str], int]) -> None:
        self.cfg, self.prompts, self.count_tokens = cfg, prompts, count_tokens
        self.prefix_mode = True

    def prefix(self, content: ContentSet) -> tuple[Messages, bool]:
        """(the shared first message for this content, whether the passages fit into it)."""
        system = self._system(content, with_passages=True)
        fits = self.count_tokens(system) <= self.cfg.content.max_prefix_tokens
        if not fits:
            system = self._system(content, with_passages=False)
            log.info("content exceeds content.max_prefix_tokens: retrieving %d passages per question",
                     self.cfg.content.retrieve_top_k)
        return [{"role": "system", "content": system}], fits

    def _system(self, content: ContentSet, *, with_passages: bool) -> str:
        shown = self.passages(content.passages) if with_passages else "（每个问题附带检索到的段落）"
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
        messages = self._start(content)
        for turn in history:
            messages.append({"role": "user", "content": turn.question})
            messages.append({"role": "assistant", "content": strip_markers(without_quote(turn.answer))})
        if not self.prefix_mode and not quoted:
            quoted = [p for p, _ in content.retrieve(question, self.cfg.content.retrieve_top_k)]
        if quoted:
            # Quoted passages need no paragraph hint; a second note after the question distracted the model.
            text = question
            if noun := kind_noun(question):
                # Spelled out for a "what kind of N" question: drafts tend to restate N as a verb (刘庆峰代表…).
                text += "\n" + self.prompts.render("kind", noun=noun)
            text = self.prompts.render("retrieved", passages=self.passages(sorted(quoted, key=lambda p: p.order)),
                                       question=text)
        else:
            # Naming the best-matching paragraphs costs a few tokens and keeps a small model on them.
            hint = "、".join(f"[{p.order + 1}]" for p, _ in content.retrieve(question, 2)) or "-"
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
        return [{"role": "system", "content": self._system(content, with_passages=self.prefix_mode)}]
