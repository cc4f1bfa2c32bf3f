"""The `bot` command line (`bot.cli:main`, the installed command)."""

from bot.cli.main import main

__all__ = ["main"]
