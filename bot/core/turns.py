"""A turn's life: a taken message answered (or its command run, or its refusal shown), its answer logged
whatever happens, its delivery reported once by the channel that rendered it; shutdown and restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable

from bot.core import commands, feedback
from bot.core.answerer import Answerer
from bot.core.services import Services
from bot.errors import BotError
from bot.log.ratings import LATEST
from bot.log.store import LogStore
from bot.text import phrases
from bot.types import Event, Incoming, Notice, PendingTurn, Reply, conversation_key

log = logging.getLogger(__name__)
RESUME_WINDOW_S = 600  # a messenger question left unanswered by a crash is answered on restart when younger


class Turn:
    """A message the core has taken: a logged question, a command, or a fixed reply (why it is not answered).
    The channel renders its `events()` and then reports, once, whether the user got them (`delivered`)."""

    def __init__(self, turns: Turns, msg: Incoming, lang: str, *, turn_id: int | None = None,
                 notice: str | None = None, command: commands.Command | None = None, args: str = "",
                 answered: bool = False, created_at: float = 0.0, placeholder: str | None = None) -> None:
        self.turns, self.incoming, self.lang = turns, msg, lang
        self.placeholder = placeholder  # a resumed turn: the message that showed its answer in progress
        self.turn_id, self._notice, self._command, self._args = turn_id, notice, command, args
        self.answered = answered  # the answer is logged but was not delivered: send it again, do not generate
        self.created_at = created_at or time.time()  # when the user asked (a resumed turn: before the restart)

    @property
    def rateable(self) -> bool:
        """Whether its answer is rated (👍 / 👎): a question, with ratings on."""
        return self.turn_id is not None and self.turns.services.gaps_config.ratings

    @property
    def is_question(self) -> bool:
        """True when the model answers (streamed events end in a Reply); else one Notice follows."""
        return self.turn_id is not None

    async def events(self) -> AsyncIterator[Event]:
        """Queued, Progress and Delta events and one Reply for a question; one Notice otherwise."""
        if self.turn_id is not None and self.answered:
            yield self.turns.rateable(await self.turns.store.stored_reply(self.turn_id), self.lang)
        elif self.turn_id is not None:
            async for event in self.turns.answer(self):
                yield event
        elif self._command is not None:
            async for event in commands.run(self._command, self.turns.services, self.incoming, self._args, self.lang):
                if isinstance(event, Notice) and event.expects is not None and not self.incoming.replies:
                    await self.shown(LATEST, event)  # no replies here: the next document or link answers it
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

    async def placed(self, placeholder: str) -> None:
        """The channel shows the answer in progress in this message: logged for whoever finishes the turn."""
        self.placeholder = placeholder
        if self.turn_id is not None:
            await self.turns.store.placed(self.turn_id, placeholder)

    async def shown(self, message_id: str, notice: Notice) -> None:
        """The channel showed `notice` in this message: when it asks for a reply (a 👎's reason, content for
        the gaps listed), a reply to that message from this user is taken as one."""
        if notice.expects is not None:
            msg = self.incoming
            await self.turns.store.ratings.await_reply(msg.channel, msg.chat_id, message_id, msg.user_id,
                                                       *notice.expects)

    async def delivered(self, error: str | None = None, *, final: bool = False, via: str = "") -> None:
        """The channel's word on what it rendered: shown (no error; `via` how, for a channel with several
        ways), failed for now (a restart or the messenger's repeat of the message sends it again), or failed
        for good (`final`: the user blocked the bot). Only a question's delivery is logged."""
        await self.turns.delivered(self, error, final=final, via=via)


class Turns:
    """The turns this process is answering or delivering, their answers logged, shutdown and restart."""

    def __init__(self, services: Services, engine: Answerer, store: LogStore, *, history_turns: int = 3) -> None:
        self.services, self.engine, self.store = services, engine, store
        self.history_turns = history_turns
        # Turns this process is answering or delivering: a messenger's repeat of their message is a duplicate.
        self._active: set[int] = set()
        self._answering: dict[int, asyncio.Task[object]] = {}  # turn id -> the task consuming its answer
        self.closing = False  # set by `drain`: questions are still logged, but left for the restart

    def question(self, msg: Incoming, lang: str, turn_id: int, *, answered: bool = False,
                 created_at: float = 0.0, placeholder: str | None = None) -> Turn:
        """The turn of a logged question (`answered`: its answer is logged, only its delivery is owed)."""
        self._active.add(turn_id)
        return Turn(self, msg, lang, turn_id=turn_id, answered=answered, created_at=created_at,
                    placeholder=placeholder)

    def notice(self, msg: Incoming, lang: str, text: str) -> Turn:
        """A turn that only shows a fixed reply."""
        return Turn(self, msg, lang, notice=text)

    def command(self, msg: Incoming, lang: str, command: commands.Command, args: str) -> Turn:
        """A turn that runs a command."""
        return Turn(self, msg, lang, command=command, args=args)

    @property
    def answering(self) -> int:
        """How many answers are being made now (queued for the model or running)."""
        return len(self._answering)

    def busy(self, turn_id: int) -> bool:
        """Whether some part of this process is still on the turn (answering, delivering, or logging it)."""
        return turn_id in self._active or self.store.writing(turn_id)

    async def answer(self, turn: Turn) -> AsyncIterator[Event]:
        """The engine's events for a logged question; its Reply is logged whatever happens, except a
        cancellation (shutdown), which leaves the question pending for the restart."""
        msg, content, started = turn.incoming, self.services.content, time.perf_counter()
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
        yield self.rateable(reply, turn.lang)

    def rateable(self, reply: Reply, lang: str) -> Reply:
        """The reply with 👍 / 👎 under it (ratings on; not an apology for an error)."""
        if self.services.gaps_config.ratings and reply.turn_id is not None and not reply.error:
            reply.choices = feedback.buttons(reply.turn_id, lang)
        return reply

    async def delivered(self, turn: Turn, error: str | None = None, *, final: bool = False, via: str = "") -> None:
        """Log a question's delivery (see Turn.delivered); a failed one is noted as an event too."""
        if turn.turn_id is None:
            return
        # Written (and shielded from a shutdown's cancel) before the turn stops counting as in progress:
        # a repeat of the message read in between must see it delivered, not answer it again.
        await asyncio.shield(self.store.delivered(turn.turn_id, error, final=final, via=via))
        self._active.discard(turn.turn_id)
        if error is not None:
            msg = turn.incoming
            await self.store.log_event(msg.channel, msg.chat_id, msg.user_id,
                                       "undelivered" if not final else "undeliverable", error[:200])

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
        return [self.resume(t) for t in await self.store.pending_turns(RESUME_WINDOW_S, channels)]

    async def orphans(self, channels: Iterable[str]) -> list[Turn]:
        """While serving: the pending turns no live instance is on (one that shares the log died, or a
        delivery here failed), claimed for this process; not those it is still answering or delivering."""
        left = await self.store.pending_turns(RESUME_WINDOW_S, channels)
        return [self.resume(t) for t in left if not self.busy(t.turn_id)]

    def resume(self, t: PendingTurn) -> Turn:
        """The turn of a question logged before (by this process or the one before it)."""
        group = t.conversation == conversation_key(t.channel, t.chat_id, t.user_id, True)
        msg = Incoming(t.channel, t.chat_id, t.user_id, t.text, t.message_id, group=group, conversation=t.conversation)
        return self.question(msg, phrases.language(t.text), t.turn_id, answered=t.answered, created_at=t.created_at,
                             placeholder=t.placeholder)
