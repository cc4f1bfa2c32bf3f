"""The extractive path for fact questions: pick the sentence that answers among a few candidates (or none),
copy the answer out of it, and decide by one calibrated score.

A small model asked to answer freely invents a neighbouring fact as readily as it states a true one, and
policing the free draft with word lists misses paraphrases both ways. Asked instead *which of these
numbered sentences answers the question, or 0*, it tells them apart well (README, Grounding: AUC per set);
copying the answer under a constraint (bot/backends/constraint.py) puts only the content's own words in it,
and the citation is the picked sentence by construction. `grounding.pick: judged` asks about each candidate
alone instead (是 or 否, the prompts side by side): measured, not the default (README, Grounding).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.answering.decision import Weights
from bot.answering.prompts import Prompts
from bot.backends.base import Backend, Extraction, Picked, part
from bot.config import GroundingConfig
from bot.content.knowledge import ContentSet
from bot.content.retrieval import Sentence
from bot.grounding.evidence import Evidence
from bot.text.markers import strip_markers
from bot.text.words import bare
from bot.types import Queued

Messages = list[dict[str, str]]
LABELS = "0123456789"  # one token each in the models' vocabularies; "0" is "none of them"
JUDGE_LABELS = ("否", "是")  # a judged candidate: does it answer? 是 is then copied from
LEAD = "：答案是“"  # forced after the label: the copy then starts at the answer, and ends at its ”
FIRST_COPY_SIGNALS = ("copy_vs_none",)  # known once the copy's first token is read
WHOLE_COPY_SIGNALS = ("copy_mean",)  # known once the copy ends
NONE_WORD = "无"

# Questions that want more than one sentence's fact: a summary, a comparison, an opinion or an explanation
# of how or why. Measured on the tuning sets (README, Grounding: routing), the rest are facts. 比较 only as a
# verb, with the two things compared or a clause end beside it: as an adverb ("个体比较大", "比较好的跟随水平")
# it asks a fact, and drafted, a reason was invented.
_COMPARE = (r"比较一下|比较起来|(?:进行|做个|做一下|作个|作一)比较|(?:请你?|试)比较|^比较(?=.{1,30}[和与跟同及])|"
            r"[和与跟同].{1,20}比较(?=$|[，。？！,.?!])|相比(?:如何|怎么样|怎样)")
_OPEN = re.compile(
    r"总结|概括|概述|归纳|主要内容|主要讲|讲了什么|讲的是什么|说了什么|写了什么|介绍一下|简要介绍|"
    rf"{_COMPARE}|对比|区别|异同|有何不同|有什么不同|不同之处|相比之下|怎么看|如何看待|怎样看待|评价|"
    r"summari[sz]e|summary|overview|compare|comparison|difference between|what is the article about",
    re.IGNORECASE)


# The words that answer a yes/no question. A copy that is only one of them answers by the model's lean, not
# by the sentence (it copies 是 for questions whose answer is no too: README, Grounding, yes/no questions), and
# answers nothing else either, so the sentence itself is shown instead.
_YES = frozenset({"是", "有", "对", "会", "能", "可以", "没错", "曾"})
_NO = frozenset({"不是", "否", "没有", "不对", "不会", "不能", "不可以", "不", "没", "未"})
_HEDGES = re.compile(r"^[并也都就还]|[的了过]$")  # 也是, 并不是, 是的, 有过: the same bare word

_LEADING_TAG = re.compile(r"^\s*[（(【\[][^）)】\]]{0,24}[）)】\]]\s*")
_LAST_ASK = re.compile(r"^(.*[？?])[^？?]*$", re.DOTALL)


def untagged(question: str) -> str:
    """The question without a bracketed tag before it ("【用户3】", "（用户1）")."""
    return _LEADING_TAG.sub("", question).strip()


def core(question: str) -> str:
    """The question without what only frames it: a bracketed tag before it ("【用户3】"), and whatever follows
    its last question mark (a tag like "（用户1第2问）", "谢谢！"). Its numbers are then the question's own."""
    text = untagged(question)
    asked = _LAST_ASK.match(text)
    return asked.group(1).strip() if asked and len(bare(asked.group(1))) >= 2 else text


def polar_sense(answer: str) -> str:
    """The sense of an answer that is only a yes or a no word ("yes", "no"), its [n] markers aside; else ""."""
    word = _HEDGES.sub("", bare(strip_markers(answer)))
    return "yes" if word in _YES else "no" if word in _NO else ""


def restates(copied: str, question: str) -> bool:
    """Whether a copy says nothing the question did not: its text occurs in the question whole."""
    text = bare(strip_markers(copied))
    return bool(text) and text in bare(question)


def shown_answer(copied: str, sentence: str, question: str) -> str:
    """What an extraction shows: its copy, or the sentence when the copy answers nothing by itself."""
    # A bare yes or no word, or words the question already holds ("哈佛体育场位于哪里？" → "哈佛体育场").
    return sentence if polar_sense(copied) or restates(copied, core(question)) else copied


def is_open(question: str) -> bool:
    """A question for the free draft (summaries, comparisons, opinions); else a fact to extract."""
    return bool(_OPEN.search(untagged(question)))  # not `core`: a request may follow its "？"


@dataclass
class Found:
    """An extraction's outcome: the sentence picked, the answer copied out of it, its signals and score."""

    sentence: Sentence
    answer: str
    score: float
    signals: dict[str, float]
    candidates: list[Sentence] = field(default_factory=list)
    extraction: Extraction = field(default_factory=Extraction)
    pick_ms: int = 0  # until the labels' probabilities were read
    copy_ms: int = 0  # the copy after them (0: declined on the pick's signals alone, nothing copied)

    def answers(self, threshold: float) -> bool:
        """Whether this is answered at the operating point `threshold`."""
        return bool(self.answer) and self.score >= threshold


class Extractor:
    """Builds the pick prompt, runs it on the backend, and scores what it found."""

    def __init__(self, cfg: GroundingConfig, backend: Backend, prompts: Prompts, weights: Weights) -> None:
        self.cfg, self.backend, self.prompts, self.weights = cfg, backend, prompts, weights
        self.pick = cfg.pick or weights.pick  # the signals mean what the weights were fitted on

    def instructions(self) -> Messages:
        """The system message every pick prompt starts with (kept computed by the backend)."""
        name = "judge_system" if self.pick == "judged" else "pick_system"
        return [{"role": "system", "content": self.prompts.text(name)}]

    def messages(self, question: str, candidates: list[Sentence], context: str = "") -> Messages:
        """The pick prompt: the numbered candidates, the question (after the previous one, for a follow-up)."""
        numbered = "\n".join(self.prompts.render("pick_sentence", n=i, text=s.text)
                             for i, s in enumerate(candidates, 1))
        before = self.prompts.render("pick_context", question=context) + "\n" if context else ""
        text = self.prompts.render("pick", sentences=numbered, question=question, context=before)
        return self.instructions() + [{"role": "user", "content": text}]

    def judge_messages(self, question: str, sentence: Sentence, context: str = "") -> Messages:
        """The judge prompt: one candidate and the question (after the previous one, for a follow-up)."""
        before = self.prompts.render("pick_context", question=context) + "\n" if context else ""
        text = self.prompts.render("judge", sentence=sentence.text, question=question, context=before)
        return self.instructions() + [{"role": "user", "content": text}]

    def candidates(self, question: str, content: ContentSet, evidence: Evidence) -> list[Sentence]:
        """The sentences to pick among: the best matches of the question (and a follow-up's context)."""
        query = evidence.query or question
        if query.startswith(question):  # the question's own words, without its tag, then any context
            query = core(question) + query[len(question):]
        return content.sentences.candidates(query, self.cfg.candidates)[: len(LABELS) - 1]

    async def run(self, question: str, content: ContentSet, evidence: Evidence, *, conversation: str,
                  priority: float, threshold: float, context: str = "") -> AsyncIterator[Queued | Found]:
        """Queued notes while waiting, then one Found (nothing when no sentence shares a term with it)."""
        candidates = self.candidates(question, content, evidence)
        question = core(question)
        if not candidates:
            return
        if self.pick == "judged":
            async for item in self._judged(question, candidates, context, conversation, priority, threshold):
                yield item
            return
        result = Extraction()
        labels = LABELS[: len(candidates) + 1]
        started = time.perf_counter()
        copied = ""  # as read: a declined request is closed before the backend has filled `result.text`
        stream = self.backend.extract(
            self.messages(question, candidates, context), list(labels), ["", *(s.text for s in candidates)],
            lead=LEAD, none_word=NONE_WORD, conversation=conversation, result=result,
            max_tokens=self.cfg.max_answer_tokens, priority=priority)
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, Queued):
                    yield item
                elif isinstance(item, Picked):
                    break
            picked = time.perf_counter()
            async for piece in self._copy(stream, lambda: signals(result), threshold):
                copied += piece
        done = time.perf_counter()
        answer = tidy(copied)
        values = signals(result)
        yield Found(candidates[result.chosen - 1], answer, self.weights.probability(values), values, candidates,
                    result, int((picked - started) * 1000), int((done - picked) * 1000) if answer else 0)

    async def _judged(self, question: str, candidates: list[Sentence], context: str, conversation: str,
                      priority: float, threshold: float) -> AsyncIterator[Queued | Found]:
        """Each candidate judged alone, side by side (是 or 否, one forward pass each); the likeliest 是 is
        copied from, decided as early as the weights' signals allow."""
        started = time.perf_counter()
        results = [Extraction() for _ in candidates]
        streams = [self.backend.extract(
            self.judge_messages(question, s, context), list(JUDGE_LABELS), ["", s.text], lead=LEAD,
            none_word=NONE_WORD, conversation=part(conversation, i), result=r,
            max_tokens=self.cfg.max_answer_tokens, priority=priority)
            for i, (s, r) in enumerate(zip(candidates, results, strict=True))]
        notes: asyncio.Queue[Queued | None] = asyncio.Queue()
        tasks = [asyncio.create_task(_until_picked(s, notes)) for s in streams]
        watcher = asyncio.ensure_future(asyncio.wait(tasks))  # never raises: each task's error is read below
        watcher.add_done_callback(lambda _: notes.put_nowait(None))
        copied = ""
        try:
            while (note := await notes.get()) is not None:
                yield note
            for task in tasks:
                task.result()  # a part that failed fails the turn
            margins = [r.logprobs[1] - r.logprobs[0] for r in results]
            best = max(range(len(candidates)), key=margins.__getitem__)
            for i, other in enumerate(streams):
                if i != best:
                    await other.aclose()  # its copy is not needed
            picked, result = time.perf_counter(), results[best]
            async for piece in self._copy(streams[best], lambda: judged_signals(margins, result), threshold):
                copied += piece
        finally:
            await _closed(tasks, watcher, streams)
        done = time.perf_counter()
        answer, values = tidy(copied), judged_signals(margins, result)
        summary = Extraction(  # the log shows each candidate's 是 and the best's 否
            logprobs=[result.logprobs[0], *(r.logprobs[1] for r in results)], chosen=best + 1, text=copied,
            token_logprobs=result.token_logprobs, none_first=result.none_first,
            prompt_tokens=sum(r.prompt_tokens for r in results), completion_tokens=result.completion_tokens)
        yield Found(candidates[best], answer, self.weights.probability(values), values, candidates, summary,
                    int((picked - started) * 1000), int((done - picked) * 1000) if answer else 0)

    async def _copy(self, stream: AsyncIterator[str | Queued | Picked], values: Callable[[], dict[str, float]],
                    threshold: float) -> AsyncIterator[str]:
        """The copy after the labels were read, stopped at the decision point when it declines."""
        # Decided as early as the weights' signals allow: on the pick, on the copy's first token, or at its
        # end. A decline then stops the request: nothing more is copied.
        when = decision_point(self.weights.signals)
        if when == "pick" and self.weights.probability(values()) < threshold:
            return
        async for item in stream:
            if isinstance(item, str):
                yield item
                if when == "first":
                    when = "decided"
                    if self.weights.probability(values()) < threshold:
                        return  # declined: the request stops here


async def _closed(tasks: list[asyncio.Task[None]], watcher: asyncio.Future[Any],
                  streams: list[AsyncGenerator[str | Queued | Picked, None]]) -> None:
    """Stop a judged turn's parts whatever happened: every reader done before any request is closed (one
    being read cannot be), and every request closed even when one failed."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    watcher.cancel()
    for stream in streams:
        with contextlib.suppress(Exception):
            await stream.aclose()


async def _until_picked(stream: AsyncIterator[str | Queued | Picked], notes: asyncio.Queue[Queued | None]) -> None:
    """Read a judged candidate's request until its labels are read, passing on its queue notes."""
    async for item in stream:
        if isinstance(item, Picked):
            return
        if isinstance(item, Queued):
            notes.put_nowait(item)


def judged_signals(margins: list[float], result: Extraction) -> dict[str, float]:
    """The judged pick's signals, named as the numbered pick's: "none" is the best candidate's 否."""
    ranked = sorted(margins, reverse=True)
    values = signals(Extraction(logprobs=[result.logprobs[0], result.logprobs[1]],
                                token_logprobs=result.token_logprobs, none_first=result.none_first))
    values["gap"] = ranked[0] - ranked[1] if len(ranked) > 1 else 10.0
    return values


def decision_point(names: tuple[str, ...]) -> str:
    """When the signals `names` are all known: "pick", "first" (the copy's first token) or "end"."""
    if set(names) & set(WHOLE_COPY_SIGNALS):
        return "end"
    return "first" if set(names) & set(FIRST_COPY_SIGNALS) else "pick"


_PAIRS = ("“”", "「」", "『』", "‘’", "（）", "()", "《》")


def tidy(copied: str) -> str:
    """The copied answer without the spaces and punctuation at its ends, and without a quote or bracket
    there whose partner it does not hold."""
    text = re.sub(r"^[\s，,、；;：:。.！!？?]+|[\s，,、；;：:。.！!？?]+$", "", copied)
    for opening, closing in _PAIRS:
        if text.startswith(opening) and closing not in text:
            text = text[1:]
        if text.endswith(closing) and opening not in text:
            text = text[:-1]
    return text.strip()


def signals(result: Extraction) -> dict[str, float]:
    """What the decision may weigh: the pick's log-probabilities and the copy's (bot/answering/decision.py)."""
    lp = result.logprobs
    options = sorted(lp[1:], reverse=True)
    second = options[1] if len(options) > 1 else options[0] - 10.0
    copied = result.token_logprobs or [-10.0]
    return {
        "margin": options[0] - lp[0],  # the best sentence against "none of them"
        "top": options[0],
        "none": lp[0],
        "gap": options[0] - second,  # the best sentence against the runner-up
        "mass": math.log(sum(math.exp(v) for v in lp)),  # how much of the next token the labels hold
        "copy_vs_none": copied[0] - result.none_first,  # the copy's first token against the word "无"
        "copy_mean": sum(copied) / len(copied),
    }
