"""The core every channel talks to: it decides what happens to a message and keeps the log.

A channel adapter turns a platform update into an `Incoming` and calls `receive`. The core ignores what
is not for the bot and what it has seen before, runs the gate and the command table, logs a question
before anything is generated, and hands back a `Turn` whose `events()` the adapter renders. The store
is reached only from here; the engine answers one question and knows nothing of logs or messengers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterable

from bot.answering.engine import Engine
from bot.backends.base import ProgressFn
from bot.content.knowledge import ContentSet, Knowledge
from bot.content.library import Library
from bot.core import commands
from bot.core.gate import Gate, Refusal
from bot.errors import BotError, StoreUnavailable
from bot.log.store import LogStore
from bot.log.usage import Usage
from bot.text import phrases
from bot.types import (
    Citation,
    Event,
    Incoming,
    Notice,
    PendingTurn,
    Progress,
    ReloadReport,
    Reply,
    Stats,
    conversation_key,
)

log = logging.getLogger(__name__)
RATE_WINDOW_S = 60.0  # the gate's rate limits count questions per minute
RESUME_WINDOW_S = 600  # a messenger question left unanswered by a crash is answered on restart when younger


class Turn:
    """A message the core has taken: a logged question, a command, or a fixed reply (why it is not answered)."""

    def __init__(self, core: Core, msg: Incoming, lang: str, *, turn_id: int | None = None,
                 notice: str | None = None, command: commands.Command | None = None, args: str = "",
                 answered: bool = False) -> None:
        self.core, self.incoming, self.lang = core, msg, lang
        self.turn_id, self._notice, self._command, self._args = turn_id, notice, command, args
        self.answered = answered  # the answer is logged but was not delivered: send it again, do not generate

    @property
    def is_question(self) -> bool:
        """True when the model answers (streamed events end in a Reply); else one Notice follows."""
        return self.turn_id is not None

    async def events(self) -> AsyncIterator[Event]:
        """Queued, Progress and Delta events and one Reply for a question; one Notice otherwise."""
        if self.turn_id is not None and self.answered:
            yield await self.core.store.stored_reply(self.turn_id)
        elif self.turn_id is not None:
            async for event in self.core.answer(self):
                yield event
        elif self._command is not None:
            async for event in self.core.run_command(self._command, self.incoming, self._args, self.lang):
                yield event
        else:
            yield Notice(self._notice or "")

    async def reply(self) -> Reply | Notice:
        """The final Reply (or the Notice), without streaming."""
        last: Event | None = None
        async for event in self.events():
            last = event
        assert isinstance(last, Reply | Notice)
        return last


class Core:
    """Gate, commands, turns and the log, for every channel alike."""

    def __init__(self, knowledge: Knowledge, engine: Engine, store: LogStore, gate: Gate, *,
                 history_turns: int = 3) -> None:
        self.knowledge, self.engine, self.store, self.gate = knowledge, engine, store, gate
        self.history_turns = history_turns
        self._langs: dict[str, str] = {}  # conversation -> language of its last question
        # Turns this process is answering or delivering: a messenger's repeat of their message is a duplicate.
        self._active: set[int] = set()
        self._answering: dict[int, asyncio.Task[object]] = {}  # turn id -> the task consuming its answer
        self.closing = False  # set by `drain`: questions are still logged, but left for the restart
        self.library = Library(knowledge.directory, knowledge.max_mb)  # admins' changes to the content folder
        self._reload_lock = asyncio.Lock()

    @property
    def content(self) -> ContentSet:
        return self.knowledge.current

    async def start(self, progress: ProgressFn | None = None) -> None:
        """Record the content's passages, have the model read it (or restore its saved state), and carry
        the last minute's questions into the rate limits (they hold across a restart)."""
        self.gate.seed(await self.store.recent_questions(RATE_WINDOW_S))
        await self._adopt(self.content, progress)

    async def _adopt(self, content: ContentSet, progress: ProgressFn | None = None) -> None:
        await self.store.record_passages(content.passages, content.version)
        await self.engine.prepare(content, progress)

    # -- messages --

    async def receive(self, msg: Incoming) -> Turn | None:
        """Decide what to do with a message; None when it is not for the bot or was received before.

        A question is logged before this returns: if the process dies from here on, a restart answers it.
        """
        command = self._command_of(msg)
        if not msg.addressed or (msg.group and command and command[0] not in commands.COMMANDS
                                 and command[0] != commands.ASK):
            return None  # a group message for someone else (or a command for another bot)
        key = f"{msg.chat_id}:{msg.message_id}" if msg.message_id else ""
        if key and await self.store.seen(msg.channel, key):
            return await self._again(msg)
        if command and command[0] == commands.ASK:
            msg, command = dataclasses.replace(msg, text=command[1]), None
        lang = self._language(msg, question=command is None)
        if (turn := await self._decide(msg, lang, command)) is not None:
            return turn if await self._claim(msg, key) else await self._again(msg)
        return await self._question(dataclasses.replace(msg, text=msg.text.strip()), lang, key)

    @staticmethod
    def _command_of(msg: Incoming) -> tuple[str, str] | None:
        """The command a message is: typed; a document (content to add); an admin's bare web link."""
        if msg.kind == "document" and msg.attachment is not None:
            return "/add", ""
        if msg.kind != "text":
            return None
        if msg.is_admin and commands.URL_ONLY.fullmatch(msg.text.strip()):
            return "/add", msg.text.strip()
        return commands.parse(msg.text)

    async def _decide(self, msg: Incoming, lang: str, command: tuple[str, str] | None) -> Turn | None:
        """The turn of a message the model does not answer (refused, a command); None for a question."""
        if refusal := self.gate.admit(msg):
            return await self._refuse(msg, lang, refusal)
        if command:
            return await self._command(msg, lang, *command)
        if refusal := self.gate.question(msg):
            return await self._refuse(msg, lang, refusal)
        return None

    async def _claim(self, msg: Incoming, key: str) -> bool:
        """Mark a message handled (False: a repeat got there first); while the log takes no writes a
        command still runs, unmarked."""
        try:
            return not key or await self.store.claim(msg.channel, key)
        except StoreUnavailable:
            return True

    async def _question(self, msg: Incoming, lang: str, key: str) -> Turn | None:
        """Log the question (and mark its message handled) before anything is generated; a question the
        log cannot take is refused plainly rather than answered unrecorded."""
        try:
            turn_id = await self.store.start_turn(msg, key)
        except StoreUnavailable as exc:
            log.error("%s: question from %s not answered: %s", msg.channel, msg.user_id, exc)
            await self.note(msg, "unlogged", str(exc)[:200])  # kept, and written once the log recovers
            return Turn(self, msg, lang, notice=phrases.message("log_unavailable", lang))
        if turn_id is None:  # a repeat of the message was logged in between
            return await self._again(msg)
        self._active.add(turn_id)
        return Turn(self, msg, lang, turn_id=turn_id)

    async def _again(self, msg: Incoming) -> Turn | None:
        """A message received before: answered again only when its answer never reached the user and no
        part of this process is still on it (WeCom repeats a callback; Telegram re-sends after a crash)."""
        prior = await self.store.by_message(msg.channel, msg.chat_id, msg.message_id or "")
        busy = prior is not None and (prior.turn_id in self._active or self.store.writes.holds(prior.turn_id))
        if prior is None or busy or not (prior.status == "pending"
                                                                   or prior.delivery == "waiting"):
            log.info("%s: message %s received again; already handled", msg.channel, msg.message_id)
            return None
        log.info("%s: message %s received again; its turn %s is not delivered, so it is answered", msg.channel,
                 msg.message_id, prior.turn_id)
        return self._resume(prior)

    async def ask(self, msg: Incoming) -> Reply | Notice:
        """The final Reply to a message (or the core's Notice), without streaming: `bot ask` and `bot eval`."""
        turn = await self.receive(msg)
        final = await turn.reply() if turn else Notice("")
        if turn is not None and turn.is_question:
            await self.delivered(turn)  # returned to the caller, who prints it
        return final

    async def delivered(self, turn: Turn, error: str | None = None, *, final: bool = False) -> None:
        """The channel's word on a question's answer: shown (no error), failed for now (a restart or the
        messenger's repeat of the message sends it again), or failed for good (`final`: the user blocked
        the bot). Every channel calls this once per question turn it rendered."""
        if turn.turn_id is None:
            return
        # Written (and shielded from a shutdown's cancel) before the turn stops counting as in progress:
        # a repeat of the message read in between must see it delivered, not answer it again.
        await asyncio.shield(self.store.delivered(turn.turn_id, error, final=final))
        self._active.discard(turn.turn_id)
        if error is not None:
            await self.note(turn.incoming, "undelivered" if not final else "undeliverable", error[:200])

    async def run_command(self, command: commands.Command, msg: Incoming, args: str,
                          lang: str) -> AsyncIterator[Event]:
        """A command's Progress events while it runs (a reload takes a while), then its Notice."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue[Progress]()

        def report(step: str, fraction: float | None) -> None:  # called from the model's thread too
            loop.call_soon_threadsafe(queue.put_nowait, Progress(step, fraction))

        task = asyncio.ensure_future(command.run(self, msg, args, lang, report))
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

    def _language(self, msg: Incoming, *, question: bool) -> str:
        """A question's own language; for anything else the user's, or that of their last question."""
        key = msg.conversation_key
        if question and msg.text.strip():
            self._langs[key] = phrases.language(msg.text)
            return self._langs[key]
        return msg.lang or self._langs.get(key, "zh")

    async def _refuse(self, msg: Incoming, lang: str, refusal: Refusal) -> Turn:
        await self.note(msg, refusal.event, refusal.detail)
        return Turn(self, msg, lang, notice=phrases.message(refusal.message, lang, **refusal.values))

    async def _command(self, msg: Incoming, lang: str, name: str, args: str) -> Turn:
        command = commands.COMMANDS.get(name)
        if command is None:
            return Turn(self, msg, lang, notice=phrases.message("unknown_command", lang, command=name))
        if command.admin and not msg.is_admin:
            log.warning("%s: non-admin %s tried %s", msg.channel, msg.user_id, name)
            await self.note(msg, "admin_denied", name)
            denied = "admin_files_only" if msg.attachment is not None else "admin_only"
            return Turn(self, msg, lang, notice=phrases.message(denied, lang))
        return Turn(self, msg, lang, command=command, args=args)

    async def answer(self, turn: Turn) -> AsyncIterator[Event]:
        """The engine's events for a logged question; its Reply is logged whatever happens, except a
        cancellation (shutdown), which leaves the question pending for the restart."""
        msg, content, started = turn.incoming, self.content, time.perf_counter()
        reply: Reply | None = None
        task = asyncio.current_task()
        if task is not None:
            self._answering[turn.turn_id or 0] = task
            if self.closing:  # arrived during shutdown: logged, answered after the restart
                task.cancel()
        try:
            history = await self.store.history(msg.conversation_key, self.history_turns)
            async for event in self.engine.run(msg, content, history):
                if isinstance(event, Reply):
                    reply = event
                else:
                    yield event
            if reply is None:
                raise RuntimeError("the engine's events ended without a Reply")
        except (asyncio.CancelledError, GeneratorExit):
            log.info("turn %s cancelled before its answer; left pending", turn.turn_id)
            raise
        except Exception as exc:
            log.exception("turn %s failed", turn.turn_id)
            user = exc.user_message if isinstance(exc, BotError) else BotError.user_message
            reply = self.engine.failed(content, user, f"{type(exc).__name__}: {exc}", started)
        finally:
            self._answering.pop(turn.turn_id or 0, None)
            if reply is not None:
                reply.turn_id = turn.turn_id
                await asyncio.shield(self.store.finish_turn(turn.turn_id or 0, reply))
        yield reply

    async def drain(self, grace_s: float) -> int:
        """Shutdown: answers in progress get `grace_s` seconds to finish (and be delivered); the rest, queued
        ones included, are cancelled and their questions stay pending for the restart. How many were."""
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._answering and loop.time() < deadline:
            await asyncio.wait(set(self._answering.values()), timeout=min(deadline - loop.time(), 0.2))
        left = set(self._answering.values())
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=5)
        return len(left)

    async def pending(self, channels: Iterable[str]) -> list[Turn]:
        """Questions on these channels younger than 10 minutes whose answer never reached the user (a crash
        mid-answer, or the messenger down), as turns to answer or deliver; older ones are given up."""
        return [self._resume(t) for t in await self.store.pending_turns(RESUME_WINDOW_S, channels)]

    def _resume(self, t: PendingTurn) -> Turn:
        group = t.conversation == conversation_key(t.channel, t.chat_id, t.user_id, True)
        msg = Incoming(t.channel, t.chat_id, t.user_id, t.text, t.message_id, group=group, conversation=t.conversation)
        self._active.add(t.turn_id)
        return Turn(self, msg, phrases.language(t.text), turn_id=t.turn_id, answered=t.answered)

    async def first_seen(self, scope: str, key: str) -> bool:
        """True the first time `key` is seen in `scope` (persisted): a channel's replay protection (while the
        log takes no writes, every key counts as new: the message dedupe and the signature still hold)."""
        try:
            return await self.store.claim(scope, key)
        except StoreUnavailable:
            return True

    async def note(self, msg: Incoming, kind: str, detail: str = "") -> None:
        """Log an event about a message that is not a turn (refused, denied, undeliverable)."""
        await self.store.log_event(msg.channel, msg.chat_id, msg.user_id, kind, detail)

    # -- what commands use --

    def about(self, lang: str) -> str:
        """What the bot knows about, for /start and /help."""
        c = self.content
        if lang == "zh":
            return f"内容：《{c.title}》（{len(c.passages)} 个段落，版本 {c.version}）。"
        return f"Content: “{c.title}” ({len(c.passages)} passages, version {c.version})."

    async def reset(self, conversation: str) -> None:
        """Stop the conversation's queued or running answer and forget its history for follow-ups."""
        if stopped := self.engine.cancel(conversation):
            log.info("reset: stopped %d model requests of %s", stopped, conversation)
        await self.store.reset(conversation)

    async def sources(self, conversation: str) -> list[Citation]:
        """The passages cited by the conversation's last answer."""
        return await self.store.last_citations(conversation)

    async def stats(self, since_hours: float = 24.0, channel: str | None = None) -> Stats:
        """Turn statistics for the period."""
        return await self.store.stats(since_hours, channel)

    async def usage(self, since_hours: float = 24.0, channel: str | None = None) -> Usage:
        """Per-day questions, outcomes and answer times, and the most-cited passages (for /stats's chart)."""
        return await self.store.usage(since_hours, channel)

    async def prune(self, retention_days: float, redact_after_days: float = 0.0, key: bytes = b"") -> dict[str, int]:
        """Log housekeeping: rows past the retention deleted, old ids and texts redacted (see LogStore.prune)."""
        return await self.store.prune(retention_days, redact_after_days, key)

    async def reload(self, by: Incoming | None = None, progress: ProgressFn | None = None) -> ReloadReport:
        """Load the content again; a new version is served only after the model has read it, and a broken
        folder keeps the old one serving."""
        async with self._reload_lock:
            old = self.content
            report, new = await asyncio.to_thread(self.knowledge.prepare)
            if new is not None and new.version != old.version:
                try:
                    await self._adopt(new, progress)
                except Exception as exc:
                    log.exception("could not prepare content version %s", new.version)
                    report = ReloadReport(False, old.version, old.version, passages=len(old.passages),
                                          error=f"the new content could not be prepared: {exc}")
                    new = None
            if new is not None:
                self.knowledge.current = new
                if new.version != old.version:
                    await self.engine.retain(new)
            who = by or Incoming("signal", "", "", "")
            await self.store.log_event(who.channel, who.chat_id, who.user_id, "reload", report.summary())
            return report
