"""English in and out: the question put into Chinese (names as the content spells them, hidden from the
user), the checked Chinese answer put back into English, shown once it is checked faithful."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bot.answering.draft import Draft
from bot.answering.drafter import Drafter
from bot.answering.prompting import PromptBuilder
from bot.backends.base import Backend
from bot.content.knowledge import ContentSet
from bot.grounding import translation
from bot.text.markers import strip_markers
from bot.types import Event, Incoming, Reply


class Translator:
    """The two translation passes of an English turn, on the same backend as the answer."""

    def __init__(self, backend: Backend, build: PromptBuilder, drafter: Drafter) -> None:
        self.backend, self.build, self.drafter = backend, build, drafter

    async def to_chinese(self, question: str, conversation: str, content: ContentSet, draft: Draft) -> str:
        """The English question in Chinese, names spelled as the content has them (hidden from the user)."""
        mixed = translation.map_english(question, content, replace=True)
        text = ""
        async for piece in self.backend.stream(self.build.to_chinese(content, mixed), conversation=conversation,
                                               max_tokens=80, priority=draft.started):
            if isinstance(piece, str):
                text += piece
        checked, logged = translation.chinese_question(text, translation.map_english(question, content))
        draft.earlier += f"[question] {logged}\n---\n"
        return checked

    async def to_english(self, msg: Incoming, content: ContentSet, reply: Reply, draft: Draft,
                          question: str) -> AsyncIterator[Event]:
        """The checked Chinese answer in English, shown once it is checked faithful; [n] markers at the end."""
        source = strip_markers(reply.text)
        terms = translation.glossary(source, question, content)
        messages = self.build.to_english(content, source, translation.glossary_line(terms))
        draft.restart()
        async for event in self.drafter.generate(messages, msg.conversation_key, draft):
            yield event
        marks = "".join(f"[{c.n}]" for c in reply.citations)
        english = translation.english_answer(draft.text, reply, content, terms, question)
        # A translation that fails its check is not shown: the reply is built by code from the checked answer.
        reply.text = (english or translation.fallback(source, question, terms)).rstrip(".") + marks + "."
        yield draft.shown(reply.text)
        reply.draft = draft.logged
