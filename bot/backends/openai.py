"""An OpenAI-compatible chat server as the backend (llama.cpp's llama-server, llama_cpp.server, vLLM).

The server batches and caches prompts itself; this side streams `/chat/completions` over httpx, keeps at
most `model.parallel` requests in flight (earlier turns first, one per conversation or part of a turn, a
bounded queue), and stops a conversation's requests on /reset. The grounding checks run on its output unchanged.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx

from bot.backends.base import Completion, Extraction, Picked, ProgressFn, ahead, in_turn, of_conversation
from bot.backends.constraint import closing, grammar
from bot.config import ModelConfig
from bot.errors import AnswerStopped, BackendBusy, BackendError
from bot.types import Queued

log = logging.getLogger(__name__)
_order = itertools.count()
# No tokenizer here: count a CJK character or a run of other non-space characters as one token. That
# overestimates Qwen's count a little, so the prefix-size decision errs towards retrieval, never overflow.
TOP_LOGPROBS = 1000  # the labels, and "无" after them, among the most probable (vLLM: --max-logprobs 1000)
_TOKEN_GUESS = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\s\u3400-\u9fff\uf900-\ufaff]{1,4}")


class OpenAIBackend:
    """The Backend protocol over an OpenAI-compatible HTTP server."""

    def __init__(self, params: ModelConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.params = params
        self.model_name = params.name
        self.timings: dict[str, Any] = {}  # the server loads the model and keeps its prefixes
        headers = {"Authorization": f"Bearer {params.api_key}"} if params.api_key else {}
        self._client = httpx.AsyncClient(base_url=params.base_url.rstrip("/"), headers=headers, transport=transport,
                                         timeout=httpx.Timeout(10.0, read=params.answer_time_limit_s or None))
        self._running: dict[str, asyncio.Event] = {}  # conversation -> its slot (and stop signal)
        self._waiting: list[tuple[tuple[float, int], str, asyncio.Future[None]]] = []

    async def warm(self, prefix: list[dict[str, str]], progress: ProgressFn | None = None, *,
                   pin: bool = False) -> None:
        """Check the server answers, and have it read the prefix once (its prompt cache keeps it)."""
        await self._post(prefix + [{"role": "user", "content": "."}], 1)
        if progress:
            progress(1, 1)

    async def retain(self, prefixes: list[list[dict[str, str]]]) -> None:
        """Nothing to do: the server's prompt cache keeps what it sees most."""

    async def stream(self, messages: list[dict[str, str]], *, conversation: str, max_tokens: int | None = None,
                     completion: Completion | None = None,
                     priority: float | None = None) -> AsyncIterator[str | Queued]:
        """Wait for a free slot (earlier turns first), then yield the server's text pieces."""
        limit = max_tokens or self.params.max_tokens
        async for item in self._in_slot(conversation, priority,
                                        lambda stop: self._pieces(messages, limit, completion, stop)):
            yield item

    async def extract(self, messages: list[dict[str, str]], labels: Sequence[str], sources: Sequence[str], *,
                      lead: str, none_word: str, conversation: str, result: Extraction, max_tokens: int = 48,
                      priority: float | None = None) -> AsyncIterator[str | Queued | Picked]:
        """One request under a grammar (a label, `lead`, a substring of its source) with the top log-
        probabilities of each token: the first token's give the labels' (base.Backend.extract)."""
        async def run(stop: asyncio.Event) -> AsyncIterator[str | Picked]:
            body = self._body(messages, max_tokens + 4) | {
                "grammar": grammar(labels[1:], sources[1:], lead), "logprobs": True, "top_logprobs": TOP_LOGPROBS}
            try:
                data = await self._post_body(body)
            except BackendError as exc:  # vLLM allows 20 unless told otherwise
                if "logprobs" not in str(exc):
                    raise
                raise BackendError(f"{exc}; fix: let the server return {TOP_LOGPROBS} top log-probabilities "
                                   f"(vLLM: --max-logprobs {TOP_LOGPROBS})") from exc
            if stop.is_set():
                raise AnswerStopped("stopped (/reset)")
            for item in read_extraction(data, labels, lead, none_word, result):
                yield item

        async for item in self._in_slot(conversation, priority, run):
            yield item

    async def _in_slot(self, conversation: str, priority: float | None,
                       work: Callable[[asyncio.Event], AsyncIterator[Any]]) -> AsyncIterator[Any]:
        """Run `work(stop)` once the conversation holds a slot (earlier turns first); Queued while waiting."""
        key = (time.perf_counter() if priority is None else priority, next(_order))
        try:
            if self._full(conversation) or self._waiting:
                if len(self._waiting) >= self.params.queue_limit:
                    raise BackendBusy(f"{len(self._waiting)} requests queued (model.queue_limit)")
                yield Queued(ahead((k for k, _, _ in self._waiting), key, len(self._running)))
                await self._wait_turn(key, conversation)  # woken with its slot held for it
            else:
                self._running[conversation] = _Slot(key)
            async for item in work(self._running[conversation]):
                yield item
        finally:
            if self._running.get(conversation) is not None and _holder(self._running, conversation, key):
                self._running.pop(conversation, None)
            self._wake()

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's running request and drop its queued ones; how many there were."""
        hit = 0
        for key, stop in list(self._running.items()):
            if of_conversation(key, conversation):
                stop.set()
                hit += 1
        for _, conv, fut in self._waiting:
            if of_conversation(conv, conversation) and not fut.done():
                fut.set_exception(AnswerStopped("stopped before it started (/reset)"))
                hit += 1
        return hit

    def count_tokens(self, text: str) -> int:
        """An upper estimate of the server model's token count (see _TOKEN_GUESS)."""
        return len(_TOKEN_GUESS.findall(text))

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    # ---- internals --------------------------------------------------------------------------------

    def _full(self, conversation: str) -> bool:
        return len(self._running) >= self.params.parallel or conversation in self._running

    async def _wait_turn(self, key: tuple[float, int], conversation: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (key, conversation, fut)
        heapq.heappush(self._waiting, entry)
        self._wake()  # a slot may be free now (the queue held only busy conversations)
        try:
            await fut
        finally:
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)

    def _wake(self) -> None:
        """Start the earliest waiting requests whose conversations have nothing in flight, while slots last."""
        for entry in in_turn(list(self._waiting), lambda e: e[0], lambda e: e[1], self._running.keys()):
            key, conv, fut = entry
            if len(self._running) >= self.params.parallel:
                break
            self._waiting.remove(entry)
            if fut.done():
                continue  # stopped by /reset while waiting
            self._running[conv] = _Slot(key)  # held for it until its stream ends
            fut.set_result(None)
        heapq.heapify(self._waiting)

    async def _pieces(self, messages: list[dict[str, str]], max_tokens: int, completion: Completion | None,
                      stop: asyncio.Event) -> AsyncIterator[str]:
        body = self._body(messages, max_tokens) | {"stream": True, "stream_options": {"include_usage": True}}
        n = 0
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as r:
                await _raise_for_status(r)
                async for line in r.aiter_lines():
                    if stop.is_set():
                        raise AnswerStopped("stopped (/reset)")
                    chunk = _event(line)
                    if chunk is None:
                        continue
                    if completion is not None and chunk.get("usage"):
                        completion.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                        completion.completion_tokens = chunk["usage"].get("completion_tokens", n)
                    for choice in chunk.get("choices") or []:
                        if completion is not None and choice.get("finish_reason") == "length":
                            completion.cut = True
                        if piece := (choice.get("delta") or {}).get("content"):
                            n += 1
                            yield piece
        except httpx.TimeoutException as exc:
            raise AnswerStopped(f"no answer within model.answer_time_limit_s from {self.params.base_url}") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"the model server at {self.params.base_url} failed: {exc!r}; fix: start it or "
                               "correct model.base_url") from exc

    async def _post(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        return await self._post_body(self._body(messages, max_tokens))

    async def _post_body(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await self._client.post("/chat/completions", json=body)
            await _raise_for_status(r)
            return dict(r.json())
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the model server at {self.params.base_url}: {exc!r}; fix: start it "
                               "or correct model.base_url ($BOT_OPENAI_BASE_URL)") from exc

    def _body(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        p = self.params
        return {"model": p.name, "messages": messages, "max_tokens": max_tokens, "temperature": p.temperature,
                "top_p": p.top_p, "seed": p.seed}


class _Slot(asyncio.Event):
    """A conversation's place in flight: its stop signal, and whose request holds it."""

    def __init__(self, key: tuple[float, int] | None = None) -> None:
        super().__init__()
        self.key = key


def _holder(running: dict[str, asyncio.Event], conversation: str, key: tuple[float, int]) -> bool:
    """Whether the request with `key` holds the conversation's slot (not a later one woken meanwhile)."""
    slot = running.get(conversation)
    return isinstance(slot, _Slot) and slot.key in (None, key)


def _event(line: str) -> dict[str, Any] | None:
    """One server-sent event's JSON, or None for keep-alives, comments and the final [DONE]."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BackendError(f"the model server sent a malformed event: {data[:120]!r}") from exc
    return value if isinstance(value, dict) else None


async def _raise_for_status(r: httpx.Response) -> None:
    if r.status_code >= 400:
        text = (await r.aread()).decode("utf-8", "replace")[:300]
        raise BackendError(f"the model server answered HTTP {r.status_code}: {text}")


def read_extraction(data: dict[str, Any], labels: Sequence[str], lead: str, none_word: str,
                    result: Extraction) -> list[str | Picked]:
    """`Picked` and the copied text out of a /chat/completions answer with log-probabilities; `result` filled.

    A label outside the first token's top log-probabilities gets a floor below the last of them. The copy's
    log-probabilities are read as the embedded backend computes them (constraint.Copying), so one calibrated
    decision serves both: the copied tokens', then the likeliest way to end (a token opening with the lead's
    closing quote, or the end token) once, not the server's closing and end tokens one by one.
    """
    choice = (data.get("choices") or [{}])[0]
    text = str((choice.get("message") or {}).get("content") or "")
    steps = ((choice.get("logprobs") or {}).get("content")) or []
    if not steps or not text:
        raise BackendError("the model server returned no log-probabilities; fix: use llama.cpp's llama-server "
                           "(or another server that returns logprobs and accepts a GBNF grammar)")
    first = _top(steps[0])
    floor = min(first.values(), default=-20.0) - 1.0
    result.logprobs = [first.get(label, floor) for label in labels]
    chosen = next((i for i, label in enumerate(labels) if i and text.startswith(label + lead)), 0)
    if not chosen:
        raise BackendError(f"the model server ignored the grammar (answer {text[:40]!r}); fix: use a server that "
                           "accepts a GBNF `grammar`, such as llama.cpp's llama-server")
    result.chosen = chosen
    used, copied = "", []
    for step in steps:  # the label's and the lead's tokens first, then the copy's
        if len(used) < len(labels[chosen] + lead):
            used += str(step.get("token", ""))
            continue
        copied.append(step)
    if copied:  # "无" outside the copy's first top log-probabilities: below the last of them
        after = _top(copied[0])
        result.none_first = after.get(none_word, min(after.values(), default=floor) - 1.0)
    result.token_logprobs, result.text = _copied(copied, closing(lead))
    usage = data.get("usage") or {}
    result.prompt_tokens, result.completion_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return [Picked(tuple(result.logprobs), chosen), result.text]


def _top(step: dict[str, Any]) -> dict[str, float]:
    """A step's top log-probabilities by token text: the exact spelling, else the likeliest one that reads
    the same with its spaces stripped."""
    items = [(str(t.get("token", "")), float(t.get("logprob", -99.0))) for t in step.get("top_logprobs") or []]
    out: dict[str, float] = {}
    for token, value in items:
        out.setdefault(token, value)
    for token, value in sorted(items, key=lambda kv: -kv[1]):
        out.setdefault(token.strip(), value)
    return out


def _bytes(t: dict[str, Any]) -> bytes:
    """A token's bytes: the server's `bytes` (its `token` text drops a partial character), else the text's."""
    raw = t.get("bytes")
    return bytes(raw) if isinstance(raw, list) else str(t.get("token", "")).encode("utf-8")


def _ends(t: dict[str, Any], close: bytes) -> bool:
    """Whether a token ends the copy: the end token (no bytes), or one opening with the closing quote."""
    b = _bytes(t)
    return not b or (bool(close) and b.startswith(close))


def _copied(steps: list[dict[str, Any]], close: str) -> tuple[list[float], str]:
    """The copied tokens' log-probabilities and text up to where the copy ended; there, as `Copying` counts
    it, the best of the ways to end (a token opening with the closing quote, or the end token), once."""
    end, logprobs, text = close.encode("utf-8"), [], b""
    for step in steps:
        if _ends(step, end):
            ways = [float(t.get("logprob", -99.0)) for t in step.get("top_logprobs") or [] if _ends(t, end)]
            logprobs.append(max([float(step.get("logprob", -99.0)), *ways]))
            break
        logprobs.append(float(step.get("logprob", 0.0)))
        text += _bytes(step)
    return logprobs, text.decode("utf-8", "replace")
