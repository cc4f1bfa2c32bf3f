"""One question, independent of any messenger and of the log: evidence, prompt, stream, support check, reply."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bot import grounding, translation
from bot.backends.base import Backend, Completion, ProgressFn
from bot.citations import MarkerRenumber, cite, markers, strip_markers
from bot.config import Config
from bot.knowledge import ContentSet
from bot.prompts import Prompts
from bot.texts import language
from bot.types import Citation, Delta, Event, HistoryTurn, Incoming, Passage, Queued, Reply, Retract
from bot.words import HAN, kind_noun

log = logging.getLogger(__name__)


@dataclass
class _Draft:
    """What has streamed so far for one turn."""

    started: float
    text: str = ""
    ttft_ms: int | None = None
    earlier: str = ""  # withdrawn drafts of this turn, kept for the log

    def restart(self) -> None:
        """Set the current draft aside before a new attempt."""
        self.earlier += self.text + "\n---\n"
        self.text = ""


class Engine:
    """Answers one question about the given content, grounded and cited; knows no messenger and no log."""

    def __init__(self, cfg: Config, backend: Backend, prompts: Prompts) -> None:
        self.cfg = cfg
        self.backend = backend
        self.prompts = prompts
        self._prefix_mode = True

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    async def prepare(self, content: ContentSet, progress: ProgressFn | None = None) -> None:
        """Compute (or restore) the model's prefix for this content: the whole content when it fits
        `content.max_prefix_tokens`, else the instructions only (passages are then retrieved per question)."""
        system = self._system_message(content, with_passages=True)
        prefix_mode = self.backend.count_tokens(system) <= self.cfg.content.max_prefix_tokens
        if not prefix_mode:
            system = self._system_message(content, with_passages=False)
            log.info("content exceeds content.max_prefix_tokens: retrieving %d passages per question",
                     self.cfg.content.retrieve_top_k)
        await self.backend.warm([{"role": "system", "content": system}], progress)
        self._prefix_mode = prefix_mode

    def _system_message(self, content: ContentSet, *, with_passages: bool) -> str:
        shown = self._format(content.passages) if with_passages else "（每个问题附带检索到的段落）"
        return self.prompts.render("system", title=content.title, passages=shown)

    def _format(self, passages: tuple[Passage, ...] | list[Passage]) -> str:
        return "\n".join(self.prompts.render("passage", n=p.order + 1, section=p.section, text=p.text)
                         for p in passages)

    async def run(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn]) -> AsyncIterator[Event]:
        """Queued, Delta and Retract events while the answer streams, then exactly one Reply."""
        async for event in self._turn(msg, content, self._trim(history), _Draft(time.perf_counter())):
            yield event

    def failed(self, msg: Incoming, content: ContentSet, text: str, error: str) -> Reply:
        """The reply to a turn that raised: a short apology, the error kept for the log."""
        return self._reply(msg, content, text, refused=False, draft=None, started=time.perf_counter(), error=error)

    async def _turn(self, msg: Incoming, content: ContentSet, history: list[HistoryTurn],
                    draft: _Draft) -> AsyncIterator[Event]:
        question = msg.text.strip()
        lang = language(question)
        if grounding.is_injection(question):
            yield self._decline(msg, content, draft, "offtopic", "prompt injection or harmful request")
            return
        context = history[-1].question if history else ""
        # Answers are drafted and checked in the content's language, word for word against the passages;
        # an English question is first put into Chinese (names annotated from the content), and the
        # checked answer is translated back (its Chinese draft is not shown).
        checked_question = await self._to_chinese(question, content, draft) if lang == "en" else question
        evidence = grounding.question_evidence(checked_question, content, context)
        if self.cfg.grounding.evidence_check and (reason := evidence.unanswerable()):
            yield self._decline(msg, content, draft, "decline", reason)
            return
        visible = lang == "zh"
        quoted: list[Passage] = []
        completion = Completion()
        for attempt in (1, 2):
            if attempt == 2:
                # The first draft failed; ask again with the best-matching passages quoted next to the
                # question, where a small model copies from them far more reliably.
                quoted = [p for p, _ in content.retrieve(evidence.query, 2)]
                if not quoted or not self.cfg.grounding.retry_with_passages:
                    break
                draft.restart()
                if visible:
                    yield Retract("checking the source passages again")
            messages = self._messages(content, history, checked_question, quoted)
            async for event in self._generate(messages, msg.conversation_key, draft, completion, visible):
                yield event
            reply = self._finish(msg, content, draft, completion, checked_question, evidence)
            # Quoting passages cannot help a question about something the content never names.
            if not reply.refused or not evidence.found or evidence.missing_terms:
                break
        if lang == "en" and not reply.refused:
            async for event in self._translate(msg, content, reply, draft, completion, question):
                yield event
        reply.prompt_tokens = completion.prompt_tokens
        reply.completion_tokens = completion.completion_tokens
        yield reply

    async def _generate(self, messages: list[dict[str, str]], conversation: str, draft: _Draft,
                        completion: Completion, visible: bool = True) -> AsyncIterator[Event]:
        renumber = MarkerRenumber()
        used = Completion()
        async for piece in self.backend.stream(messages, conversation=conversation, completion=used):
            if isinstance(piece, Queued):
                yield piece
                continue
            if draft.ttft_ms is None and visible:
                draft.ttft_ms = int((time.perf_counter() - draft.started) * 1000)
            draft.text += piece
            shown = renumber.feed(piece)
            if shown and visible:
                yield Delta(shown)
        rest = renumber.flush()
        if rest and visible:
            yield Delta(rest)
        completion.prompt_tokens += used.prompt_tokens
        completion.completion_tokens += used.completion_tokens

    async def _to_chinese(self, question: str, content: ContentSet, draft: _Draft) -> str:
        """The English question in Chinese, names spelled as the content has them (hidden from the user)."""
        annotated = translation.map_english(question, content)
        mixed = translation.map_english(question, content, replace=True)
        messages = [{"role": "system", "content": self._system_message(content, with_passages=self._prefix_mode)},
                    {"role": "user", "content": self.prompts.render("translate_zh", question=mixed)}]
        text = ""
        async for piece in self.backend.stream(messages, conversation="translate", max_tokens=80):
            if isinstance(piece, str):
                text += piece
        text = text.strip().splitlines()[0] if text.strip() else ""
        text = re.sub(rf"([{HAN}]{{2,}})\s*[（(]\1[)）]", r"\1", text)  # "赵晓光（赵晓光）"
        draft.earlier += f"[question] {text}\n---\n"
        # A translation that lost the question's Chinese names is worse than the annotated original.
        kept = all(name in text for name in re.findall(r"\(([^)]*)\)", annotated))
        return text if language(text) == "zh" and kept else annotated

    async def _translate(self, msg: Incoming, content: ContentSet, reply: Reply, draft: _Draft,
                         completion: Completion, question: str) -> AsyncIterator[Event]:
        """Stream the checked Chinese answer in English; its [n] markers go at the end."""
        source = strip_markers(reply.text)
        names = translation.english_names(source + " " + translation.map_english(question, content), content)
        glossary = "；".join(f"{zh} = {en}" for zh, en in names.items()) or "-"
        messages = [{"role": "system", "content": self._system_message(content, with_passages=self._prefix_mode)},
                    {"role": "user", "content": self.prompts.render("translate_en", answer=source,
                                                                    glossary=glossary)}]
        draft.restart()
        async for event in self._generate(messages, msg.conversation_key, draft, completion):
            yield event
        marks = "".join(f"[{c.n}]" for c in reply.citations)
        english = strip_markers(draft.text).strip()
        english = re.sub(r"^[^.!?]*\?\s*", "", english) or english  # the model sometimes repeats the question
        if english and grounding.language(english) == "en" and translation.faithful(english, reply, content):
            reply.text = english.rstrip(".") + marks + "."
            if marks:
                yield Delta(marks)
        else:  # a failed translation still leaves a checked answer to show
            reply.text = source + marks
            yield Retract("translation failed; showing the checked answer")
            yield Delta(reply.text)
        reply.draft = draft.earlier + draft.text

    def _trim(self, history: list[HistoryTurn]) -> list[HistoryTurn]:
        """The latest turns that fit `conversation.history_tokens`, oldest first."""
        budget = self.cfg.conversation.history_tokens
        kept: list[HistoryTurn] = []
        for turn in reversed(history):
            cost = self.backend.count_tokens(turn.question + turn.answer)
            if cost > budget:
                break
            budget -= cost
            kept.insert(0, turn)
        return kept

    def _messages(self, content: ContentSet, history: list[HistoryTurn], question: str,
                  quoted: list[Passage]) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self._system_message(content, with_passages=self._prefix_mode)}]
        for turn in history:
            messages.append({"role": "user", "content": turn.question})
            messages.append({"role": "assistant", "content": strip_markers(turn.answer)})
        if not self._prefix_mode and not quoted:
            quoted = [p for p, _ in content.retrieve(question, self.cfg.content.retrieve_top_k)]
        if quoted:
            # Quoted passages need no paragraph hint; a second note after the question distracted the model.
            text = question
            if noun := kind_noun(question):
                # Spelled out for a "what kind of N" question: drafts tend to restate N as a verb (刘庆峰代表…).
                text += "\n" + self.prompts.render("kind", noun=noun)
            text = self.prompts.render("retrieved", passages=self._format(sorted(quoted, key=lambda p: p.order)),
                                       question=text)
        else:
            # Naming the best-matching paragraphs costs a few tokens and keeps a small model on them.
            hint = "、".join(f"[{p.order + 1}]" for p, _ in content.retrieve(question, 2)) or "-"
            text = self.prompts.render("question", question=question, hint=hint)
        messages.append({"role": "user", "content": text})
        return messages

    def _finish(self, msg: Incoming, content: ContentSet, draft: _Draft, completion: Completion,
                question: str, evidence: grounding.Evidence) -> Reply:
        answer = draft.text.strip()
        if not answer or grounding.model_declined(answer, self.prompts.declines):
            reply = self._decline(msg, content, draft, "decline", "the model found no answer in the content")
        else:
            cited = [content.passages[k - 1] for k in markers(answer) if 0 < k <= len(content.passages)]
            check = grounding.support(answer, question, content, cited, self.cfg.grounding.min_support,
                                      evidence.missing_terms, self.cfg.grounding.min_topic)
            if check.supported or not self.cfg.grounding.support_check:
                text, citations = self._cite(answer, check.passages, content)
                reply = self._reply(msg, content, text, refused=False, draft=draft, started=draft.started)
                reply.citations = citations
            else:
                reply = self._decline(msg, content, draft, "decline", f"unsupported answer: {check.reason}")
                reply.retracted = True
        return reply

    def _cite(self, answer: str, passages: list[Passage], content: ContentSet) -> tuple[str, list[Citation]]:
        """Renumber markers to display order, keeping only supporting passages; add one if none is marked."""
        return cite(answer, passages, content)

    def _decline(self, msg: Incoming, content: ContentSet, draft: _Draft, kind: str, reason: str) -> Reply:
        lang = language(msg.text)
        reply = self._reply(msg, content, self.prompts.text(f"{kind}_{lang}"), refused=True, draft=draft,
                            started=draft.started)
        reply.decline_reason = reason
        return reply

    def _reply(self, msg: Incoming, content: ContentSet, text: str, *, refused: bool, draft: _Draft | None,
               started: float, error: str | None = None) -> Reply:
        return Reply(text=text, refused=refused, ttft_ms=draft.ttft_ms if draft else None,
                     total_ms=int((time.perf_counter() - started) * 1000), model=self.model_name,
                     content_version=content.version, draft=(draft.earlier + draft.text) if draft else "", error=error)
