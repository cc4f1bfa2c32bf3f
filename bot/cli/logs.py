"""`bot logs`: recent turns, a full export, and `bot logs serve` (the log as a web page)."""

from __future__ import annotations

import csv
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from bot.cli.runner import run
from bot.config import Config


@click.group(invoke_without_command=True)
@click.option("--limit", default=20, show_default=True, help="How many recent turns.")
@click.option("--channel", help="Only this channel (cli, telegram, wecom, eval).")
@click.option("--export", "export", type=click.Choice(["jsonl", "csv"]),
              help="Stream every row with every column instead: jsonl holds all tables (a 'table' field says "
                   "which), csv one table (--table, default turns).")
@click.option("--table", type=click.Choice(["turns", "events", "passages", "resets", "seen", "ratings"]),
              help="With --export: only this table.")
@click.pass_context
def logs(ctx: click.Context, limit: int, channel: str | None, export: str | None, table: str | None) -> None:
    """Show recent conversation turns from the log, or export all of it (`logs serve`: a web page)."""
    if ctx.invoked_subcommand is not None:
        return

    async def handler(cfg: Config) -> int:
        from bot.log.export import EXPORT_TABLES
        from bot.log.store import LogStore

        store = await LogStore.open(cfg.log_database)
        try:
            if export:
                tables = [table] if table else list(EXPORT_TABLES) if export == "jsonl" else ["turns"]
                await _export(store, export, tables, channel)
                return 0
            rows = await store.recent(limit, channel)
        finally:
            await store.close()
        for r in rows:
            flag = "declined" if r["refused"] else r["status"]
            click.echo(f"#{r['id']} {r['channel']}:{r['chat_id']} {flag} {r['total_ms'] or '-'} ms\n"
                       f"  Q: {r['question']}\n  A: {(r['answer'] or '')[:200]}")
        return 0

    run(ctx, handler)


async def _export(store: Any, fmt: str, tables: list[str], channel: str | None) -> None:
    """Stream rows to stdout as they are read (a big log never sits in memory)."""
    out = sys.stdout
    for name in tables:
        writer = csv.DictWriter(out, fieldnames=await store.columns(name)) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        async for row in store.export(name, channel):
            if writer is not None:
                writer.writerow(row)
            else:
                out.write(json.dumps({"table": name, **row}, ensure_ascii=False) + "\n")
    out.flush()


@logs.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; beyond localhost a token "
              "is required.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", envvar="BOT_LOGS_TOKEN", help="Require this token ($BOT_LOGS_TOKEN); made up when the "
              "host is not localhost and none is given.")
@click.pass_context
def serve_logs(ctx: click.Context, host: str, port: int, token: str | None) -> None:
    """Browse the log in a web browser: Datasette, read-only, with canned queries (Ctrl-C stops it)."""

    async def handler(cfg: Config) -> int:
        from bot.log import web as logweb

        database = await _served(cfg)
        if database is None:
            return 2
        needed = token or (None if logweb.is_local(host) else secrets.token_urlsafe(18))
        query = f"?token={needed}" if needed else ""
        click.echo(f"The log at http://{host}:{port}/{database.stem}{query} (read-only; Ctrl-C stops).")
        await logweb.serve(database, host, port, needed)
        return 0

    run(ctx, handler)


async def _served(cfg: Config) -> Path | None:
    """The SQLite file the page shows: the log itself, or a snapshot of the shared PostgreSQL log taken now
    (Datasette reads SQLite only); None, with the error said, when there is no log yet."""
    from bot.log.database import shown
    from bot.log.store import LogStore

    target = cfg.log_database
    if isinstance(target, Path):
        if not target.exists():
            click.echo(f"error: no log at {target} yet; fix: run the bot once, or set `database`.", err=True)
            return None
        return target
    snapshot = cfg.data_path / "log-snapshot.sqlite3"
    store = await LogStore.open(target)
    try:
        counts = await store.snapshot(snapshot)
    finally:
        await store.close()
    click.echo(f"A snapshot of the shared log {shown(target)} ({counts['turns']} turns) in {snapshot}: the page "
               "shows the log as it was now; start it again to see newer turns.")
    return snapshot
