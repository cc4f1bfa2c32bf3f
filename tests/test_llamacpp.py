"""The embedded backend on the small real model: batched answers match single-stream ones, the prefix is
shared (no prompt token of it evaluated again), /reset stops a running answer, and a restored prefix answers
as the computed one did. They need `make setup` (the models in models/)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import pytest_asyncio

from bot.backends.base import Completion, Extraction, Picked
from bot.backends.llamacpp import LlamaCppBackend, LlamaSettings
from bot.backends.models import resolve
from bot.config import ModelConfig
from bot.errors import AnswerStopped
from tests.helpers import ROOT

pytestmark = pytest.mark.model
in_module_loop = pytest.mark.asyncio(loop_scope="module")
ARTICLE = (ROOT / "content" / "article.txt").read_text(encoding="utf-8")[:2500]
SYSTEM = [{"role": "system", "content": "根据下面的文章用一句话回答问题。\n\n" + ARTICLE}]
QUESTIONS = ["科大讯飞董事长是谁？", "ChatGPT用户多久破亿？", "刘庆峰建议以什么为创新主体？",
             "ChatGPT是哪家公司旗下的工具？"]


def settings(cache: Path | None, **params: object) -> LlamaSettings:
    model = resolve("qwen2.5-coder-0.5b", ROOT / "models")
    p = ModelConfig(max_tokens=40)
    for k, v in params.items():
        setattr(p, k, v)
    return LlamaSettings(model.path, model.name, model.sha256, p, cache)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - async generator fixture
    b = await asyncio.to_thread(LlamaCppBackend, settings(tmp_path_factory.mktemp("kv")))
    await b.warm(SYSTEM)
    yield b
    await b.close()


async def answer(b: LlamaCppBackend, question: str, conversation: str, used: Completion | None = None) -> str:
    out = ""
    async for piece in b.stream(SYSTEM + [{"role": "user", "content": question}], conversation=conversation,
                                completion=used):
        if isinstance(piece, str):
            out += piece
    return out


@in_module_loop
async def test_batched_answers_match_single_stream_ones(backend: LlamaCppBackend) -> None:
    alone = [await answer(backend, q, f"s{i}") for i, q in enumerate(QUESTIONS)]
    before = backend.counters.most_running
    together = await asyncio.gather(*(answer(backend, q, f"b{i}") for i, q in enumerate(QUESTIONS)))
    assert backend.counters.most_running >= 2 or before >= 2  # they really decoded in one batch
    assert all(alone), alone
    # Batched kernels may round differently; at temperature 0 nearly every answer is the same text.
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    assert same >= len(QUESTIONS) - 1, list(zip(alone, together, strict=True))


@in_module_loop
async def test_a_stream_stopped_at_max_tokens_is_marked_cut(backend: LlamaCppBackend) -> None:
    whole, cut = Completion(), Completion()
    await answer(backend, QUESTIONS[0], "whole", whole)
    assert 0 < whole.completion_tokens < 40 and not whole.cut  # ended by the model itself
    messages = SYSTEM + [{"role": "user", "content": "详细介绍文章的全部内容。"}]
    pieces = [p async for p in backend.stream(messages, conversation="cut", max_tokens=5, completion=cut)]
    assert cut.completion_tokens == 5 and cut.cut and pieces


@in_module_loop
async def test_the_prefix_is_shared_not_recomputed(backend: LlamaCppBackend) -> None:
    prefix_before = backend.counters.prefix_tokens_evaluated
    evaluated = backend.counters.prompt_tokens_evaluated
    used = [Completion() for _ in QUESTIONS]
    await asyncio.gather(*(answer(backend, q, f"p{i}", u) for i, (q, u) in enumerate(zip(QUESTIONS, used,
                                                                                          strict=True))))
    prefix = backend.counters.timings["prefix_tokens"]
    assert prefix > 500
    suffixes = sum(u.prompt_tokens - prefix for u in used)
    assert backend.counters.prompt_tokens_evaluated - evaluated == suffixes
    assert backend.counters.prefix_tokens_evaluated == prefix_before


@in_module_loop
async def test_cancel_stops_a_running_answer_and_frees_its_slot(backend: LlamaCppBackend) -> None:
    long = SYSTEM + [{"role": "user", "content": "把文章逐段详细复述一遍。"}]
    pieces: list[str] = []

    async def run() -> None:
        async for piece in backend.stream(long, conversation="r", max_tokens=300):
            if isinstance(piece, str):
                pieces.append(piece)
                if len(pieces) == 3:
                    assert backend.cancel("r") == 1

    with pytest.raises(AnswerStopped):
        await run()
    assert len(pieces) < 20
    assert not backend.sched.running
    assert await answer(backend, QUESTIONS[0], "r")


@in_module_loop
async def test_a_restored_prefix_answers_as_the_computed_one(backend: LlamaCppBackend) -> None:
    cache = backend.settings.cache_dir
    assert cache is not None and list(cache.glob("prefix-*.kv"))
    fresh = await asyncio.to_thread(LlamaCppBackend, settings(cache))
    try:
        await fresh.warm(SYSTEM)
        assert fresh.counters.timings["prefix_source"] == "restored"
        assert fresh.counters.prefix_tokens_evaluated == 0
        assert await answer(fresh, QUESTIONS[0], "x") == await answer(backend, QUESTIONS[0], "x")
    finally:
        await fresh.close()


@in_module_loop
async def test_group_prefixes_swap_through_disk_and_a_change_of_content_or_model_recomputes(
        tmp_path: Path) -> None:
    text = (ROOT / "content" / "article.txt").read_text(encoding="utf-8")
    groups = [[{"role": "system", "content": "根据下面的段落回答问题。\n\n" + part}]
              for part in (text[:700], text[700:1400])]
    b = await asyncio.to_thread(LlamaCppBackend, settings(tmp_path, prefix_slots=1))
    try:
        for g in groups:
            await b.warm(g)
        assert (b.prefixes.computed, b.prefixes.restored) == (2, 0)
        # One prefix sequence: the first group went to disk; a question for it brings it back.
        assert await answer_with(b, groups[0], QUESTIONS[0], "g")
        assert b.prefixes.restored == 1 and b.prefixes.computed == 2
        changed = [{"role": "system", "content": groups[1][0]["content"].replace("刘庆峰", "刘某")}]
        await b.warm(changed)
        assert b.prefixes.computed == 3  # an edited group is read again; its old file does not match
    finally:
        await b.close()
    other = await asyncio.to_thread(LlamaCppBackend, settings(tmp_path, prefix_slots=1))
    other.settings.model_sha256 = "another-model"
    try:
        await other.warm(groups[0])
        assert other.counters.timings["prefix_source"] == "computed"  # another model's cache is not used
    finally:
        await other.close()


async def answer_with(b: LlamaCppBackend, prefix: list[dict[str, str]], question: str, conversation: str) -> str:
    out = ""
    async for piece in b.stream(prefix + [{"role": "user", "content": question}], conversation=conversation):
        if isinstance(piece, str):
            out += piece
    return out


PICK = [{"role": "system", "content": "你是阅读理解助手。判断哪一句话回答了问题。"}]
SOURCES = ["", "天空是蓝色的，草是绿色的。",
           "全国人大代表、科大讯飞董事长刘庆峰认为，应当加快推进我国认知智能大模型建设。"]


def pick_prompt(question: str) -> list[dict[str, str]]:
    lines = "\n".join(f"{i}. {s}" for i, s in enumerate(SOURCES) if i)
    return PICK + [{"role": "user", "content": f"句子：\n{lines}\n\n问题：{question}\n哪一句回答了问题？先输出编号，"
                                                "再输出冒号和答案；都没有则输出0。"}]


async def extract(b: LlamaCppBackend, question: str, conversation: str) -> tuple[list[object], Extraction]:
    result = Extraction()
    items = [x async for x in b.extract(pick_prompt(question), ["0", "1", "2"], SOURCES, lead="：答案是“",
                                        none_word="无", conversation=conversation, result=result)]
    return items, result


@in_module_loop
async def test_an_extraction_reads_the_labels_then_copies_only_the_chosen_sentence(backend: LlamaCppBackend) -> None:
    await backend.warm(PICK, pin=True)
    items, result = await extract(backend, "科大讯飞董事长是谁？", "x1")
    assert isinstance(items[0], Picked) and items[0].chosen == result.chosen
    # The labels' probabilities come from the logits: one forward pass, no sampling, nearly all the mass.
    assert len(result.logprobs) == 3 and all(v < 0 for v in result.logprobs)
    assert sum(math.exp(v) for v in result.logprobs) > 0.5
    copied = "".join(x for x in items[1:] if isinstance(x, str))
    assert copied == result.text and result.text and result.text in SOURCES[result.chosen]
    assert "，" not in result.text  # one clause at most
    assert result.token_logprobs and all(v <= 0 for v in result.token_logprobs) and result.none_first < 0
    assert result.prompt_tokens > 50 and result.completion_tokens >= 1


@in_module_loop
async def test_extractions_batched_with_answers_read_the_same_labels(backend: LlamaCppBackend) -> None:
    _, alone = await extract(backend, "刘庆峰是谁？", "x2")
    together = await asyncio.gather(extract(backend, "刘庆峰是谁？", "x3"), answer(backend, QUESTIONS[1], "x4"),
                                    extract(backend, "天空是什么颜色？", "x5"))
    _, batched = together[0]
    assert batched.chosen == alone.chosen and batched.text == alone.text
    assert all(abs(a - b) < 0.05 for a, b in zip(alone.logprobs, batched.logprobs, strict=True))
    assert together[2][1].chosen == 1 and "蓝" in together[2][1].text
    # The pinned instructions stay resident while content prefixes come and go.
    assert any(p.pinned and p.seq is not None for p in backend.prefixes.known)


@in_module_loop
async def test_a_consumer_that_stops_after_the_pick_frees_the_slot(backend: LlamaCppBackend) -> None:
    result = Extraction()
    stream = backend.extract(pick_prompt("科大讯飞董事长是谁？"), ["0", "1", "2"], SOURCES, lead="：答案是“",
                             none_word="无", conversation="x6", result=result)
    async for item in stream:
        assert isinstance(item, Picked)
        break
    await stream.aclose()
    for _ in range(100):
        if not backend.sched.running:
            break
        await asyncio.sleep(0.05)
    assert not backend.sched.running and len(result.token_logprobs) <= 2  # stopped within a step or two
