"""A message in: whether it is for the bot, whether it was seen before, the gate, the command table, and a
question logged before anything is generated. What comes out is a `Turn` (or nothing)."""

from __future__ import annotations

import dataclasses
import logging

from bot.core import commands
from bot.core.gate import RATE_WINDOW_S, Gate, Refusal
from bot.core.turns import Turn, Turns
from bot.errors import StoreUnavailable
from bot.log.ratings import LATEST, LATEST_S
from bot.log.store import LogStore
from bot.text import phrases
from bot.types import Incoming, PendingTurn

log = logging.getLogger(__name__)


class Intake:
    """Dedupe, gate and command dispatch, once for every channel."""

    def __init__(self, gate: Gate, store: LogStore, turns: Turns) -> None:
        self.gate, self.store, self.turns = gate, store, turns
        self._langs: dict[str, str] = {}  # conversation -> language of its last question

    async def receive(self, msg: Incoming) -> Turn | None:
        """Decide what to do with a message; None when it is not for the bot or was received before.

        The gate and the command table decide first (nothing is logged yet); then one store call claims
        the message and, for a question, logs it before anything is generated: if the process dies from
        here on, a restart answers it.
        """
        if msg.reply_to or (not msg.replies and msg.is_admin and msg.kind in ("document", "text")):
            msg = await self._regarding(msg)
        command = self._command_of(msg)
        if not msg.addressed or (msg.group and command and command[0] not in commands.COMMANDS
                                 and command[0] not in commands.REPLIES and command[0] != commands.ASK):
            return None  # a group message for someone else (or a command for another bot)
        key = f"{msg.chat_id}:{msg.message_id}" if msg.message_id else ""
        if command and command[0] == commands.ASK:
            msg, command = dataclasses.replace(msg, text=command[1]), None
        lang = self._language(msg, question=command is None)
        if command is None:
            await self._recount(msg)
        turn, event = self._decide(msg, lang, command)
        if turn is None:
            msg = dataclasses.replace(msg, text=msg.text.strip())
        try:
            got = await self.store.receive(msg, key, question=turn is None)
        except StoreUnavailable as exc:
            return await self._unlogged(msg, lang, key, turn, event, exc)
        if got.repeat:
            if turn is None:
                self.gate.forget(msg)  # counted as a question just now, but asked before
            return await self._again(msg, got.prior)
        if event is not None:
            await self.note(msg, *event)
        return turn or self.turns.question(msg, lang, got.turn_id or 0)

    async def _recount(self, msg: Incoming) -> None:
        """Bring the user's rate limit up to the log, which holds the questions every instance sharing it
        took (an unreadable log leaves this process's own count)."""
        if not self.gate.limits(msg.channel):
            return
        try:
            ages = await self.store.questions_of(msg.channel, msg.user_id, RATE_WINDOW_S)
        except StoreUnavailable:
            return
        self.gate.recount(msg, ages)

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

    async def _regarding(self, msg: Incoming) -> Incoming:
        """The message, told what the bot message it replies to asked of this user, if anything (a reason
        for their 👎; content for the gaps listed). Where the platform shows no replies, a document or link
        an admin sends soon after the last such notice answers it."""
        try:
            if msg.reply_to:
                awaited = await self.store.ratings.awaited(msg.channel, msg.chat_id, msg.reply_to)
            elif msg.kind == "document" or commands.URL_ONLY.fullmatch(msg.text.strip()):
                awaited = await self.store.ratings.awaited(msg.channel, msg.chat_id, LATEST, LATEST_S)
            else:
                return msg
        except StoreUnavailable:
            return msg
        if awaited is None or awaited.user_id != msg.user_id:
            return msg
        return dataclasses.replace(msg, regarding=(awaited.kind, awaited.data))

    @staticmethod
    def _command_of(msg: Incoming) -> tuple[str, str] | None:
        """The command a message is: typed; a document (content to add); an admin's bare web link; the
        answer to what a bot message asked (a typed command still counts as typed)."""
        if msg.kind == "document" and msg.attachment is not None:
            return "/add", msg.text
        if msg.kind != "text":
            return None
        if msg.is_admin and commands.URL_ONLY.fullmatch(msg.text.strip()):
            return "/add", msg.text.strip()
        typed = commands.parse(msg.text)
        if typed is None and msg.regarding is not None and msg.regarding[0] in commands.REPLIES:
            return msg.regarding[0], msg.text
        return typed

    def _decide(self, msg: Incoming, lang: str,
                command: tuple[str, str] | None) -> tuple[Turn | None, tuple[str, str] | None]:
        """The turn of a message the model does not answer (refused, a command), or None for a question;
        and the event to log about it once the message is known to be new."""
        if refusal := self.gate.admit(msg):
            return self._refuse(msg, lang, refusal)
        if command:
            return self._command(msg, lang, *command)
        if refusal := self.gate.question(msg):
            return self._refuse(msg, lang, refusal)
        return None, None

    async def _unlogged(self, msg: Incoming, lang: str, key: str, turn: Turn | None,
                        event: tuple[str, str] | None, exc: StoreUnavailable) -> Turn | None:
        """The log takes no writes: a repeat (read) is still dropped and a command still runs, unmarked; a
        question is refused plainly rather than answered unrecorded."""
        if key and await self.store.seen(msg.channel, key):
            prior = await self.store.by_message(msg.channel, msg.chat_id, msg.message_id or "")
            return await self._again(msg, prior)
        if event is not None:
            await self.note(msg, *event)  # kept, and written once the log recovers
        if turn is not None:
            return turn
        log.error("%s: question from %s not answered: %s", msg.channel, msg.user_id, exc)
        await self.note(msg, "unlogged", str(exc)[:200])
        return self.turns.notice(msg, lang, phrases.message("log_unavailable", lang))

    async def _again(self, msg: Incoming, prior: PendingTurn | None) -> Turn | None:
        """A message received before: answered again only when its answer never reached the user and neither
        this process nor another live instance sharing the log is on it (its lease lapsed: WeCom repeats a
        callback; Telegram re-sends after a crash)."""
        if prior is None or self.turns.busy(prior.turn_id) or not (prior.status == "pending"
                                                                   or prior.delivery == "waiting"):
            log.info("%s: message %s received again; already handled", msg.channel, msg.message_id)
            return None
        try:
            taken = await self.store.leases.take(prior.turn_id)
        except StoreUnavailable:  # who is on it cannot be known: it stays pending for a later look
            taken = False
        if not taken:
            log.info("%s: message %s received again; another instance is on turn %s", msg.channel,
                     msg.message_id, prior.turn_id)
            return None
        log.info("%s: message %s received again; its turn %s is not delivered, so it is answered", msg.channel,
                 msg.message_id, prior.turn_id)
        return self.turns.resume(prior)

    def _language(self, msg: Incoming, *, question: bool) -> str:
        """A question's own language; for anything else the user's, or that of their last question."""
        key = msg.conversation_key
        if question and msg.text.strip():
            self._langs[key] = phrases.language(msg.text)
            return self._langs[key]
        return msg.lang or self._langs.get(key, "zh")

    def _refuse(self, msg: Incoming, lang: str, refusal: Refusal) -> tuple[Turn, tuple[str, str]]:
        text = phrases.message(refusal.message, lang, **refusal.values)
        return self.turns.notice(msg, lang, text), (refusal.event, refusal.detail)

    def _command(self, msg: Incoming, lang: str, name: str, args: str) -> tuple[Turn, tuple[str, str] | None]:
        command = commands.COMMANDS.get(name) or commands.REPLIES.get(name)
        if command is None:
            return self.turns.notice(msg, lang, phrases.message("unknown_command", lang, command=name)), None
        if command.admin and not msg.is_admin:
            log.warning("%s: non-admin %s tried %s", msg.channel, msg.user_id, name)
            denied = "admin_files_only" if msg.attachment is not None else "admin_only"
            return self.turns.notice(msg, lang, phrases.message(denied, lang)), ("admin_denied", name)
        return self.turns.command(msg, lang, command, args), None
