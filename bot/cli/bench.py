"""`bot bench`: this machine's latency and throughput (embedded), or an inference service's against it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from bot.cli.runner import run as _run
from bot.config import Config
from bot.errors import ConfigError


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"),
              show_default=True, help="Folder for bench.json and bench.png (or deployment.json).")
@click.option("--levels", default="1,2,4,8", show_default=True, help="Concurrent conversations to measure.")
@click.option("--tokens", "ntg", type=click.IntRange(8, 512), default=48, show_default=True,
              help="Answer length for the fixed-length throughput runs.")
@click.option("--cold/--no-cold", default=True, show_default=True,
              help="Also time a start with no saved prefix (computes it: a minute or two).")
@click.option("--llama-tools", "tools", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with llama.cpp's llama-batched-bench (scripts/llama-tools.sh prints it) to compare with.")
@click.option("--backend", type=click.Choice(["embedded", "openai"]), default="embedded", show_default=True,
              help="openai: questions/s through the inference service at model.base_url against one embedded "
                   "process on this machine, the same questions (writes deployment.json).")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="With --backend openai: questions each conversation asks, one after another.")
@click.option("--questions", "question_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --backend openai: a question set (JSONL like dev_qa.jsonl) to ask in order instead of "
                   "the built-in eight; give its content with content.dir.")
@click.pass_context
def bench(ctx: click.Context, out_dir: Path, levels: str, ntg: int, cold: bool, tools: Path | None,
          backend: str, rounds: int, question_file: Path | None) -> None:
    """Measure latency and throughput on this machine; write bench.json and bench.png (a few minutes)."""
    try:
        counts = sorted({int(x) for x in levels.split(",") if x.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise click.BadParameter(f"{levels!r}: counts of users at once, e.g. 1,2,4,8", param_hint="--levels")

    async def handler(cfg: Config) -> int:
        if backend == "openai":
            return await _deployment(cfg, counts, rounds, out_dir, question_file)
        from bot.app import open_app
        from bot.measure import bench as b

        async with open_app(cfg, progress=False) as app:
            report = await b.run(app, levels=counts, questions=b.QUESTIONS, ntg=ntg, cold=cold, tools=tools)
        # With the prefix on disk and this process's model freed: a restarted bot's first answer.
        if restart := await asyncio.to_thread(_restart_probe, ctx.obj.get("config"), b.QUESTIONS[-1]):
            report["restart"] = restart
            report["targets"] = b.targets(report)
        _write(out_dir / "bench.json", report)
        b.plot(report, out_dir / "bench.png")
        click.echo(json.dumps(report["targets"], ensure_ascii=False, indent=2))
        click.echo(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")
        return 0

    _run(ctx, handler)


async def _deployment(cfg: Config, levels: list[int], rounds: int, out_dir: Path, question_file: Path | None) -> int:
    """The same questions through the service at model.base_url, then through an embedded model here."""
    from bot.app import open_app
    from bot.measure import bench as b
    from bot.measure import deployment as d
    from bot.measure.evaluation import load_cases

    if not cfg.model.base_url:
        raise ConfigError("bot bench --backend openai needs model.base_url; fix: set it (or $BOT_OPENAI_BASE_URL) "
                          "to the inference service, e.g. http://127.0.0.1:8080/v1")
    questions = [c.question for c in load_cases(question_file)] if question_file else b.QUESTIONS
    report: dict[str, Any] = {"model": cfg.model.name, "base_url": cfg.model.base_url, "rounds": rounds,
                              "questions": str(question_file or "built-in")}
    for name in ("openai", "embedded"):  # one at a time: the service idles while the embedded model runs
        one = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backend=name))
        async with open_app(one, progress=False) as app:
            report[name] = await d.measure(app.core, questions, levels, rounds)
        for row in report[name]:
            click.echo(f"{name:>8} {row['conversations']:>2} at once: {row['questions_per_s']:.2f} questions/s, "
                       f"p95 {row['p95_s']:.1f} s ({row['answered']} answered, {row['declined']} declined, "
                       f"{row['failed']} failed)")
    report["compare"] = d.compare(report["openai"], report["embedded"])
    _write(out_dir / "deployment.json", report)
    click.echo(json.dumps(report["compare"], ensure_ascii=False, indent=2))
    click.echo(f"wrote {out_dir / 'deployment.json'}")
    return 0


def _write(path: Path, report: dict[str, Any]) -> None:
    """A report as indented JSON, its folder made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


def _restart_probe(config: str | None, question: str) -> dict[str, Any] | None:
    """A new process's `bot ask --json` asked the same question twice: its start-up timings and first answer
    since the process began, and the second (warm) answer's time through the same pipeline."""
    cmd = [sys.executable, "-m", "bot", *(["--config", config] if config else []), "ask", "--json", question, question]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or len(lines) != 2:
        logging.getLogger(__name__).warning("restart probe failed: %s", run.stderr[-500:])
        return None
    first, warm = (json.loads(line) for line in lines)
    return {**first.get("startup", {}), "first_total_ms": first.get("total_ms"), "warm_total_ms": warm.get("total_ms")}
