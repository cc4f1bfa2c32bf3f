"""One question, independent of any messenger and of the log: evidence, prompt, stream, support check, reply.

Answers are drafted and checked in the content's language, word for word against the passages. An
English question is first put into Chinese (names annotated from the content), and the checked answer
is translated back; its Chinese draft is not shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from functools import partial

from bot.answering.decision import DEFAULT_MODEL, Weights, shipped_weights, weights_path
from bot.answering.draft import Draft, decline
from bot.answering.drafter import Drafter
from bot.answering.extraction import Extractor, Found, is_open, shown_answer
from bot.answering.prompting import PromptBuilder
from bot.answering.prompts import Prompts
from bot.answering.release import Release
from bot.answering.translator import Translator
from bot.backends.base import Backend, ProgressFn
from bot.config import Config
from bot.content.knowledge import ContentSet
from bot.errors import ConfigError
from bot.grounding.evidence import Evidence, is_injection, question_evidence
from bot.text import phrases
from bot.text.phrases import language
from bot.text.words import holds_span
from bot.types import Citation, Event, HistoryTurn, Incoming, Passage, Progress, Queued, Reply

log = logging.getLogger(__name__)


def _part(progress: ProgressFn | None, i: int, parts: int) -> ProgressFn | None:
    """Progress of part i of `parts` as progress of the whole, in thousandths (parts differ in size)."""
    if progress is None or parts == 1:
        return progress
    return lambda done, total: progress(i * 1000 + done * 1000 // max(total, 1), parts * 1000)


class Engine:
    """Answers one question about the given content, grounded and cited; knows no messenger and no log."""

    def __init__(self, cfg: Config, backend: Backend, prompts: Prompts) -> None:
        self.cfg, self.backend, self.prompts = cfg, backend, prompts
        self.build = PromptBuilder(cfg, prompts, backend.count_tokens)
        g = cfg.grounding
        if not g.weights and shipped_weights(cfg.model.name, g.pick) is None:
            log.warning("no decision weights fitted for model %s: using %s's; fit its own with bot calibrate "
                        "and set grounding.weights (README, Grounding)", cfg.model.name, DEFAULT_MODEL)
        weights = Weights.load(path := weights_path(cfg))
        if g.pick and weights.pick != g.pick:
            raise ConfigError(f"grounding.pick is {g.pick!r} but {path.name} was fitted on the {weights.pick} "
                              "pick; fix: leave grounding.pick empty, or set grounding.weights to weights fitted "
                              "on reports run that way (bot calibrate).")
        self.extractor = Extractor(cfg.grounding, backend, prompts, weights)
        self.drafter = Drafter(cfg, backend, prompts)
        self.decline = partial(decline, prompts)
        self.translator = Translator(backend, self.build, self.drafter)

    @property
    def model_name(self) -> str:
        """The backend's model, as logged with each reply."""
        return self.backend.model_name

    async def prepare(self, content: ContentSet, progress: ProgressFn | None = None) -> None:
        """Compute (or restore) the model's prefixes for this content (one per group) before it is served."""
        if self.cfg.grounding.extractive:
            # Every fact question starts with these few tokens. Read first, they hold the KV cache's first
            # cells: attention spans every cell up to the highest one in use, so an extraction running
            # beside no content prefix reads only its own few hundred (3.5 s a pick when they came last).
            await self.backend.warm(self.extractor.instructions(), pin=True)
        prefixes = self.build.prefixes(content)
        for i, prefix in enumerate(prefixes):
            await self.backend.warm(prefix, _part(progress, i, len(prefixes)))

    async def retain(self, content: ContentSet) -> None:
        """Keep only this content's prefixes in the model's memory (once it is the one served)."""
        await self.backend.retain(self.build.prefixes(content))

    async def run(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn]) -> AsyncIterator[Event]:
        """Queued, Progress and Delta events (checked text only) while the answer is made, then one Reply."""
        draft = Draft(time.perf_counter(), model=self.model_name)
        async for event in self._turn(msg, content, self.build.trim(history), draft):
            yield event

    def failed(self, content: ContentSet, text: str, error: str, started: float) -> Reply:
        """The reply to a turn that raised (`started` by time.perf_counter): an apology, the error for the log."""
        return Draft(started, model=self.model_name).reply(content, text, refused=False, error=error)

    async def _turn(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn],
                    draft: Draft) -> AsyncIterator[Event]:
        question = msg.text.strip()
        lang = language(question)
        off = frozenset(self.cfg.grounding.rules_off)
        if is_injection(question) and "injection" not in off:
            yield self.decline(msg, content, draft, "offtopic", "injection: a prompt injection or harmful request")
            return
        if lang == "en":
            yield Progress("translating_question")
        checked = question if lang != "en" else \
            await self.translator.to_chinese(question, msg.conversation_key, content, draft)
        evidence = question_evidence(checked, content, history[-1].question if history else "")
        # A fact question is extracted; with `no_candidate` off, one no sentence shares a word with is drafted.
        extract = self.cfg.grounding.extractive and not is_open(checked) and (
            "no_candidate" not in off or bool(self.extractor.candidates(checked, content, evidence)))
        reason = evidence.unanswerable(off) if self.cfg.grounding.evidence_check else None
        # A question none of whose words the content has is declined before the model runs.
        if reason and reason.startswith("no_key_term"):
            yield self.decline(msg, content, draft, "decline", reason)
            return
        if extract:
            async for event in self._extract(msg, content, history, checked, evidence, draft):
                yield event
            return
        quoted: list[Passage] = []
        for attempt in (1, 2):
            if attempt == 2:
                # The first draft failed; ask again with the best-matching passages quoted next to the
                # question, where a small model copies from them far more reliably.
                quoted = [p for p, _ in content.retrieve(evidence.query, 2)]
                if not quoted or not self.cfg.grounding.retry_with_passages:
                    break
                draft.restart()
                yield Progress("rechecking")
            elif lang == "en":
                yield Progress("answering")
            # Only a Chinese draft is shown as it streams, one checked sentence at a time.
            release = Release(partial(self.drafter.passes, checked, content, evidence)) if lang == "zh" else None
            messages = self.build.answer(content, history, checked, quoted)
            async for event in self.drafter.generate(messages, msg.conversation_key, draft, release):
                yield event
            reply = self.drafter.finish(msg, content, draft, checked, evidence, release)
            # Quoting passages cannot help a question about something the content never names.
            if not reply.refused or not evidence.found or evidence.missing_terms:
                break
        async for event in self._present(msg, content, reply, draft, checked):
            yield event
        used = draft.completion  # every pass of this turn, the translation's included
        reply.prompt_tokens, reply.completion_tokens = used.prompt_tokens, used.completion_tokens
        yield reply

    async def _extract(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn], question: str,
                       evidence: Evidence, draft: Draft) -> AsyncIterator[Event]:
        """A fact question: the sentence that answers picked, the answer copied out of it, one decision."""
        lang = language(msg.text)
        yield Progress("answering")
        found: Found | None = None
        # `pick` off: every extraction is answered, whatever its score (to measure what the decision buys).
        threshold = 0.0 if "pick" in self.cfg.grounding.rules_off else self.cfg.grounding.answer_threshold
        async for item in self.extractor.run(question, content, evidence, conversation=msg.conversation_key,
                                             priority=draft.started, threshold=threshold,
                                             context=history[-1].question if history else ""):
            if isinstance(item, Queued):
                yield item
            else:
                found = item
        if found is None:
            yield self.decline(msg, content, draft, "decline", "no_candidate: no sentence shares a word with it")
            return
        draft.text = _extraction_log(found)
        reply = draft.reply(content, "", refused=not found.answers(threshold))
        reply.path, reply.score, reply.signals = "extract", round(found.score, 4), found.signals
        reply.copied, reply.sentence = found.answer, found.sentence.text
        reply.prompt_tokens = found.extraction.prompt_tokens
        reply.completion_tokens = found.extraction.completion_tokens
        p = found.sentence.passage
        reply.citations = [Citation(p.id, p.section, p.text, 1)]
        if reply.refused:
            reply.text = self.prompts.render(f"closest_{lang}", sentence=found.sentence.text, n=1)
            reply.decline_reason = f"pick: score {found.score:.2f} below grounding.answer_threshold {threshold:g}"
            yield reply
            return
        answer = shown_answer(found.answer, found.sentence.text, question)
        quote = "" if holds_span(answer, found.sentence.text) or not self.cfg.grounding.quote_source \
            else phrases.message("source_quote", "zh", n=1, sentence=found.sentence.text)
        reply.text = answer + "[1]"
        if lang == "en":
            yield Progress("translating_answer")
            async for event in self.translator.to_english(msg, content, reply, draft, msg.text.strip()):
                yield event
        else:
            yield draft.shown(reply.text)
        if quote:
            reply.text += quote
            yield draft.shown(quote)
        reply.ttft_ms, reply.total_ms = draft.ttft_ms, int((time.perf_counter() - draft.started) * 1000)
        reply.draft = draft.logged
        yield reply

    async def _present(self, msg: Incoming, content: ContentSet, reply: Reply, draft: Draft,
                       checked: str) -> AsyncIterator[Event]:
        """The checked reply as the user gets it: in English for an English question, else with its source
        quote; marked when the draft was cut short at max_tokens."""
        question, lang = msg.text.strip(), language(msg.text)
        cut = draft.cut  # the translation pass starts a new draft
        if lang == "en" and not reply.refused:
            yield Progress("translating_answer")
            async for event in self.translator.to_english(msg, content, reply, draft, question):
                yield event
        elif quote := self.drafter.quote(reply, checked, content):
            reply.text += quote
            if draft.ttft_ms is not None:  # else nothing streamed: the channel shows the whole reply
                yield draft.shown(quote)
        if (cut or draft.cut) and not reply.refused:  # say so: the answer may have gone on
            reply.text += (note := phrases.message("cut_short", lang))
            if draft.ttft_ms is not None:
                yield draft.shown(note)

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's queued and running model work; how many requests there were."""
        return self.backend.cancel(conversation)


def _extraction_log(found: Found) -> str:
    """What the log keeps of an extraction: each candidate's probability, the pick, the copy."""
    lp = found.extraction.logprobs
    lines = [f"[pick] none {lp[0]:.2f}" if lp else "[pick]"]
    lines += [f"[{i}] {lp[i]:.2f} {s.text}" for i, s in enumerate(found.candidates, 1) if i < len(lp)]
    lines.append(f"[copy from {found.extraction.chosen}] {found.extraction.text} (score {found.score:.3f}; "
                 f"pick {found.pick_ms} ms, copy {found.copy_ms} ms)")
    return "\n".join(lines)
