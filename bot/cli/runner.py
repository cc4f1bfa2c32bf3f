"""How every `bot` subcommand runs: config loaded, logging set up, the bot's errors one clear line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import click

from bot.config import Config, load_config
from bot.errors import BotError, ConfigError, ContentError, ModelError

Handler = Callable[[Config], Awaitable[int]]


def run(ctx: click.Context, handler: Handler) -> None:
    """Load config, run the async handler, and turn the bot's errors into one clear line and exit 2."""
    try:
        cfg = load_config(ctx.obj.get("config"))
        from bot.app import setup_logging

        setup_logging(cfg)
        code = asyncio.run(handler(cfg))
    except (ConfigError, ModelError, ContentError) as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    except BotError as exc:
        click.echo(f"error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    ctx.exit(code)
