"""Embedded llama.cpp with continuous batching: one owner thread decodes every running answer together.

The `llama_context` is not thread-safe, so one thread owns it. Prefix sequences hold the stable prefixes
(system prompt with the content, one per content group), computed once or restored from disk; an
answer's sequence starts as a copy of its prefix's KV cells (shared, not recomputed), prefills only its
own suffix, and then decodes one token a step in the same `llama_decode` batch as every other running
answer. A new request joins at the next step. Which requests run, in what order, and when they stop is
the `Scheduler`'s business.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.backends import kvstate
from bot.backends.base import Completion, Extraction, Picked, ProgressFn
from bot.backends.constraint import Copying, Pieces, closing, log_softmax
from bot.backends.llamalib import Batch, formatter, load, piece, quiet_stderr, sampler
from bot.backends.owner import Owner
from bot.backends.prefixes import Prefixes, PrefixOps
from bot.backends.scheduler import Request, Scheduler
from bot.backends.tokenizer import Tokenizer
from bot.config import ModelConfig
from bot.errors import BackendError
from bot.types import Queued

log = logging.getLogger(__name__)
# Prefix tokens read per step while answers may be decoding: a 512-token chunk stalls them ~10 s on 2 cores.
PREFIX_CHUNK = 256
# One more prefix sequence than model.prefix_slots: it holds the extraction instructions, never evicted.
PINNED = 1


@dataclass
class LlamaSettings:
    """The model file to load, its identity for the prefix cache, and the configured parameters."""

    model_path: Path
    model_name: str
    model_sha256: str
    params: ModelConfig = field(default_factory=ModelConfig)
    cache_dir: Path | None = None

    def cache_path(self, tokens: list[int]) -> Path | None:
        """Where a prefix of `tokens` is saved (its file names the model, context layout and llama.cpp)."""
        if self.cache_dir is None:
            return None
        import llama_cpp

        p = self.params
        identity = (self.model_sha256, str(p.n_ctx), llama_cpp.__version__, f"fa={p.flash_attn}")
        return kvstate.cache_path(self.cache_dir, identity, tokens)


@dataclass
class Counters:
    """What the owner thread has done, for tests and `bot bench`."""

    prompt_tokens_evaluated: int = 0  # prompt tokens run through the model (the prefix's excluded)
    prefix_tokens_evaluated: int = 0
    decode_calls: int = 0
    # Steps in which every sequence decoded one token (no prompt in the batch): what llama-batched-bench's
    # S_TG measures, with this engine's sampling and bookkeeping included.
    decode_step_tokens: int = 0
    decode_step_s: float = 0.0
    most_running: int = 0  # the largest number of answers decoded in one step
    timings: dict[str, Any] = field(default_factory=dict)  # load_s, prefix_s, prefix_source


class LlamaCppBackend:
    """The Backend protocol over an embedded llama.cpp model, several answers decoded at once."""

    def __init__(self, settings: LlamaSettings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        p = settings.params
        self.counters = Counters()
        self.timings = self.counters.timings  # load_s, prefix_s, prefix_source (Backend.timings)
        started = time.perf_counter()
        self._model, self._ctx = load(settings.model_path, p)
        self.counters.timings["load_s"] = time.perf_counter() - started
        self._vocab = self._model.vocab
        self._n_vocab = self._llama.llama_vocab_n_tokens(self._vocab)
        # Every token's bytes, for copying under a constraint; read beside the start (0.3 s), off the owner.
        self._pieces = concurrent.futures.ThreadPoolExecutor(1).submit(
            Pieces, self._n_vocab, lambda t: piece(self._vocab, t))
        self._mem = self._ctx.memory
        self.tokenizer = Tokenizer(self._model, formatter(self._model))
        self._batch = Batch(p.n_batch)
        ops = PrefixOps(self._restore, self._evaluate, self._save, self._drop)
        self.prefixes = Prefixes(list(range(p.prefix_slots)), ops, min(p.n_batch, PREFIX_CHUNK),
                                 in_use=lambda: {r.source for r in self.sched.running.values()},
                                 room=self._room, pinned_seqs=tuple(range(p.prefix_slots, p.prefix_slots + PINNED)))
        self._answer_seqs = range(p.prefix_slots + PINNED, p.prefix_slots + PINNED + p.parallel)
        self.sched = Scheduler(slots=p.parallel, n_ctx=p.n_ctx, n_batch=p.n_batch, queue_limit=p.queue_limit,
                               prefix_cells=lambda: self.prefixes.cells())
        self.owner = Owner(self.sched.cond, lambda: bool(self.sched.running or self.sched.waiting), self._step,
                           self._failed)

    # ---- public interface -------------------------------------------------------------------------

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None, *,
                   pin: bool = False) -> None:
        """Evaluate (or restore from disk) a token prefix that requests start with; a pinned one stays."""
        await self.owner.run(lambda: self._warm(prefix, progress, pin))

    async def retain(self, prefixes: list[list[dict[str, str]]]) -> None:
        """Free the KV sequences of every other prefix (their files stay for a later restore)."""
        keep = [self.tokenizer.prefix(p) for p in prefixes]

        def drop_others() -> Iterator[None]:
            self.prefixes.retain(keep)
            yield

        await self.owner.run(drop_others)

    async def stream(self, messages: list[dict[str, str]], *, conversation: str, max_tokens: int | None = None,
                     completion: Completion | None = None, priority: float | None = None,
                     ignore_eos: bool = False) -> AsyncIterator[str | Queued]:
        """Queue the request and yield its text pieces as the running batch decodes them."""
        p = self.settings.params
        prompt = await asyncio.to_thread(self.tokenizer.prompt, messages)
        req = Request(prompt, max_tokens or p.max_tokens, conversation, lambda _: None,
                      time_limit_s=p.answer_time_limit_s, completion=completion, ignore_eos=ignore_eos)
        async for item in self._requested(req, priority):
            yield item

    async def extract(self, messages: list[dict[str, str]], labels: Sequence[str], sources: Sequence[str], *,
                      lead: str, none_word: str, conversation: str, result: Extraction, max_tokens: int = 48,
                      priority: float | None = None) -> AsyncIterator[str | Queued | Picked]:
        """Read the labels' probabilities from the logits, then copy out of the chosen source (base.Backend)."""
        prompt = await asyncio.to_thread(self.tokenizer.prompt, messages)
        pieces = await asyncio.wrap_future(self._pieces)
        t = self.tokenizer
        copying = Copying([t.single(x) for x in labels], [x.encode("utf-8") for x in sources],
                          t.tokens(lead), t.single(none_word), t.end(), pieces, result,
                          max_tokens, closing(lead).encode("utf-8"))
        req = Request(prompt, max_tokens + len(copying.lead) + 1, conversation, lambda _: None,
                      time_limit_s=self.settings.params.answer_time_limit_s, copying=copying)
        async for item in self._requested(req, priority):
            yield item

    async def _requested(self, req: Request, priority: float | None) -> AsyncIterator[Any]:
        """Queue `req` and yield what it produces as the running batch decodes it."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        req.sink = lambda item: loop.call_soon_threadsafe(out.put_nowait, item)
        if priority is not None:
            req.priority = priority
        try:
            if ahead := self.sched.submit(req):
                yield Queued(ahead)
            while (item := await out.get()) is not None:
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, BaseException):
                    raise BackendError(f"generation failed: {item}") from item
                yield item
        finally:
            self.sched.cancel_request(req)  # a consumer that stops early frees its slot at the next step

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's queued and running answers (for /reset); how many there were."""
        return self.sched.cancel(conversation)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's vocabulary (the vocabulary is read-only: safe off the owner)."""
        return len(self.tokenizer.tokens(text))

    async def close(self) -> None:
        """Stop the owner thread after the current step, end every stream still open, free the model."""
        stopped = BackendError("the model is shutting down")
        if not await self.owner.stop(stopped):
            log.warning("the model thread is still busy; leaving the model to process exit")
            return
        for req in [*self.sched.waiting, *self.sched.running.values()]:
            req.sink(stopped)
        with contextlib.suppress(Exception), quiet_stderr():  # llama.cpp logs its buffers as it frees them
            self._ctx.close()
            self._model.close()

    # ---- owner thread -----------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """A decode step raised: every running answer learns of it (the owner thread lives on)."""
        for req in list(self.sched.running.values()):
            req.sink(exc)
            self._end(req)

    def _step(self) -> None:
        started = time.perf_counter()
        for req in self.sched.expired():
            self._end(req)
        for req in self.sched.admit(self._shared, self._free_seq):
            if req.pos:
                self._llama.llama_memory_seq_cp(self._mem, req.source, req.seq, 0, req.pos)
            req.sampler = sampler(self.settings.params, len(req.prompt) + req.order)
        steps = self.sched.plan()
        if not steps:
            return
        pure_decode = all(req.generated and len(toks) == 1 for req, toks in steps)
        rows = self._batch.fill(steps)
        rc = self._llama.llama_decode(self._ctx.ctx, self._batch.batch)
        if rc != 0:
            raise BackendError(f"llama_decode returned {rc} (KV cache full? lower model.parallel)")
        c = self.counters
        c.decode_calls += 1
        c.most_running = max(c.most_running, len(steps))
        for (req, toks), row in zip(steps, rows, strict=True):
            if req.generated == 0:
                c.prompt_tokens_evaluated += len(toks)
            req.pos += len(toks)
            req.todo = req.todo[len(toks):]
            if row >= 0 and req.copying is not None:
                self._copied(req, row)
            elif row >= 0:
                self._sampled(req, self._llama.llama_sampler_sample(req.sampler.sampler, self._ctx.ctx, row))
        if pure_decode:
            c.decode_step_tokens += len(steps)
            c.decode_step_s += time.perf_counter() - started

    def _sampled(self, req: Request, token: int) -> None:
        if self._llama.llama_vocab_is_eog(self._vocab, token) and not req.ignore_eos:
            self._end(req)
            return
        req.generated += 1
        if text := req.decoder.decode(piece(self._vocab, token)):
            req.sink(text)
        req.todo = [token]
        if req.generated >= req.max_tokens:
            self._end(req)

    def _copied(self, req: Request, row: int) -> None:
        """An extraction's step: the labels read, or one more token copied under the constraint."""
        logits = self._llama.llama_get_logits_ith(self._ctx.ctx, row)
        step = req.copying.step(log_softmax(np.ctypeslib.as_array(logits, shape=(self._n_vocab,))))
        if step.picked is not None:
            req.sink(step.picked)
        if step.text:
            req.generated += 1
            if text := req.decoder.decode(step.text):
                req.sink(text)
        if not step.feed:
            self._end(req)
            return
        req.todo = step.feed

    def _end(self, req: Request) -> None:
        """Free the request's cells and slot and close its stream."""
        if tail := req.decoder.decode(b"", final=True):
            req.sink(tail)
        if req.copying is not None:
            req.copying.result.prompt_tokens, req.copying.result.completion_tokens = len(req.prompt), req.generated
            req.copying.result.text = req.copying.answer.decode("utf-8", "replace")
        if req.completion is not None:
            req.completion.prompt_tokens, req.completion.completion_tokens = len(req.prompt), req.generated
            req.completion.cut = req.generated >= req.max_tokens and not req.ignore_eos
        self._llama.llama_memory_seq_rm(self._mem, req.seq, -1, -1)
        req.sampler = None
        self.sched.finish(req)
        req.sink(None)

    def _shared(self, prompt: list[int]) -> tuple[int, int] | None:
        """The prefix sequence the prompt starts from and how many of its tokens that holds."""
        routed = self.prefixes.route(prompt)
        with self.sched.cond:
            for entry in self.prefixes.later:  # evicted without a file: read again between steps
                self.owner.add(self._recompute(entry))
        self.prefixes.later.clear()
        return routed

    def _recompute(self, entry: Any) -> Iterator[None]:
        entry.busy = False
        for _ in self.prefixes.warm(entry.tokens, entry.path):  # saved again if caching is on
            yield

    def _room(self, n: int) -> bool:
        """Whether n more prefix cells leave room for the running answers and one more."""
        p = self.settings.params
        return self.prefixes.cells() + n + self.sched.reserved() + p.max_tokens + 256 <= p.n_ctx

    def _free_seq(self) -> int:
        return min(set(self._answer_seqs) - set(self.sched.running))

    @property
    def _llama(self) -> Any:
        import llama_cpp

        return llama_cpp

    def _warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None, pin: bool) -> Iterator[None]:
        started = time.perf_counter()
        tokens = self.tokenizer.prefix(prefix)
        sources = ["resident"]
        for step in self.prefixes.warm(tokens, None if pin else self.settings.cache_path(tokens), progress, pin=pin):
            sources.append(step)
            yield
        source = sources[-1]
        elapsed = time.perf_counter() - started
        self.counters.timings.update(prefix_s=elapsed, prefix_source=source, prefix_tokens=len(tokens))
        log.info("prefix of %d tokens %s in %.1f s", len(tokens), source, elapsed)

    def _restore(self, seq: int, path: Path, tokens: list[int]) -> bool:
        self._drop(seq)
        return kvstate.restore(self._ctx.ctx, seq, path, tokens)

    def _save(self, seq: int, path: Path, tokens: list[int]) -> None:
        kvstate.save(self._ctx.ctx, seq, path, tokens, keep={p.path for p in self.prefixes.known if p.path})

    def _drop(self, seq: int) -> None:
        self._llama.llama_memory_seq_rm(self._mem, seq, -1, -1)

    def _evaluate(self, seq: int, chunk: list[int], pos: int) -> None:
        """Read prefix tokens into `seq` (no logits), in the same batch as nothing else."""
        fake = Request(chunk, 0, "", lambda _: None, seq=seq, pos=pos)
        self._batch.fill([(fake, chunk)], logits=False)
        if (rc := self._llama.llama_decode(self._ctx.ctx, self._batch.batch)) != 0:
            raise BackendError(f"llama_decode returned {rc} while reading the prefix; raise model.n_ctx")
        self.counters.prefix_tokens_evaluated += len(chunk)
