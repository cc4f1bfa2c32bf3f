"""The command table: /start /help /reset /sources /reload /stats, the same texts and admin rule on every channel.

`/ask QUESTION` is not in the table: the core treats it as the question itself (how a group asks).
Channel-only commands (the terminal's /quit) stay in their adapter.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import texts
from bot.types import Citation, Incoming

if TYPE_CHECKING:
    from bot.core import Core

ASK = "/ask"
# Telegram's rule for command names: Latin letters, digits and underscores; the rest is the argument,
# so "/ask什么是X" asks "什么是X" and "/5G是什么" is a question, not a command.
_COMMAND = re.compile(r"^(/[A-Za-z][A-Za-z0-9_]*)(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """One command: whether only admins may run it, and what it replies."""

    name: str
    admin: bool
    run: Callable[[Core, Incoming, str, str], Awaitable[str]]  # (core, message, arguments, language) -> reply


def parse(text: str) -> tuple[str, str] | None:
    """('/name', 'arguments') when the text is a command, else None; the name is lower-cased."""
    m = _COMMAND.match(text.strip())
    return (m.group(1).lower(), m.group(2).strip()) if m else None


def format_sources(citations: Iterable[Citation]) -> str:
    """One block per cited passage: `[n] section` and its text ("" when there are none)."""
    return "\n\n".join(f"[{c.n}] {c.section}\n{c.text}" for c in citations)


def stats_arguments(args: str) -> tuple[float, str | None]:
    """`/stats [HOURS] [CHANNEL]`, in either order: (hours, default 24; channel, default all)."""
    hours, channel = 24.0, None
    for word in args.split():
        if re.fullmatch(r"\d+(\.\d+)?", word):
            hours = float(word)
        else:
            channel = word.lower()
    return hours, channel


def help_text(core: Core, msg: Incoming, lang: str) -> str:
    """The /help text: what the bot knows, the commands, the admin commands for admins, the channel's hint."""
    return texts.help_text(lang, core.about(lang), admin=msg.is_admin, extra=texts.channel_hint(msg.channel, lang))


async def _start(core: Core, msg: Incoming, args: str, lang: str) -> str:
    return texts.message("greeting", lang) + " " + help_text(core, msg, lang)


async def _help(core: Core, msg: Incoming, args: str, lang: str) -> str:
    return help_text(core, msg, lang)


async def _reset(core: Core, msg: Incoming, args: str, lang: str) -> str:
    await core.reset(msg.conversation_key)
    return texts.message("reset", lang)


async def _sources(core: Core, msg: Incoming, args: str, lang: str) -> str:
    return format_sources(await core.sources(msg.conversation_key)) or texts.message("no_sources", lang)


async def _reload(core: Core, msg: Incoming, args: str, lang: str) -> str:
    return (await core.reload(msg)).summary()


async def _stats(core: Core, msg: Incoming, args: str, lang: str) -> str:
    hours, channel = stats_arguments(args)
    return (await core.stats(hours, channel)).summary()


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("/start", False, _start),
    Command("/help", False, _help),
    Command("/reset", False, _reset),
    Command("/sources", False, _sources),
    Command("/reload", True, _reload),
    Command("/stats", True, _stats),
)}
