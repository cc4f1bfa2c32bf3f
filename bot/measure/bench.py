"""`bot bench`: where an answer's time goes on this machine, as JSON and a PNG plot.

Measured through the embedded backend with the product's own prompts (the content prefix and a question):
latency and aggregate tokens/s at several concurrent conversations against the same answers one after
another; decode throughput at fixed length against llama.cpp's own `llama-batched-bench` at the same
depth; first token cold, cached and restored; the engine against bare llama-cpp-python on one prompt.
Ratios from one run: timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.answering.prompting import PromptBuilder
from bot.answering.prompts import Prompts
from bot.backends.base import Completion
from bot.backends.llamacpp import LlamaCppBackend, LlamaSettings

Messages = list[dict[str, str]]


@dataclass
class Timed:
    """One answer: seconds to its first piece and to its end, and its tokens."""

    first_s: float
    total_s: float
    tokens: int


async def timed(backend: LlamaCppBackend, messages: Messages, conversation: str, *, max_tokens: int | None = None,
                ignore_eos: bool = False, absolute: bool = False) -> Timed:
    """Stream one answer and time it (from its start, or with `absolute` as perf_counter readings)."""
    origin = time.perf_counter()
    started, first, used = (0.0 if absolute else origin), None, Completion()
    async for piece in backend.stream(messages, conversation=conversation, max_tokens=max_tokens,
                                      ignore_eos=ignore_eos, completion=used):
        if isinstance(piece, str):
            first = first or time.perf_counter()
    end = time.perf_counter()
    return Timed((first or end) - started, end - started, used.completion_tokens)


async def concurrency(backend: LlamaCppBackend, asks: list[Messages], levels: list[int]) -> list[dict[str, Any]]:
    """Per level n: n different questions at once, and the same n one after another."""
    rows = []
    for n in levels:
        batch = [asks[i % len(asks)] for i in range(n)]
        started = time.perf_counter()
        together = await asyncio.gather(*(timed(backend, m, f"bench-c{n}-{i}") for i, m in enumerate(batch)))
        wall = time.perf_counter() - started
        alone = [await timed(backend, m, f"bench-s{n}-{i}") for i, m in enumerate(batch)]
        serial = sum(t.total_s for t in alone)
        tokens = sum(t.tokens for t in together)
        rows.append({
            "conversations": n, "last_answer_s": round(wall, 2), "serial_s": round(serial, 2),
            "last_over_serial": round(wall / serial, 2),
            "avg_answer_s": round(sum(t.total_s for t in together) / n, 2),
            "max_first_token_s": round(max(t.first_s for t in together), 2),
            "aggregate_tokens_per_s": round(tokens / wall, 2),
            "serial_tokens_per_s": round(sum(t.tokens for t in alone) / serial, 2),
        })
    return rows


async def throughput(backend: LlamaCppBackend, ask: Messages, levels: list[int], ntg: int) -> list[dict[str, Any]]:
    """Decode tokens/s at fixed answer length: n streams of `ntg` tokens, timed from the first first token."""
    rows = []
    c = backend.counters
    for n in levels:
        tokens0, seconds0 = c.decode_step_tokens, c.decode_step_s
        runs = await asyncio.gather(*(timed(backend, ask, f"bench-t{n}-{i}", max_tokens=ntg, ignore_eos=True,
                                            absolute=True) for i in range(n)))
        # From the first answer's first token to the last answer's end: with more conversations than
        # model.parallel, later ones join as earlier ones finish, and that wait counts too.
        decode_s = max(t.total_s for t in runs) - min(t.first_s for t in runs)
        steps_s = c.decode_step_s - seconds0
        rows.append({"conversations": n, "decode_tokens_per_s": round(sum(t.tokens - 1 for t in runs) / decode_s, 2),
                     # Only the steps where every stream decoded (no prompt in the batch), as llama-batched-bench
                     # times its S_TG; the wall-clock figure above also holds the later streams' prompts.
                     "decode_step_tokens_per_s": round((c.decode_step_tokens - tokens0) / steps_s, 2)
                     if steps_s else None})
    return rows


def batched_bench(tools: Path, model: Path, depth: int, ntg: int, levels: list[int], *, threads: int,
                  flash_attn: bool, n_ctx: int) -> list[dict[str, Any]]:
    """llama.cpp's own llama-batched-bench with a shared prefix of `depth` tokens (-pps): S_TG per level."""
    # The tool reads the whole shared prompt in one batch: n_batch must hold it; the compute step stays 512.
    cmd = [str(tools / "llama-batched-bench"), "-m", str(model), "-c", str(n_ctx), "-b", str(max(512, depth + ntg)),
           "-ub", "512",
           "-npp", str(depth), "-ntg", str(ntg), "-npl", ",".join(map(str, levels)), "-pps", "-kvu", "-t", str(threads),
           "-fa", "on" if flash_attn else "off"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"llama-batched-bench failed ({run.returncode}): {run.stderr[-500:]}")
    return parse_batched_bench(run.stdout)


def parse_batched_bench(table: str) -> list[dict[str, Any]]:
    """Rows of llama-batched-bench's markdown table: B (sequences) and S_TG (aggregate decode tokens/s)."""
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and re.fullmatch(r"\d+", cells[0]):
            rows.append({"conversations": int(cells[2]), "decode_tokens_per_s": float(cells[7])})
    return rows


async def first_token(settings: LlamaSettings, prefix: Messages, ask: Messages, *, cold: bool) -> dict[str, Any]:
    """A new backend's load, prefix (restored from disk, or computed when `cold`) and first answer."""
    if cold:
        settings = LlamaSettings(settings.model_path, settings.model_name, settings.model_sha256,
                                 settings.params, None)
    started = time.perf_counter()
    backend = await asyncio.to_thread(LlamaCppBackend, settings)
    try:
        loaded = time.perf_counter()
        await backend.warm(prefix)
        warmed = time.perf_counter()
        answer = await timed(backend, ask, "bench-first")
    finally:
        await backend.close()
    return {"load_s": round(loaded - started, 2), "prefix_s": round(warmed - loaded, 2),
            "prefix_source": backend.counters.timings.get("prefix_source"),
            "first_token_s": round(answer.first_s, 2), "to_first_token_s": round(warmed - started + answer.first_s, 2)}


def bare_llama(settings: LlamaSettings, ask: Messages, other: Messages) -> dict[str, Any]:
    """Bare llama-cpp-python on the same prompt: `other` first (the prefix is then in its cache), then `ask`."""
    from llama_cpp import Llama

    p = settings.params
    llm = Llama(model_path=str(settings.model_path), n_ctx=p.n_ctx, n_batch=p.n_batch, n_threads=p.threads,
                n_threads_batch=p.threads, flash_attn=p.flash_attn, verbose=False)
    try:
        for _ in llm.create_chat_completion(messages=other, max_tokens=1, temperature=0, stream=True):
            pass
        started, first, n = time.perf_counter(), None, 0
        for chunk in llm.create_chat_completion(messages=ask, max_tokens=p.max_tokens, temperature=0, stream=True):
            if chunk["choices"][0].get("delta", {}).get("content"):
                n += 1
                first = first or time.perf_counter()
        end = time.perf_counter()
    finally:
        llm.close()
    first = first or end
    return {"first_token_s": round(first - started, 3), "decode_tokens_per_s": round((n - 1) / (end - first), 2)
            if n > 1 and end > first else None, "tokens": n}


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels: latency by concurrency (and the serial time), aggregate tokens/s (and llama.cpp's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["concurrency"]
    ns = [r["conversations"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(ns, [r["last_answer_s"] for r in rows], "o-", label="last answer, all at once")
    left.plot(ns, [r["serial_s"] for r in rows], "s--", label="same answers one by one")
    left.plot(ns, [r["avg_answer_s"] for r in rows], "^-", label="average answer, all at once")
    left.set(xlabel="concurrent conversations", ylabel="seconds", title="Latency", xticks=ns)
    left.legend(fontsize=8)
    for key, field, label, style in (
            ("bot", "decode_step_tokens_per_s", "bot, decode steps (as llama-batched-bench times them)", "o-"),
            ("bot", "decode_tokens_per_s", "bot, wall clock from the first token", "x:"),
            ("llama_batched_bench", "decode_tokens_per_s", "llama-batched-bench, same depth", "s--")):
        pts = [r for r in report["throughput"].get(key) or [] if r.get(field)]
        if pts:
            right.plot([r["conversations"] for r in pts], [r[field] for r in pts], style, label=label)
    right.plot(ns, [r["aggregate_tokens_per_s"] for r in rows], "^:", label="bot, real answers (incl. prefill)")
    right.set(xlabel="concurrent conversations", ylabel="tokens/s", title="Aggregate decode throughput", xticks=ns)
    right.legend(fontsize=8)
    fig.suptitle(f"{report['model']} · prefix {report['prefix_tokens']} tokens · flash_attn={report['flash_attn']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


QUESTIONS = ["科大讯飞董事长是谁？", "周鸿祎认为ChatGPT是什么？", "江浩然建议构建什么样的准入机制？",
             "赵晓光认为我国人工智能技术落后吗？", "刘庆峰希望让每个人都有什么？", "文章讨论的主题是什么？",
             "刘庆峰建议汇聚什么数据？", "周鸿祎建议支持设立什么项目？"]


async def run(app: Any, *, levels: list[int], questions: list[str], ntg: int, cold: bool,
              tools: Path | None) -> dict[str, Any]:
    """Every measurement on the app's embedded backend and content (the restart probe is added by the CLI)."""
    backend = app.backend
    if not isinstance(backend, LlamaCppBackend):
        raise TypeError("bot bench measures the embedded backend; set model.backend: embedded")
    content, build = app.core.content, PromptBuilder(app.cfg, Prompts(), backend.count_tokens)
    prefix = build.prefixes(content)[0]
    asks = [build.answer(content, [], q, []) for q in questions]
    p = backend.settings.params
    report: dict[str, Any] = {"model": backend.model_name, "flash_attn": p.flash_attn, "parallel": p.parallel,
                              "threads": p.threads, "prefix_tokens": backend.counters.timings.get("prefix_tokens"),
                              "startup": app.startup}
    report["concurrency"] = await concurrency(backend, asks, levels)
    report["throughput"] = {"answer_tokens": ntg, "bot": await throughput(backend, asks[0], levels, ntg)}
    if tools is not None:
        try:
            report["throughput"]["llama_batched_bench"] = await asyncio.to_thread(
                batched_bench, tools, backend.settings.model_path, report["prefix_tokens"], ntg, levels,
                threads=p.threads, flash_attn=p.flash_attn, n_ctx=p.n_ctx)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:  # the rest is still worth a report
            report["throughput"]["llama_batched_bench_error"] = str(exc)[-500:]
    ours = await timed(backend, asks[0], "bench-overhead")
    bare = await asyncio.to_thread(bare_llama, backend.settings, asks[0], asks[1])
    report["overhead"] = {"bot_first_token_s": round(ours.first_s, 3), "bare_first_token_s": bare["first_token_s"],
                          "bot_decode_tokens_per_s": round((ours.tokens - 1) / (ours.total_s - ours.first_s), 2)
                          if ours.tokens > 1 else None, "bare_decode_tokens_per_s": bare["decode_tokens_per_s"]}
    report["first_token"] = {"cached_s": round(ours.first_s, 2), "warm_answer_s": round(ours.total_s, 2),
                             "restored": await first_token(backend.settings, prefix, asks[0], cold=False)}
    if cold:
        report["first_token"]["cold"] = await first_token(backend.settings, prefix, asks[0], cold=True)
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's ratios, from this run."""
    out: dict[str, Any] = {}
    by_n = {r["conversations"]: r for r in report["concurrency"]}
    if 4 in by_n:
        out["four_users_last_over_serial"] = by_n[4]["last_over_serial"]
        out["four_users_max_first_token_s"] = by_n[4]["max_first_token_s"]
    theirs = {r["conversations"]: r["decode_tokens_per_s"] for r in report["throughput"].get("llama_batched_bench", [])}
    out["bot_over_llama_batched_bench"] = {n: round((r.get("decode_step_tokens_per_s") or r["decode_tokens_per_s"])
                                                 / theirs[n], 2)
                                           for r in report["throughput"]["bot"]
                                           if (n := r["conversations"]) in theirs and theirs[n]}
    o = report["overhead"]
    if o["bare_first_token_s"] and o["bot_decode_tokens_per_s"] and o["bare_decode_tokens_per_s"]:
        out["first_token_bot_over_bare"] = round(o["bot_first_token_s"] / o["bare_first_token_s"], 2)
        out["decode_rate_bot_over_bare"] = round(o["bot_decode_tokens_per_s"] / o["bare_decode_tokens_per_s"], 2)
    if (restart := report.get("restart")) and restart.get("warm_total_ms"):
        # From the process's start to its first answer, over the same question answered again in that process.
        out["restart_first_answer_over_warm"] = round(1000 * restart["answered_s"] / restart["warm_total_ms"], 2)
    return out
