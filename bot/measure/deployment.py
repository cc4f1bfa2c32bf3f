"""`bot bench --backend openai`: questions answered per second through an inference service against one
embedded process on this machine, the same questions through the same answering pipeline.

Each level starts that many conversations at once, each asking `rounds` questions one after another (a
user waits for an answer before asking again), and times the whole. What a deployment serves is bounded by
its inference service: the bot instances in front of it retrieve, check and log (milliseconds a turn).
Ratios from one run: timings on a shared machine are noisy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.core.runtime import Core
from bot.types import Incoming, Notice


async def _one(core: Core, question: str, conversation: str) -> tuple[float, str]:
    """One question in `conversation`: its seconds and how it ended (answered, declined, failed)."""
    started = time.perf_counter()
    final = await core.ask(Incoming("bench", "bench", "bench", question, conversation=conversation))
    seconds = time.perf_counter() - started
    if isinstance(final, Notice) or final.error:  # refused by the gate, or the model failed
        return seconds, "failed"
    return seconds, "declined" if final.refused else "answered"


async def level(core: Core, questions: list[str], conversations: int, rounds: int, run: str) -> dict[str, Any]:
    """`conversations` users at once, `rounds` questions each (`questions` in order, one per ask, so no prompt
    repeats while they last: a server caching whole prompts gains nothing the embedded model would not)."""
    async def user(u: int) -> list[tuple[float, str]]:
        return [await _one(core, questions[(u * rounds + r) % len(questions)], f"bench:{run}:{conversations}:{u}")
                for r in range(rounds)]

    started = time.perf_counter()
    done = [x for runs in await asyncio.gather(*(user(u) for u in range(conversations))) for x in runs]
    wall = time.perf_counter() - started
    times = sorted(s for s, _ in done)
    return {"conversations": conversations, "questions": len(done), "wall_s": round(wall, 2),
            "questions_per_s": round(len(done) / wall, 3),
            "mean_s": round(sum(times) / len(times), 2), "p95_s": round(times[int(0.95 * (len(times) - 1))], 2),
            **{k: sum(1 for _, o in done if o == k) for k in ("answered", "declined", "failed")}}


async def measure(core: Core, questions: list[str], levels: list[int], rounds: int) -> list[dict[str, Any]]:
    """Every level in turn through `core`'s backend."""
    run, out, used = f"{time.time():.0f}", [], 0
    for n in levels:  # each level goes on where the last one stopped in `questions`
        out.append(await level(core, questions[used:] + questions[:used], n, rounds, run))
        used = (used + n * rounds) % len(questions)
    return out


def compare(served: list[dict[str, Any]], embedded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: the service's questions/s, the embedded process's, and their ratio."""
    out = []
    for s, e in zip(served, embedded, strict=True):
        ratio = s["questions_per_s"] / e["questions_per_s"] if e["questions_per_s"] else None
        out.append({"conversations": s["conversations"], "service_qps": s["questions_per_s"],
                    "embedded_qps": e["questions_per_s"], "ratio": None if ratio is None else round(ratio, 2),
                    "service_p95_s": s["p95_s"], "embedded_p95_s": e["p95_s"]})
    return out
