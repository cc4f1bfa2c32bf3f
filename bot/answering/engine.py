"""One question, independent of any messenger and of the log: evidence, prompt, stream, support check, reply.

Answers are drafted and checked in the content's language, word for word against the passages. An
English question is first put into Chinese (names annotated from the content), and the checked answer
is translated back; its Chinese draft is not shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

from bot.answering.decision import DEFAULT_MODEL, Weights, shipped_weights, weights_path
from bot.answering.extraction import Extractor, Found, is_open, shown_answer
from bot.answering.prompting import Messages, PromptBuilder
from bot.answering.prompts import Prompts
from bot.answering.release import Release, whole_sentences
from bot.backends.base import Backend, Completion, ProgressFn
from bot.config import Config
from bot.content.knowledge import ContentSet
from bot.errors import ConfigError
from bot.grounding import checks as grounding
from bot.grounding import translation
from bot.grounding.citations import cite
from bot.grounding.evidence import Evidence, is_injection, question_evidence
from bot.text import phrases
from bot.text.markers import markers, strip_markers
from bot.text.phrases import language
from bot.text.words import holds_span
from bot.types import Citation, Delta, Event, HistoryTurn, Incoming, Passage, Progress, Queued, Reply

log = logging.getLogger(__name__)


@dataclass
class _Draft:
    """What has streamed so far for one turn, and what it used."""

    started: float
    text: str = ""
    ttft_ms: int | None = None
    earlier: str = ""  # earlier drafts of this turn (failed, or the Chinese one of a translation), for the log
    completion: Completion = field(default_factory=Completion)  # tokens of every pass of this turn
    cut: bool = False  # the current pass stopped at model.max_tokens

    def restart(self) -> None:
        """Set the current draft aside before a new attempt."""
        self.earlier += self.text + "\n---\n"
        self.text, self.cut = "", False

    def cut_to(self, whole: str) -> None:
        """The pass stopped at max_tokens: only its whole sentences stand (the log keeps what was dropped)."""
        self.earlier += f"{self.text}\n[cut at model.max_tokens: kept up to the last whole sentence]\n---\n"
        self.text, self.cut = whole, True

    @property
    def logged(self) -> str:
        """Every draft of this turn, in order, as the log keeps it."""
        return self.earlier + self.text


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
        async for event in self._turn(msg, content, self.build.trim(history), _Draft(time.perf_counter())):
            yield event

    def failed(self, content: ContentSet, text: str, error: str, started: float) -> Reply:
        """The reply to a turn that raised (`started` by time.perf_counter): an apology, the error for the log."""
        return self._reply(content, text, _Draft(started), refused=False, error=error)

    async def _turn(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn],
                    draft: _Draft) -> AsyncIterator[Event]:
        question = msg.text.strip()
        lang = language(question)
        off = frozenset(self.cfg.grounding.rules_off)
        if is_injection(question) and "injection" not in off:
            yield self._decline(msg, content, draft, "offtopic", "injection: a prompt injection or harmful request")
            return
        if lang == "en":
            yield Progress("translating_question")
        checked = await self._to_chinese(question, msg.conversation_key, content, draft) if lang == "en" else question
        evidence = question_evidence(checked, content, history[-1].question if history else "")
        # A fact question is extracted; with `no_candidate` off, one no sentence shares a word with is drafted.
        extract = self.cfg.grounding.extractive and not is_open(checked) and (
            "no_candidate" not in off or bool(self.extractor.candidates(checked, content, evidence)))
        reason = evidence.unanswerable(off) if self.cfg.grounding.evidence_check else None
        # A question none of whose words the content has is declined before the model runs.
        if reason and reason.startswith("no_key_term"):
            yield self._decline(msg, content, draft, "decline", reason)
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
            release = Release(partial(self._passes, checked, content, evidence)) if lang == "zh" else None
            messages = self.build.answer(content, history, checked, quoted)
            async for event in self._generate(messages, msg.conversation_key, draft, release):
                yield event
            reply = self._finish(msg, content, draft, checked, evidence, release)
            # Quoting passages cannot help a question about something the content never names.
            if not reply.refused or not evidence.found or evidence.missing_terms:
                break
        async for event in self._present(msg, content, reply, draft, checked):
            yield event
        used = draft.completion  # every pass of this turn, the translation's included
        reply.prompt_tokens, reply.completion_tokens = used.prompt_tokens, used.completion_tokens
        yield reply

    async def _extract(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn], question: str,
                       evidence: Evidence, draft: _Draft) -> AsyncIterator[Event]:
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
            yield self._decline(msg, content, draft, "decline", "no_candidate: no sentence shares a word with it")
            return
        draft.text = _extraction_log(found)
        reply = self._reply(content, "", draft, refused=not found.answers(threshold))
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
            async for event in self._to_english(msg, content, reply, draft, msg.text.strip()):
                yield event
        else:
            yield self._shown(draft, reply.text)
        if quote:
            reply.text += quote
            yield self._shown(draft, quote)
        reply.ttft_ms, reply.total_ms = draft.ttft_ms, int((time.perf_counter() - draft.started) * 1000)
        reply.draft = draft.logged
        yield reply

    async def _present(self, msg: Incoming, content: ContentSet, reply: Reply, draft: _Draft,
                       checked: str) -> AsyncIterator[Event]:
        """The checked reply as the user gets it: in English for an English question, else with its source
        quote; marked when the draft was cut short at max_tokens."""
        question, lang = msg.text.strip(), language(msg.text)
        cut = draft.cut  # the translation pass starts a new draft
        if lang == "en" and not reply.refused:
            yield Progress("translating_answer")
            async for event in self._to_english(msg, content, reply, draft, question):
                yield event
        elif quote := self._quote(reply, checked, content):
            reply.text += quote
            if draft.ttft_ms is not None:  # else nothing streamed: the channel shows the whole reply
                yield self._shown(draft, quote)
        if (cut or draft.cut) and not reply.refused:  # say so: the answer may have gone on
            reply.text += (note := phrases.message("cut_short", lang))
            if draft.ttft_ms is not None:
                yield self._shown(draft, note)

    async def _generate(self, messages: Messages, conversation: str, draft: _Draft,
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
                yield self._shown(draft, shown)
        if used.cut:  # an unfinished last sentence is neither shown nor judged
            draft.cut_to(whole_sentences(draft.text))
        if release and (rest := release.finish(len(draft.text) if used.cut else None)):
            yield self._shown(draft, rest)
        draft.completion.prompt_tokens += used.prompt_tokens
        draft.completion.completion_tokens += used.completion_tokens

    @staticmethod
    def _shown(draft: _Draft, text: str) -> Delta:
        """A piece of checked text for the user; the first one sets the time to first words."""
        if draft.ttft_ms is None:
            draft.ttft_ms = int((time.perf_counter() - draft.started) * 1000)
        return Delta(text)

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's queued and running model work; how many requests there were."""
        return self.backend.cancel(conversation)

    async def _to_chinese(self, question: str, conversation: str, content: ContentSet, draft: _Draft) -> str:
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

    async def _to_english(self, msg: Incoming, content: ContentSet, reply: Reply, draft: _Draft,
                          question: str) -> AsyncIterator[Event]:
        """The checked Chinese answer in English, shown once it is checked faithful; [n] markers at the end."""
        source = strip_markers(reply.text)
        messages = self.build.to_english(content, source, translation.glossary(source, question, content))
        draft.restart()
        async for event in self._generate(messages, msg.conversation_key, draft):
            yield event
        marks = "".join(f"[{c.n}]" for c in reply.citations)
        if english := translation.english_answer(draft.text, reply, content):
            reply.text = english.rstrip(".") + marks + "."
        else:  # a failed translation still leaves a checked answer to show
            reply.text = source + marks
        yield self._shown(draft, reply.text)
        reply.draft = draft.logged

    def _finish(self, msg: Incoming, content: ContentSet, draft: _Draft, question: str,
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

    def _judge(self, msg: Incoming, content: ContentSet, draft: _Draft, answer: str, question: str,
               evidence: Evidence) -> Reply:
        if not answer and draft.cut:
            return self._decline(msg, content, draft, "decline",
                                 "model_declined: cut at model.max_tokens before its first sentence ended")
        if not answer or self._model_declined(answer):
            return self._decline(msg, content, draft, "decline", "model_declined: it found no answer in the content")
        check = self._support(answer, question, content, evidence)
        if check.supported or not self.cfg.grounding.support_check:
            text, citations = cite(answer, check.passages, content)
            reply = self._reply(content, text, draft, refused=False)
            reply.citations = citations
            return reply
        reply = self._decline(msg, content, draft, "decline", check.reason)
        reply.retracted = True
        return reply

    def _support(self, answer: str, question: str, content: ContentSet,
                 evidence: Evidence) -> grounding.Support:
        cited = [content.passages[k - 1] for k in markers(answer) if 0 < k <= len(content.passages)]
        g = self.cfg.grounding
        return grounding.support(answer, question, content, cited, g.min_support, g.min_topic,
                                 frozenset(g.rules_off))

    def _quote(self, reply: Reply, question: str, content: ContentSet) -> str:
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

    def _passes(self, question: str, content: ContentSet, evidence: Evidence, prefix: str) -> bool:
        """Whether this start of a draft may be shown: it would stand as the whole answer, and the checks
        could judge it on its own ("是的。" cannot be: what follows may take it back)."""
        if self._model_declined(prefix):
            return False
        if not self.cfg.grounding.support_check:
            return True
        return (grounding.decisive(prefix, question, content)
                and self._support(prefix, question, content, evidence).supported)

    def _decline(self, msg: Incoming, content: ContentSet, draft: _Draft, kind: str, reason: str) -> Reply:
        reply = self._reply(content, self.prompts.text(f"{kind}_{language(msg.text)}"), draft, refused=True)
        reply.decline_reason = reason
        return reply

    def _reply(self, content: ContentSet, text: str, draft: _Draft, *, refused: bool,
               error: str | None = None) -> Reply:
        return Reply(text=text, refused=refused, ttft_ms=draft.ttft_ms,
                     total_ms=int((time.perf_counter() - draft.started) * 1000), model=self.model_name,
                     content_version=content.version, draft=draft.logged, error=error)


def _extraction_log(found: Found) -> str:
    """What the log keeps of an extraction: each candidate's probability, the pick, the copy."""
    lp = found.extraction.logprobs
    lines = [f"[pick] none {lp[0]:.2f}" if lp else "[pick]"]
    lines += [f"[{i}] {lp[i]:.2f} {s.text}" for i, s in enumerate(found.candidates, 1) if i < len(lp)]
    lines.append(f"[copy from {found.extraction.chosen}] {found.extraction.text} (score {found.score:.3f}; "
                 f"pick {found.pick_ms} ms, copy {found.copy_ms} ms)")
    return "\n".join(lines)
