"""The free draft of an open question (a summary, a comparison): streamed, shown one checked sentence at a
time, and checked whole against its cited passages; the decline that replaces what fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from bot.answering.draft import Draft, decline
from bot.answering.prompting import Messages
from bot.answering.prompts import Prompts
from bot.answering.release import Release, whole_sentences
from bot.backends.base import Backend, Completion
from bot.config import Config
from bot.content.knowledge import ContentSet
from bot.grounding import checks as grounding
from bot.grounding.citations import cite
from bot.grounding.evidence import Evidence
from bot.text import phrases
from bot.text.markers import markers
from bot.types import Event, Incoming, Queued, Reply


class Drafter:
    """Streams a draft and judges it: what may be shown, what stands, and the citations it shows."""

    def __init__(self, cfg: Config, backend: Backend, prompts: Prompts) -> None:
        self.cfg, self.backend, self.prompts = cfg, backend, prompts
        self.decline = partial(decline, prompts)

    async def generate(self, messages: Messages, conversation: str, draft: Draft,
                        release: Release | None = None) -> AsyncIterator[Event]:
        """Stream one request into the draft; with `release`, show each sentence once the checks pass it."""
        used = Completion()
        async for piece in self.backend.stream(messages, conversation=conversation, completion=used,
                                               priority=draft.started):
            if isinstance(piece, Queued):
                yield piece
                continue
            draft.text += piece
            if release and (shown := release.feed(piece)):
                yield draft.shown(shown)
        if used.cut:  # an unfinished last sentence is neither shown nor judged
            draft.cut_to(whole_sentences(draft.text))
        if release and (rest := release.finish(len(draft.text) if used.cut else None)):
            yield draft.shown(rest)
        draft.completion.prompt_tokens += used.prompt_tokens
        draft.completion.completion_tokens += used.completion_tokens

    def finish(self, msg: Incoming, content: ContentSet, draft: Draft, question: str,
                evidence: Evidence, release: Release | None) -> Reply:
        """The draft checked against its cited passages: a cited answer, or the decline that replaces it.

        When the whole draft fails but its first sentences passed and were shown, they are the answer.
        """
        reply = self._judge(msg, content, draft, draft.text.strip(), question, evidence)
        # The model's own "not mentioned" after a checked start takes that start back.
        declined = reply.decline_reason.startswith("model_declined")
        if reply.refused and not declined and release and release.shown.strip():
            kept = self._judge(msg, content, draft, release.shown.strip(), question, evidence)
            if not kept.refused:
                kept.draft += f"\n---\n[kept the checked start; the rest failed: {reply.decline_reason}]"
                reply = kept
        reply.path = "draft"  # the log tells a drafted answer (or its decline) from an extracted one
        return reply

    def _judge(self, msg: Incoming, content: ContentSet, draft: Draft, answer: str, question: str,
               evidence: Evidence) -> Reply:
        if not answer and draft.cut:
            return self.decline(msg, content, draft, "decline",
                                 "model_declined: cut at model.max_tokens before its first sentence ended")
        if not answer or self._model_declined(answer):
            return self.decline(msg, content, draft, "decline", "model_declined: it found no answer in the content")
        check = self._support(answer, question, content, evidence)
        if check.supported or not self.cfg.grounding.support_check:
            text, citations = cite(answer, check.passages, content)
            reply = draft.reply(content, text, refused=False)
            reply.citations = citations
            return reply
        reply = self.decline(msg, content, draft, "decline", check.reason)
        reply.retracted = True
        return reply

    def _support(self, answer: str, question: str, content: ContentSet,
                 evidence: Evidence) -> grounding.Support:
        cited = [content.passages[k - 1] for k in markers(answer) if 0 < k <= len(content.passages)]
        g = self.cfg.grounding
        return grounding.support(answer, question, content, cited, g.min_support, g.min_topic,
                                 frozenset(g.rules_off))

    def quote(self, reply: Reply, question: str, content: ContentSet) -> str:
        """The line quoting the cited sentence that holds the Chinese answer, or "" for none (an English
        answer is not followed by a Chinese quote: /sources shows its passages)."""
        if reply.refused or not reply.citations or not self.cfg.grounding.quote_source:
            return ""
        found = grounding.source_sentence(reply.text, question, content, [c.text for c in reply.citations])
        if not found:
            return ""
        return phrases.message("source_quote", "zh", n=reply.citations[found[0]].n, sentence=found[1])

    def _model_declined(self, answer: str) -> bool:
        return (grounding.model_declined(answer, self.prompts.declines)
                and "model_declined" not in self.cfg.grounding.rules_off)

    def passes(self, question: str, content: ContentSet, evidence: Evidence, prefix: str) -> bool:
        """Whether this start of a draft may be shown: it would stand as the whole answer, and the checks
        could judge it on its own ("是的。" cannot be: what follows may take it back)."""
        if self._model_declined(prefix):
            return False
        if not self.cfg.grounding.support_check:
            return True
        return (grounding.decisive(prefix, question, content)
                and self._support(prefix, question, content, evidence).supported)
