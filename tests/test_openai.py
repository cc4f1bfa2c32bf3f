"""The OpenAI-compatible backend: server-sent events parsed, errors named, slots shared fairly, /reset stops;
and, on a real llama_cpp.server started on loopback, the core answers and declines through it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.backends.base import Completion, Extraction, Picked, part
from bot.backends.models import resolve
from bot.backends.openai import OpenAIBackend
from bot.config import ModelConfig
from bot.errors import AnswerStopped, BackendBusy, BackendError
from bot.types import Incoming, Queued, Reply
from tests.helpers import ROOT, make_config, make_core

MSGS = [{"role": "user", "content": "hi"}]


def sse(*pieces: str, usage: dict | None = None) -> bytes:
    events = [{"choices": [{"delta": {"content": p}}]} for p in pieces]
    if usage:
        events.append({"choices": [], "usage": usage})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b": keep-alive\n\ndata: [DONE]\n\n"


def backend(handler, **params: object) -> OpenAIBackend:  # noqa: ANN001 - an httpx handler
    p = ModelConfig(backend="openai", base_url="http://127.0.0.1:9/v1", name="served-model")
    for k, v in params.items():
        setattr(p, k, v)
    return OpenAIBackend(p, transport=httpx.MockTransport(handler))


async def collect(b: OpenAIBackend, conversation: str = "c", **kw: object) -> list[str | Queued]:
    return [piece async for piece in b.stream(MSGS, conversation=conversation, **kw)]


async def test_streams_pieces_and_usage_and_sends_the_configured_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sse("你", "好", usage={"prompt_tokens": 7, "completion_tokens": 2}))

    b = backend(handler, api_key="sekret")
    used = Completion()
    assert await collect(b, completion=used, max_tokens=5) == ["你", "好"]
    assert (used.prompt_tokens, used.completion_tokens) == (7, 2)
    body = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/chat/completions" and seen[0].headers["authorization"] == "Bearer sekret"
    assert body["stream"] is True and body["max_tokens"] == 5 and body["model"] == "served-model"
    assert body["temperature"] == 0.0 and body["messages"] == MSGS


async def test_a_stream_stopped_at_max_tokens_is_marked_cut() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        stop = "length" if json.loads(request.content)["max_tokens"] == 2 else "stop"
        events = [{"choices": [{"delta": {"content": "你"}}]},
                  {"choices": [{"delta": {"content": "好"}, "finish_reason": stop}]}]
        return httpx.Response(200, content="".join(f"data: {json.dumps(e)}\n\n" for e in events).encode())

    cut, whole = Completion(), Completion()
    assert await collect(backend(handler), completion=cut, max_tokens=2) == ["你", "好"]
    assert await collect(backend(handler), completion=whole, max_tokens=5) == ["你", "好"]
    assert cut.cut and not whole.cut


async def test_server_errors_are_named_with_the_fix() -> None:
    b = backend(lambda r: httpx.Response(500, text="model exploded"))
    with pytest.raises(BackendError, match="HTTP 500: model exploded"):
        await collect(b)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(BackendError, match="model.base_url"):
        await backend(refuse).warm(MSGS)
    with pytest.raises(BackendError, match="malformed"):
        await collect(backend(lambda r: httpx.Response(200, content=b"data: {oops\n\n")))


async def test_slots_are_shared_earliest_turn_first_and_the_queue_is_bounded() -> None:
    release = asyncio.Event()
    order: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        order.append(json.loads(request.content)["messages"][0]["content"])
        await release.wait()
        return httpx.Response(200, content=sse("ok"))

    b = backend(handler, parallel=1, queue_limit=2)

    async def ask(text: str, conv: str, priority: float) -> list:
        return [p async for p in b.stream([{"role": "user", "content": text}], conversation=conv,
                                          priority=priority)]

    first = asyncio.create_task(ask("first", "a", 1.0))
    await asyncio.sleep(0.05)
    late = asyncio.create_task(ask("late", "b", 3.0))
    early = asyncio.create_task(ask("early", "c", 2.0))
    await asyncio.sleep(0.05)
    with pytest.raises(BackendBusy):
        await ask("too many", "d", 4.0)
    release.set()
    results = await asyncio.gather(first, late, early)
    assert order == ["first", "early", "late"]
    assert results[1][0] == Queued(1) and results[2][0] == Queued(1)


async def slow_answer(request: httpx.Request) -> httpx.Response:
    """A streamed answer of 50 pieces, 10 ms apart: long enough to be stopped while it runs."""
    async def body():  # noqa: ANN202 - an async byte stream
        for i in range(50):
            yield f"data: {json.dumps({'choices': [{'delta': {'content': str(i)}}]})}\n\n".encode()
            await asyncio.sleep(0.01)

    return httpx.Response(200, content=body())


async def test_reset_stops_a_running_answer() -> None:
    b = backend(slow_answer)
    got: list[str | Queued] = []
    with pytest.raises(AnswerStopped):
        async for piece in b.stream(MSGS, conversation="r"):
            got.append(piece)
            if len(got) == 3:
                assert b.cancel("r") == 1
    assert len(got) < 10
    assert await collect(backend(lambda r: httpx.Response(200, content=sse("x"))), "r") == ["x"]


async def test_a_turns_parts_run_side_by_side_and_reset_stops_them_all() -> None:
    b = backend(slow_answer, parallel=4)
    first: list[list[str | Queued]] = [[], []]

    async def read(i: int) -> None:
        async for piece in b.stream(MSGS, conversation=part("r", i)):
            first[i].append(piece)
            if i == 1 and len(first[1]) == 3:
                assert b.cancel("r") == 2  # both parts, running side by side

    results = await asyncio.gather(read(0), read(1), return_exceptions=True)
    assert all(isinstance(r, AnswerStopped) for r in results)
    assert not any(isinstance(p, Queued) for got in first for p in got)  # neither waited for the other


def logprob_answer(content: str, steps: list[tuple[str, float, dict[str, float]]]) -> dict:
    """A /chat/completions answer with log-probabilities, as llama-server and llama_cpp.server give them."""
    return {"choices": [{"message": {"role": "assistant", "content": content}, "logprobs": {"content": [
        {"token": t, "logprob": lp, "top_logprobs": [{"token": k, "logprob": v} for k, v in top.items()]}
        for t, lp, top in steps]}}], "usage": {"prompt_tokens": 90, "completion_tokens": len(steps)}}


async def test_an_extraction_is_one_request_under_a_grammar_with_top_logprobs() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=logprob_answer("2：答案是“刘庆峰”", [
            ("2", -0.2, {"2": -0.2, "1": -2.5, "0": -3.0}), ("：", 0.0, {}), ("答案", 0.0, {}), ("是", 0.0, {}),
            ("“", 0.0, {}), ("刘", -0.4, {"刘": -0.4, "无": -5.0}), ("庆峰", -0.1, {}), ("”", -0.3, {})]))

    b = backend(handler)
    result = Extraction()
    items = [x async for x in b.extract(MSGS, ["0", "1", "2", "3"], ["", "天空是蓝色的。", "刘庆峰是董事长。", "甲"],
                                        lead="：答案是“", none_word="无", conversation="c", result=result)]
    body = seen[0]
    assert body["logprobs"] is True and body["top_logprobs"] >= 10 and body["temperature"] == 0.0
    assert body["grammar"].startswith('root ::= "1：答案是“" sub0 ("”" [，,。.；;：:！!？?、\\n]?)? | "2：答案是“" '
                                      'sub1')
    assert items == [Picked((-3.0, -2.5, -0.2, -4.0), 2), "刘庆峰"]  # 3 is below the top ones: a floor
    assert result.chosen == 2 and result.text == "刘庆峰" and result.none_first == -5.0
    assert result.token_logprobs == [-0.4, -0.1, -0.3] and result.prompt_tokens == 90


async def test_the_copys_log_probabilities_end_as_the_embedded_backend_ends_them() -> None:
    """llama-server reports the closing quote and then the end token, each with its own probability; the
    embedded backend takes the likeliest way to end once (a token opening with the quote, or the end token).
    Read either way, one calibrated decision must see the same numbers. A label is read at its exact
    spelling; a byte of a character split over tokens (text "", bytes set) is not the end token."""
    answer = logprob_answer("1：答案是“刘庆峰”", [
        ("1", -0.3, {"1": -0.3, " 1": -0.2, "0": -1.9}), ("：答案是“", 0.0, {}),
        ("刘", -0.1, {"刘": -0.1, "科": -3.0, "江": -8.0}), ("庆峰", -0.01, {}),
        ("”", -1.5, {"”。": -0.9, "”": -1.5, "": -1.6}), ("", -1.4, {"。\n": -1.0, "": -1.4})])
    ended = logprob_answer("1：答案是“刘庆峰”。", [  # the grammar's close with a mark: one token, as embedded
        ("1", -0.3, {"1": -0.3, "0": -1.9}), ("：答案是“", 0.0, {}), ("刘", -0.1, {"刘": -0.1, "无": -9.5}),
        ("庆峰", -0.01, {}), ("”。", -0.9, {"”。": -0.9, "”": -1.5}), ("", -0.2, {"": -0.2})])
    b = backend(lambda r: httpx.Response(200, json=ended))
    result = Extraction()
    items = [x async for x in b.extract(MSGS, ["0", "1"], ["", "刘庆峰是董事长。"], lead="：答案是“",
                                        none_word="无", conversation="c", result=result)]
    assert items[-1] == "刘庆峰" and result.token_logprobs == [-0.1, -0.01, -0.9] and result.none_first == -9.5
    split = logprob_answer("1：答案是“䶮君”", [  # 䶮 in two byte tokens: llama-server shows their text as ""
        ("1", -0.3, {"1": -0.3}), ("：答案是“", 0.0, {}), ("", -0.5, {}), ("", -0.1, {}), ("君", -0.2, {}),
        ("”", -0.4, {"”": -0.4, "": -2.0})])
    steps = split["choices"][0]["logprobs"]["content"]
    steps[2]["bytes"], steps[3]["bytes"] = list("䶮".encode()[:2]), list("䶮".encode()[2:])
    b = backend(lambda r: httpx.Response(200, json=split))
    result = Extraction()
    items = [x async for x in b.extract(MSGS, ["0", "1"], ["", "䶮君是董事长。"], lead="：答案是“",
                                        none_word="无", conversation="c", result=result)]
    assert items[-1] == "䶮君" and result.token_logprobs == [-0.5, -0.1, -0.2, -0.4]
    b = backend(lambda r: httpx.Response(200, json=answer))
    result = Extraction()
    items = [x async for x in b.extract(MSGS, ["0", "1"], ["", "刘庆峰是董事长。"], lead="：答案是“",
                                        none_word="无", conversation="c", result=result)]
    assert items == [Picked((-1.9, -0.3), 1), "刘庆峰"]  # the exact spelling, as the embedded backend reads it
    assert result.token_logprobs == [-0.1, -0.01, -0.9]  # the end once, at its likeliest; the end token dropped
    assert result.none_first == -9.0  # "无" below the copy's first top log-probabilities: under their last


async def test_a_server_without_logprobs_or_grammar_is_named_with_the_fix() -> None:
    b = backend(lambda r: httpx.Response(200, json={"choices": [{"message": {"content": "刘庆峰"}}]}))
    with pytest.raises(BackendError, match="logprobs"):
        _ = [x async for x in b.extract(MSGS, ["0", "1"], ["", "刘庆峰"], lead="：", none_word="无",
                                        conversation="c", result=Extraction())]
    vllm = "max_logprobs (20) exceeded: top_logprobs 1000"  # vLLM started without --max-logprobs
    b = backend(lambda r: httpx.Response(400, json={"error": {"message": vllm}}))
    with pytest.raises(BackendError, match="--max-logprobs 1000"):
        _ = [x async for x in b.extract(MSGS, ["0", "1"], ["", "刘庆峰"], lead="：", none_word="无",
                                        conversation="c", result=Extraction())]
    b = backend(lambda r: httpx.Response(200, json=logprob_answer("刘庆峰", [("刘", -0.1, {"1": -0.1})])))
    with pytest.raises(BackendError, match="grammar"):
        _ = [x async for x in b.extract(MSGS, ["0", "1"], ["", "刘庆峰"], lead="：", none_word="无",
                                        conversation="c", result=Extraction())]


def test_token_estimate_does_not_undercount_chinese() -> None:
    b = backend(lambda r: httpx.Response(200))
    assert b.count_tokens("科大讯飞董事长刘庆峰") == 10
    assert 2 <= b.count_tokens("iFlytek chairman") <= 6


# ---- against a real server ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama_cpp.server (llama-cpp-python's bundled OpenAI-compatible server) on loopback, small model."""
    model = resolve("qwen2.5-coder-0.5b", ROOT / "models")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model.path), "--model_alias", model.name,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", "2", "--verbose", "false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "*"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, Path(log).read_text(errors="replace")[-2000:]
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.model
async def test_the_core_answers_and_declines_through_a_real_openai_compatible_server(server: str,
                                                                                  tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.model.backend, cfg.model.base_url, cfg.model.name = "openai", server, "qwen2.5-coder-0.5b"
    b = OpenAIBackend(cfg.model)
    core, store = await make_core(tmp_path, b, cfg=cfg)
    try:
        fact = await core.ask(Incoming("cli", "u", "u", "科大讯飞董事长是谁？", conversation="o1"))
        assert isinstance(fact, Reply) and fact.path == "extract", fact
        # The server read the labels' log-probabilities and copied under the grammar: the answer stands in
        # the quoted sentence word for word, whichever sentence this small model picked.
        assert fact.signals["mass"] < 0.01 and fact.sentence in fact.citations[0].text
        assert fact.copied and fact.copied in fact.sentence and fact.sentence in fact.text
        off = await core.ask(Incoming("cli", "u", "u", "文心一言是哪家公司开发的？", conversation="o2"))
        assert isinstance(off, Reply) and off.refused
    finally:
        await b.close()
        await store.close()


async def test_a_conversations_second_request_does_not_hold_up_the_free_slots() -> None:
    gates: dict[str, asyncio.Event] = {}
    started: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        tag = json.loads(request.content)["messages"][0]["content"]
        started.append(tag)
        await gates.setdefault(tag, asyncio.Event()).wait()
        return httpx.Response(200, content=sse("ok"))

    b = backend(handler, parallel=4)

    async def ask(tag: str, conv: str) -> None:
        async for _ in b.stream([{"role": "user", "content": tag}], conversation=conv):
            pass

    tasks = [asyncio.create_task(ask("A1", "a"))]
    await asyncio.sleep(0.05)
    tasks += [asyncio.create_task(ask(t, c)) for t, c in (("A2", "a"), ("B", "b"), ("C", "c"))]
    await asyncio.sleep(0.05)
    assert started == ["A1", "B", "C"]  # A2 waits for A1; B and C take free slots at once
    for tag in ("A1", "A2", "B", "C"):
        gates.setdefault(tag, asyncio.Event()).set()
    await asyncio.gather(*tasks)
    assert started[-1] == "A2" and not b._running and not b._waiting  # noqa: SLF001 - nothing left held
