"""The llama.cpp calls the embedded backend makes: load a model and a multi-sequence context, fill a batch,
build a sampler, turn a token into bytes, apply the GGUF's chat template. Owner-thread code only."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import ModelConfig
from bot.errors import BackendError, ModelError

if TYPE_CHECKING:
    from bot.backends.scheduler import Request


class Batch:
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


def load(path: Path, p: ModelConfig) -> tuple[Any, Any]:
    """The model and a context for p.parallel answers plus the prefix, sharing one unified KV cache."""
    import llama_cpp
    from llama_cpp import _internals

    mparams = llama_cpp.llama_model_default_params()
    with quiet_stderr(), c_logger():
        try:
            model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except (ValueError, OSError) as exc:  # llama.cpp says only "failed to load"; its log went to fd 2
            raise ModelError(f"llama.cpp could not load the model file {path} ({exc}): it is not a GGUF, is cut "
                             "short, or has an architecture this llama.cpp does not know; fix: run `make setup` "
                             "to assemble the catalogue model again, or point model.name (BOT_MODEL) at a working "
                             ".gguf (set BOT_LLAMA_VERBOSE=1 to see llama.cpp's reason).") from None
        c = llama_cpp.llama_context_default_params()
        c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max = p.n_ctx, p.n_batch, p.n_batch, p.parallel + p.prefix_slots + 1
        c.n_threads = c.n_threads_batch = p.threads
        c.kv_unified = True  # the prefix's cells are shared by every sequence, not copied per stream
        c.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash_attn
                             else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        c.no_perf = True
        try:
            ctx = _internals.LlamaContext(model=model, params=c, verbose=False)
        except (ValueError, OSError) as exc:
            model.close()
            raise ModelError(f"llama.cpp could not make a context of {p.n_ctx} cells for {p.parallel} answers "
                             f"({exc}); fix: lower model.n_ctx or model.parallel.") from None
    return model, ctx


def formatter(model: Any) -> Any:
    """The GGUF's own chat template as a formatter (messages -> prompt text)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata().get("tokenizer.chat_template")
    if not template:
        raise BackendError("the GGUF has no chat template; use a chat model")
    eos = piece(model.vocab, model.token_eos(), special=True).decode("utf-8", "ignore")
    bos = piece(model.vocab, model.token_bos(), special=True).decode("utf-8", "ignore")
    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


def sampler(p: ModelConfig, seed_offset: int) -> Any:
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


def piece(vocab: Any, token: int, *, special: bool = False) -> bytes:
    """The bytes of one token (a UTF-8 character may span two tokens)."""
    import llama_cpp

    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


@contextlib.contextmanager
def c_logger() -> Any:
    """llama.cpp's own logger (to fd 2) instead of llama-cpp-python's Python callback, for a model load.

    The callback takes the GIL for each of the load's hundreds of log lines; with the content being
    indexed in another thread, that made the load 4-8x slower (1.4 s alone, 5.8-10.6 s beside a busy thread).
    """
    import llama_cpp
    from llama_cpp import _logger

    llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))  # NULL: the C default
    try:
        yield
    finally:
        # Back to the callback, set to print errors only (its default prints every restore's info lines).
        _logger.set_verbose(bool(os.environ.get("BOT_LLAMA_VERBOSE")))
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def quiet_stderr() -> Any:
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
