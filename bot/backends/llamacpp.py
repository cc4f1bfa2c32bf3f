"""Embedded llama.cpp with continuous batching: one owner thread decodes every running answer together.

The `llama_context` is not thread-safe, so one thread owns it. Sequence 0 holds the stable prefix (system
prompt with the content), computed once or restored from disk; an answer's sequence starts as a copy of
the prefix's KV cells (shared, not recomputed), prefills only its own suffix, and then decodes one token
a step in the same `llama_decode` batch as every other running answer. A new request joins at the next
step. Which requests run, in what order, and when they stop is the `Scheduler`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.backends import kvstate
from bot.backends.base import Completion, ProgressFn
from bot.backends.scheduler import Request, Scheduler
from bot.config import ModelConfig
from bot.errors import BackendError
from bot.types import Queued

log = logging.getLogger(__name__)
PREFIX_SEQ = 0


@dataclass
class LlamaSettings:
    """The model file to load, its identity for the prefix cache, and the configured parameters."""

    model_path: Path
    model_name: str
    model_sha256: str
    params: ModelConfig = field(default_factory=ModelConfig)
    cache_dir: Path | None = None


@dataclass
class Counters:
    """What the owner thread has done, for tests and `bot bench`."""

    prompt_tokens_evaluated: int = 0  # prompt tokens run through the model (the prefix's excluded)
    prefix_tokens_evaluated: int = 0
    decode_calls: int = 0
    most_running: int = 0  # the largest number of answers decoded in one step
    timings: dict[str, Any] = field(default_factory=dict)  # load_s, prefix_s, prefix_source


class LlamaCppBackend:
    """The Backend protocol over an embedded llama.cpp model, several answers decoded at once."""

    def __init__(self, settings: LlamaSettings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        p = settings.params
        self.counters = Counters()
        started = time.perf_counter()
        self._model, self._ctx = _load(settings.model_path, p)
        self.counters.timings["load_s"] = time.perf_counter() - started
        self._vocab = self._model.vocab
        self._mem = self._ctx.memory
        self._formatter = _formatter(self._model)
        self._batch = _Batch(p.n_batch)
        self._prefix: list[int] = []
        self.sched = Scheduler(slots=p.parallel, n_ctx=p.n_ctx, n_batch=p.n_batch, queue_limit=p.queue_limit)
        self._calls: list[Callable[[], None]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llama-owner", daemon=True)
        self._thread.start()

    # ---- public interface -------------------------------------------------------------------------

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None) -> None:
        """Evaluate (or restore from disk) the token prefix shared by every request."""
        await self._on_owner(lambda: self._warm(prefix, progress))

    async def stream(self, messages: list[dict[str, str]], *, conversation: str, max_tokens: int | None = None,
                     completion: Completion | None = None,
                     priority: float | None = None) -> AsyncIterator[str | Queued]:
        """Queue the request and yield its text pieces as the running batch decodes them."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        p = self.settings.params
        prompt = await asyncio.to_thread(self.prompt_tokens, messages)
        req = Request(prompt, max_tokens or p.max_tokens, conversation,
                      lambda item: loop.call_soon_threadsafe(out.put_nowait, item),
                      time_limit_s=p.answer_time_limit_s, completion=completion)
        if priority is not None:
            req.priority = priority
        if ahead := self.sched.submit(req):
            yield Queued(ahead)
        try:
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
        return len(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied to `messages`, ready for the assistant's answer, as tokens."""
        text = self._formatter(messages=messages).prompt
        return self._model.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    async def close(self) -> None:
        """Stop the owner thread after the current step and free the model."""
        with self.sched.cond:
            self._stopping = True
            self.sched.cond.notify()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
        if self._thread.is_alive():  # still evaluating: freeing the model under it would crash the process
            log.warning("the model thread is still busy; leaving the model to process exit")
            return
        with contextlib.suppress(Exception):
            self._ctx.close()
            self._model.close()

    # ---- owner thread -----------------------------------------------------------------------------

    async def _on_owner(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the owner thread between two decode steps and wait for it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def call() -> None:
            try:
                fn()
                loop.call_soon_threadsafe(done.set_result, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(done.set_exception, exc)

        with self.sched.cond:
            self._calls.append(call)
            self.sched.cond.notify()
        await done

    def _run(self) -> None:
        while True:
            with self.sched.cond:
                while not (self._stopping or self._calls or self.sched.running or self.sched.waiting):
                    self.sched.cond.wait()
                if self._stopping:
                    return
                calls, self._calls = self._calls, []
            for call in calls:
                call()
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - every running answer learns of it; the thread lives on
                log.exception("decoding failed")
                for req in list(self.sched.running.values()):
                    req.sink(exc)
                    self._end(req)

    def _step(self) -> None:
        for req in self.sched.expired():
            self._end(req)
        for req in self.sched.admit(self._shared, self._free_seq):
            if req.pos:
                self._llama.llama_memory_seq_cp(self._mem, PREFIX_SEQ, req.seq, 0, req.pos)
            req.sampler = _sampler(self.settings.params, len(req.prompt) + req.order)
        steps = self.sched.plan()
        if not steps:
            return
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
            if row >= 0:
                self._sampled(req, self._llama.llama_sampler_sample(req.sampler.sampler, self._ctx.ctx, row))

    def _sampled(self, req: Request, token: int) -> None:
        if self._llama.llama_vocab_is_eog(self._vocab, token):
            self._end(req)
            return
        req.generated += 1
        if text := req.decoder.decode(_piece(self._vocab, token)):
            req.sink(text)
        req.todo = [token]
        if req.generated >= req.max_tokens:
            self._end(req)

    def _end(self, req: Request) -> None:
        """Free the request's cells and slot and close its stream."""
        if tail := req.decoder.decode(b"", final=True):
            req.sink(tail)
        if req.completion is not None:
            req.completion.prompt_tokens, req.completion.completion_tokens = len(req.prompt), req.generated
        self._llama.llama_memory_seq_rm(self._mem, req.seq, -1, -1)
        req.sampler = None
        self.sched.finish(req)
        req.sink(None)

    def _shared(self, prompt: list[int]) -> int:
        """How many of the prompt's first tokens the prefix sequence holds."""
        return len(os.path.commonprefix([self._prefix, prompt]))

    def _free_seq(self) -> int:
        return min(set(range(1, self.settings.params.parallel + 1)) - set(self.sched.running))

    @property
    def _llama(self) -> Any:
        import llama_cpp

        return llama_cpp

    def _warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None) -> None:
        started = time.perf_counter()
        tokens = self._prefix_tokens(prefix)
        path = self._cache_path(tokens)
        self._llama.llama_memory_seq_rm(self._mem, PREFIX_SEQ, -1, -1)
        self._prefix = []
        if path and path.exists() and kvstate.restore(self._ctx.ctx, PREFIX_SEQ, path, tokens):
            source = "restored"
        else:
            self._llama.llama_memory_seq_rm(self._mem, PREFIX_SEQ, -1, -1)
            self._evaluate_prefix(tokens, progress)
            source = "computed"
            if path:
                kvstate.save(self._ctx.ctx, PREFIX_SEQ, path, tokens)
        self._prefix = tokens
        self.sched.prefix_cells = len(tokens)
        elapsed = time.perf_counter() - started
        self.counters.timings.update(prefix_s=elapsed, prefix_source=source)
        log.info("prefix of %d tokens %s in %.1f s", len(tokens), source, elapsed)

    def _evaluate_prefix(self, tokens: list[int], progress: ProgressFn | None) -> None:
        step = self.settings.params.n_batch
        fake = Request(tokens, 0, "", lambda _: None, seq=PREFIX_SEQ)
        for i in range(0, len(tokens), step):
            chunk = tokens[i : i + step]
            fake.pos = i
            self._batch.fill([(fake, chunk)], logits=False)
            if (rc := self._llama.llama_decode(self._ctx.ctx, self._batch.batch)) != 0:
                raise BackendError(f"llama_decode returned {rc} while reading the prefix; raise model.n_ctx")
            self.counters.prefix_tokens_evaluated += len(chunk)
            if progress:
                progress(min(i + step, len(tokens)), len(tokens))

    def _prefix_tokens(self, prefix: list[dict[str, str]]) -> list[int]:
        """The tokens every request starts with: the common part of two renderings of the chat template."""
        a = self.prompt_tokens(prefix + [{"role": "user", "content": "A"}])
        b = self.prompt_tokens(prefix + [{"role": "user", "content": "B"}])
        return list(os.path.commonprefix([a, b]))

    def _cache_path(self, tokens: list[int]) -> Path | None:
        s, p = self.settings, self.settings.params
        if s.cache_dir is None:
            return None
        identity = (s.model_sha256, str(p.n_ctx), self._llama.__version__, f"fa={p.flash_attn}")
        return kvstate.cache_path(s.cache_dir, identity, tokens)


class _Batch:
    """One reusable `llama_batch` of up to n_batch tokens."""

    def __init__(self, n_batch: int) -> None:
        import llama_cpp

        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def fill(self, steps: list[tuple[Request, list[int]]], *, logits: bool = True) -> list[int]:
        """Put each request's tokens in; the row of its logits when this chunk ends its todo, else -1."""
        b, n, rows = self.batch, 0, []
        for req, toks in steps:
            for j, tok in enumerate(toks):
                b.token[n], b.pos[n], b.n_seq_id[n] = tok, req.pos + j, 1
                b.seq_id[n][0] = req.seq
                b.logits[n] = False
                n += 1
            last = logits and len(toks) == len(req.todo)
            b.logits[n - 1] = last
            rows.append(n - 1 if last else -1)
        b.n_tokens = n
        return rows


def _load(path: Path, p: ModelConfig) -> tuple[Any, Any]:
    import llama_cpp
    from llama_cpp import _internals

    mparams = llama_cpp.llama_model_default_params()
    with _quiet_stderr():
        model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        c = llama_cpp.llama_context_default_params()
        c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max = p.n_ctx, p.n_batch, p.n_batch, p.parallel + 1
        c.n_threads = c.n_threads_batch = p.threads
        c.kv_unified = True  # the prefix's cells are shared by every sequence, not copied per stream
        c.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash_attn
                             else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        c.no_perf = True
        ctx = _internals.LlamaContext(model=model, params=c, verbose=False)
    return model, ctx


def _formatter(model: Any) -> Any:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata().get("tokenizer.chat_template")
    if not template:
        raise BackendError("the GGUF has no chat template; use a chat model")
    eos = _piece(model.vocab, model.token_eos(), special=True).decode("utf-8", "ignore")
    bos = _piece(model.vocab, model.token_bos(), special=True).decode("utf-8", "ignore")
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


def _sampler(p: ModelConfig, seed_offset: int) -> Any:
    """Greedy at temperature 0 (answers repeat exactly); else top-p and temperature with a seeded draw."""
    from llama_cpp import _internals

    s = _internals.LlamaSampler()
    if p.repeat_penalty != 1.0:
        s.add_penalties(0, 64, p.repeat_penalty, 0.0, 0.0)
    if p.temperature <= 0:
        s.add_greedy()
    else:
        s.add_top_p(p.top_p, 1)
        s.add_temp(p.temperature)
        s.add_dist(p.seed + seed_offset)
    return s


def _piece(vocab: Any, token: int, *, special: bool = False) -> bytes:
    import llama_cpp

    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """llama.cpp prints load logs on fd 2; keep them off the terminal unless debugging."""
    if os.environ.get("BOT_LLAMA_VERBOSE"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def smoke(model_path: str) -> int:
    """Decode one token; setup runs this in a subprocess to catch builds the CPU cannot execute."""
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=128, n_threads=2, verbose=False)
    out = llm.create_completion("1, 2, 3,", max_tokens=1, temperature=0)
    print("smoke ok:", repr(out["choices"][0]["text"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(smoke(sys.argv[1]))
