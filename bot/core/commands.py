"""The command table: /start /help /reset /sources /reload /stats, the same texts and admin rule on every channel.

`/ask QUESTION` is not in the table: the core treats it as the question itself (how a group asks).
Channel-only commands (the terminal's /quit) stay in their adapter.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.core import feedback
from bot.core.capabilities import Report, Services
from bot.errors import ContentError
from bot.text import phrases
from bot.types import Citation, Event, Incoming, Notice, Progress

if TYPE_CHECKING:
    from bot.backends.base import ProgressFn

log = logging.getLogger(__name__)
ASK = "/ask"
# Telegram's rule for command names: Latin letters, digits and underscores; the rest is the argument,
# so "/ask什么是X" asks "什么是X" and "/5G是什么" is a question, not a command.
_COMMAND = re.compile(r"^(/[A-Za-z][A-Za-z0-9_]*)(.*)$", re.DOTALL)


URL_ONLY = re.compile(r"https?://\S+")


@dataclass(frozen=True)
class Command:
    """One command: whether only admins may run it, and what it replies."""

    name: str
    admin: bool
    # (services, message, arguments, language, progress) -> the reply
    run: Callable[[Services, Incoming, str, str, Report], Awaitable[str | Notice]]
    help: tuple[str, str] = ("", "")  # its /help line in Chinese and English ("": not listed)
    args: tuple[str, str] = ("", "")  # what follows it, as /help names it
    menu: str = ""  # its description in a messenger's command menu ("": not in the menu)

    def help_line(self, lang: str) -> str:
        """`/name ARG  what it does` in the user's language."""
        i = 0 if lang == "zh" else 1
        return f"{self.name}{' ' + self.args[i] if self.args[i] else ''}  {self.help[i]}\n"


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
            hours = min(float(word), 366 * 24)  # at most a year: one bar a day
        else:
            channel = word.lower()
    return hours, channel


def help_text(services: Services, msg: Incoming, lang: str) -> str:
    """The /help text, its command lines drawn from the command table (the admin's for an admin)."""
    lines = "".join(c.help_line(lang) for c in COMMANDS.values() if c.help[0] and not c.admin)
    admin = "".join(c.help_line(lang) for c in COMMANDS.values() if c.help[0] and c.admin) if msg.is_admin else ""
    return phrases.help_text(lang, services.about(lang), lines, admin, phrases.channel_hint(msg.channel, lang))


def menu() -> dict[str, str]:
    """A messenger's command menu (Telegram's setMyCommands): name without the slash -> description."""
    return {"ask": ASK_MENU} | {c.name[1:]: c.menu for c in COMMANDS.values() if c.menu}


async def _start(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    return phrases.message("greeting", lang) + " " + help_text(services, msg, lang)


async def _help(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    return help_text(services, msg, lang)


async def _reset(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    await services.reset(msg.conversation_key)
    return phrases.message("reset", lang)


async def _sources(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    return format_sources(await services.sources(msg.conversation_key)) or phrases.message("no_sources", lang)


def _reading(progress: Report) -> ProgressFn:
    """A reload's progress (passages read of all) as the command's progress."""
    return lambda done, total: progress("reading_content", done / max(total, 1))


async def _reload(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    return (await services.reload(msg, _reading(progress))).summary(lang)


async def _stats(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """The numbers as text under a chart of the same numbers (drawn in a thread: about a second)."""
    from bot.log.usage import chart

    hours, channel = stats_arguments(args)
    stats, usage = await services.stats(hours, channel), await services.usage(hours, channel)
    lines = [stats.summary(lang)]
    if usage.by_channel:
        lines.append(", ".join(f"{name}: {sum(counts)}" for name, counts in sorted(usage.by_channel.items())))
    lines += [f"[{k}] {section} ({n}×)" for k, (_, section, n) in enumerate(usage.cited, 1)]
    title = f"Last {hours:g} h" + (f", {channel}" if channel else "") + f": {stats.turns} questions"
    return Notice("\n".join(lines), image=await asyncio.to_thread(chart, usage, title))


async def _add(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """A document the admin sent, or the web page at `args`: its preview with Confirm and Cancel."""
    try:
        if msg.attachment is not None:
            if (msg.attachment.size or 0) > services.library.max_bytes:  # not even downloaded
                raise ContentError(f"{msg.attachment.name} is {msg.attachment.size / 1e6:.1f} MB, over "
                                   f"content.max_mb ({services.library.max_bytes / 1e6:g} MB).")
            progress("extracting", None)
            data = await msg.attachment.fetch()
            return await services.library.propose_add(msg.attachment.name, data, msg.conversation_key,
                                                      services.content, lang, _gap_questions(msg, args))
        if not URL_ONLY.fullmatch(args):
            return phrases.message("add_usage", lang)
        from bot.content.files import fetch, page_name

        progress("fetching", None)
        page = await fetch(args, services.library.max_bytes)
        progress("extracting", None)
        return await services.library.propose_add(page_name(args), page, msg.conversation_key, services.content, lang,
                                                  _gap_questions(msg, ""))
    except ContentError as exc:
        return phrases.message("content_not_added", lang, reason=str(exc))
    except Exception as exc:  # the messenger's download failed, or a parser broke: still a plain answer
        log.warning("add: %s failed", msg.attachment.name if msg.attachment else args, exc_info=True)
        reason = f"it could not be downloaded or read ({type(exc).__name__})"
        return phrases.message("content_not_added", lang, reason=reason)


def _gap_questions(msg: Incoming, pick: str) -> tuple[str, ...]:
    """The questions of the gaps a document or link answers, when it was sent in reply to a /gaps list (a
    caption's numbers pick topics of it)."""
    if msg.regarding is None or msg.regarding[0] != feedback.GAPS:
        return ()
    return tuple(feedback.gaps.chosen(msg.regarding[1], pick))


async def _content(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    docs = services.library.documents(services.content)
    lines = [phrases.message("document_line", lang, name=d.name, title=d.title, passages=d.passages) for d in docs]
    return "\n".join([phrases.message("documents", lang, n=len(docs)), *lines])


async def _remove(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    if not args:
        return phrases.message("remove_usage", lang)
    try:
        return await services.library.propose_remove(args, msg.conversation_key, services.content, lang)
    except ContentError as exc:
        return str(exc)


async def _confirm(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    """Apply the admin's proposal and reload; a reload that fails puts the folder back."""
    proposal = await services.library.take(args, msg.conversation_key)
    if proposal is None:
        return phrases.message("proposal_gone", lang)

    async def change() -> tuple[str, bool]:
        async with services.library.lock:  # one change at a time: apply, reload and undo never interleave
            try:
                undo = services.library.apply(proposal)
            except OSError as exc:
                return phrases.message("content_unchanged", lang, reason=str(exc)), False
            report = await services.reload(msg, _reading(progress))
            if not report.ok:
                undo()
                return phrases.message("content_unchanged", lang, reason=report.error or ""), False
            return report.summary(lang), True

    # Shielded: a shutdown or a vanished channel must not leave a written but unconfirmed file behind.
    summary, changed = await asyncio.shield(change())
    if changed and proposal.questions:  # content added for gaps: do those questions get answers now?
        return summary + "\n" + await feedback.reasked(services, list(proposal.questions), lang, progress)
    return summary


async def _cancel(services: Services, msg: Incoming, args: str, lang: str, progress: Report) -> str | Notice:
    await services.library.take(args, msg.conversation_key)
    return phrases.message("cancelled", lang)


ASK_MENU = "Ask a question about the article"  # /ask is a question, not a command of the table
COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("/start", False, _start),
    Command("/help", False, _help, ("显示本帮助", "show this help"), menu="What I know and how to ask"),
    Command("/reset", False, _reset, ("清空对话记录", "forget this conversation"), menu="Forget this conversation"),
    Command("/sources", False, _sources, ("显示上一个回答引用的原文段落", "show the passages behind the last answer"),
            menu="The passages behind the last answer"),
    Command("/reload", True, _reload, ("重新加载内容并报告变化", "reload the content and report what changed")),
    Command("/stats", True, _stats, ("统计（轮次、用户、拒答、延迟）", "turns, users, declines and latency")),
    Command("/content", True, _content, ("列出内容中的文档", "list the documents in the content")),
    Command("/add", True, _add, ("添加网页（或直接发送文件）", "add a web page (or just send a file)"),
            ("网址", "URL")),
    Command("/remove", True, _remove, ("删除文档", "remove a document"), ("文件名", "NAME")),
    Command("/good", False, feedback.good, ("给上一个回答点 👍", "rate the last answer 👍")),
    Command("/bad", False, feedback.bad, ("给上一个回答点 👎（可附原因）", "rate the last answer 👎"),
            ("[原因]", "[reason]")),
    Command("/rate", False, feedback.rate),
    Command("/gaps", True, feedback.show, ("内容没能回答的问题（按主题归并）", "what the content did not answer"),
            ("[天数]", "[DAYS]")),
    Command("/digest", True, feedback.subscribe, ("订阅或退订内容缺口摘要", "get the gaps digest, or stop it"),
            ("on|off", "on|off")),
    Command("/confirm", True, _confirm),
    Command("/cancel", True, _cancel),
)}

# What a reply to one of the bot's messages is, when that message asked for one (Notice.expects): not typed.
REPLIES: dict[str, Command] = {feedback.REASON: Command(feedback.REASON, False, feedback.reason)}


async def run(command: Command, services: Services, msg: Incoming, args: str, lang: str) -> AsyncIterator[Event]:
    """A command's Progress events while it runs (a reload takes a while), then its Notice."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue[Progress]()

    def report(step: str, fraction: float | None) -> None:  # called from the model's thread too
        loop.call_soon_threadsafe(queue.put_nowait, Progress(step, fraction))

    task = asyncio.ensure_future(command.run(services, msg, args, lang, report))
    getter: asyncio.Future[Progress] | None = None
    try:
        while not task.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if not task.done():  # the reader went away (shutdown); a confirmed change runs on, shielded
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
    result = task.result()
    yield result if isinstance(result, Notice) else Notice(result)
