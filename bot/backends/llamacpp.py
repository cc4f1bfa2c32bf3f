"""Embedded llama-cpp-python: one owner thread holds the `Llama` (it is not thread-safe); requests queue to it.

The stable prefix (system prompt with the content) is evaluated once; llama.cpp's prefix matching then
reuses its KV cells for every question. Its KV state is saved to disk (tokens + llama state, no logits)
and restored at the next start, keyed by the model's sha256 and the prefix text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import queue
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.backends.base import Completion, ProgressFn
from bot.config import ModelConfig
from bot.errors import BackendBusy, BackendError
from bot.types import Queued

log = logging.getLogger(__name__)
_STATE_MAGIC = b"GABKV1\0\0"
_DONE = object()


@dataclass
class _Job:
    messages: list[dict[str, str]]
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    completion: Completion | None = None


@dataclass
class LlamaSettings:
    """The model file to load, its identity for the prefix cache, and the configured parameters."""

    model_path: Path
    model_name: str
    model_sha256: str
    params: ModelConfig = field(default_factory=ModelConfig)
    cache_dir: Path | None = None


class LlamaCppBackend:
    """The Backend protocol over an embedded llama.cpp model."""

    def __init__(self, settings: LlamaSettings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._llm = self._load()
        self._thread = threading.Thread(target=self._run, name="llama-owner", daemon=True)
        self._thread.start()

    def _load(self) -> Any:
        from llama_cpp import Llama

        s, p = self.settings, self.settings.params
        with _quiet_stderr():
            return Llama(model_path=str(s.model_path), n_ctx=p.n_ctx, n_batch=p.n_batch, n_threads=p.threads,
                         n_threads_batch=p.threads, seed=p.seed, verbose=False)

    # ---- public interface -------------------------------------------------------------------------

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None) -> None:
        """Evaluate (or restore from disk) the token prefix shared by every request."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def work() -> None:
            try:
                self._warm_on_owner(prefix, progress)
                loop.call_soon_threadsafe(done.set_result, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(done.set_exception, exc)

        self._submit_call(work)
        await done

    async def stream(self, messages: list[dict[str, str]], *, conversation: str, max_tokens: int | None = None,
                     completion: Completion | None = None) -> AsyncIterator[str | Queued]:
        """Queue the request on the owner thread and yield its text pieces as they are decoded."""
        with self._lock:
            if self._waiting >= self.settings.params.queue_limit:
                raise BackendBusy(f"{self._waiting} requests queued (model.queue_limit)")
            ahead = self._waiting
            self._waiting += 1
        job = _Job(messages, max_tokens or self.settings.params.max_tokens, asyncio.get_running_loop(), asyncio.Queue(),
                   completion=completion)
        if ahead:
            yield Queued(ahead)
        self._jobs.put(job)
        try:
            while True:
                item = await job.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise BackendError(f"generation failed: {item}") from item
                yield item
        finally:
            job.cancel.set()  # a consumer that stops early frees the owner thread at the next token

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's vocabulary (tokenising is safe outside the owner thread)."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


    async def close(self) -> None:
        """Stop the owner thread after the current request and free the model."""
        self._jobs.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
        if self._thread.is_alive():  # still evaluating: freeing the model under it would crash the process
            log.warning("the model thread is still busy; leaving the model to process exit")
            return
        with contextlib.suppress(Exception):
            self._llm.close()

    # ---- owner thread -----------------------------------------------------------------------------

    def _submit_call(self, fn: Any) -> None:
        self._jobs.put(fn)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if callable(job) and not isinstance(job, _Job):
                job()
                continue
            try:
                self._generate(job)
            except BaseException as exc:  # noqa: BLE001 - reported to the waiting coroutine
                log.exception("generation failed")
                job.loop.call_soon_threadsafe(job.out.put_nowait, exc)
            finally:
                with self._lock:
                    self._waiting -= 1
                job.loop.call_soon_threadsafe(job.out.put_nowait, _DONE)

    def _generate(self, job: _Job) -> None:
        s = self.settings.params
        before = self._llm.n_tokens
        chunks = self._llm.create_chat_completion(
            messages=job.messages, stream=True, max_tokens=job.max_tokens, temperature=s.temperature,
            top_p=s.top_p, repeat_penalty=s.repeat_penalty, seed=s.seed,
        )
        n = 0
        for chunk in chunks:
            piece = chunk["choices"][0].get("delta", {}).get("content")
            if piece:
                n += 1
                job.loop.call_soon_threadsafe(job.out.put_nowait, piece)
            if job.cancel.is_set():
                break
        if job.completion is not None:
            job.completion.completion_tokens = n
            job.completion.prompt_tokens = max(0, self._llm.n_tokens - n) if self._llm.n_tokens else before

    def _prefix_tokens(self, prefix: list[dict[str, str]]) -> list[int]:
        """The tokens every request starts with: the common part of two renderings of the chat template."""
        a = self._render(prefix + [{"role": "user", "content": "A"}])
        b = self._render(prefix + [{"role": "user", "content": "B"}])
        common = os.path.commonprefix([a, b])
        ta = self._llm.tokenize(common.encode("utf-8"), add_bos=True, special=True)
        tb = self._llm.tokenize(a.encode("utf-8"), add_bos=True, special=True)
        n = 0
        while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
            n += 1
        return list(tb[:n])

    def _render(self, messages: list[dict[str, str]]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = self._llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise BackendError("the GGUF has no chat template; use a chat model")
        eos = self._llm.detokenize([self._llm.token_eos()]).decode("utf-8", "ignore")
        bos = self._llm.detokenize([self._llm.token_bos()]).decode("utf-8", "ignore")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return formatter(messages=messages).prompt

    def _warm_on_owner(self, prefix: list[dict[str, str]], progress: ProgressFn | None) -> None:
        started = time.perf_counter()
        tokens = self._prefix_tokens(prefix)
        path = self._cache_path(tokens)
        if path and path.exists() and self._restore(path, tokens):
            source = "restored"
        else:
            self._llm.reset()
            step = self.settings.params.n_batch
            for i in range(0, len(tokens), step):
                self._llm.eval(tokens[i : i + step])
                if progress:
                    progress(min(i + step, len(tokens)), len(tokens))
            source = "computed"
            if path:
                self._save(path, tokens)
        log.info("prefix of %d tokens %s in %.1f s", len(tokens), source, time.perf_counter() - started)

    def _cache_path(self, tokens: list[int]) -> Path | None:
        s = self.settings
        if s.cache_dir is None:
            return None
        import llama_cpp

        h = hashlib.sha256()
        for part in (s.model_sha256, str(s.params.n_ctx), llama_cpp.__version__, str(len(tokens))):
            h.update(part.encode() + b"\0")
        h.update(struct.pack(f"<{len(tokens)}i", *tokens))
        return s.cache_dir / f"prefix-{h.hexdigest()[:20]}.kv"

    def _save(self, path: Path, tokens: list[int]) -> None:
        import llama_cpp

        ctx = self._llm._ctx.ctx  # noqa: SLF001 - the public save_state also copies logits (300+ MB)
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(_STATE_MAGIC + struct.pack("<QQ", len(tokens), n))
            f.write(struct.pack(f"<{len(tokens)}i", *tokens))
            f.write(memoryview(buf)[:n])
        os.replace(tmp, path)
        for old in sorted(path.parent.glob("prefix-*.kv"), key=lambda p: p.stat().st_mtime)[:-3]:
            old.unlink(missing_ok=True)  # keep the three newest prefixes (e.g. two models, one old content)
        log.info("saved prefix KV state: %s (%.1f MB)", path.name, n / 1e6)

    def _restore(self, path: Path, tokens: list[int]) -> bool:
        import llama_cpp

        try:
            data = path.read_bytes()
            if not data.startswith(_STATE_MAGIC):
                return False
            count, n = struct.unpack_from("<QQ", data, len(_STATE_MAGIC))
            off = len(_STATE_MAGIC) + 16
            saved = list(struct.unpack_from(f"<{count}i", data, off))
            off += 4 * count
            if saved != tokens or len(data) - off != n:
                return False
            self._llm.reset()
            ctx = self._llm._ctx.ctx  # noqa: SLF001
            buf = (ctypes.c_uint8 * n).from_buffer_copy(data, off)
            if llama_cpp.llama_state_seq_set_data(ctx, buf, n, 0) != n:
                return False
        except (OSError, struct.error) as exc:
            log.warning("prefix cache %s unreadable (%s); computing it", path, exc)
            return False
        self._llm.input_ids[:count] = tokens
        self._llm.n_tokens = count
        self._llm._requires_eval = True  # noqa: SLF001 - logits are not restored; the suffix decode refreshes them
        return True


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
