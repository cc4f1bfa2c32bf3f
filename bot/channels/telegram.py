"""The Telegram channel: python-telegram-bot v22 handlers <-> Incoming/Reply, streaming edits, commands.

Private chats: every text is a question. Groups: only a mention of the bot, a reply to one of its
messages, or /ask. Answers stream into a placeholder message (edits throttled, never without a
change), end with their citations, and are split at paragraph or sentence boundaries past 4096
UTF-16 units (channels/common.py). Sends and edits go through `TelegramApi` (telegram_api.py), which
waits out flood control (429) and retries network errors with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from telegram import BotCommand, Message, Update
from telegram.constants import ChatAction, ChatType, MessageEntityType
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes, MessageHandler, filters

from bot import texts
from bot.channels.common import SlidingWindow, fit_prefix, format_sources, split_text, utf16_len
from bot.channels.telegram_api import TelegramApi
from bot.config import ConversationConfig, TelegramConfig
from bot.types import Delta, Incoming, PendingTurn, Queued, Reply, Retract

if TYPE_CHECKING:
    from bot.engine import Engine
    from bot.store import LogStore

logger = logging.getLogger(__name__)
Ctx = ContextTypes.DEFAULT_TYPE

MAX_CHARS = 4096  # Bot API limit per message, in UTF-16 code units after entity parsing
GROUP_EDIT_INTERVAL_S = 3.0  # Telegram allows about 20 messages a minute in a group; edits count
TYPING_EVERY_S = 4.5  # the typing indicator lasts about 5 s
ALLOWED_UPDATES = ["message"]


def split_message(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Split text into messages of at most `limit` UTF-16 units, at a paragraph, line, sentence or word."""
    return split_text(text, limit, utf16_len)


class _Live:
    """A message being streamed into: shows the latest text, at most one edit per `interval`."""

    def __init__(self, edit: Callable[[str], Awaitable[None]], shown: str, interval: float) -> None:
        self.shown = self.want = shown
        self.started = asyncio.Event()
        self._edit, self._interval = edit, interval
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def show(self, text: str) -> None:
        """Ask for `text` to be shown; edits coalesce, so only the latest wish is sent."""
        text = text.strip()
        if text and text != self.want:
            self.want = text
            self._wake.set()

    async def close(self) -> None:
        """Stop editing (an edit in flight finishes first)."""
        self._stop.set()
        self._wake.set()
        await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set() or self.want == self.shown:
                continue
            text = self.want
            try:
                await self._edit(text)
                self.shown = text
            except TelegramError as exc:
                logger.warning("telegram: a streaming edit failed: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)


def _preview(draft: str) -> str:
    """The streamed draft as it fits one message."""
    if utf16_len(draft) <= MAX_CHARS:
        return draft
    return draft[: fit_prefix(draft, MAX_CHARS - 2, utf16_len)] + " …"


def final_text(reply: Reply, lang: str) -> str:
    """What the user sees at the end: the answer with its sources, or the decline that replaces it."""
    shown = reply.text if reply.retracted or reply.refused else reply.text_with_sources()
    return shown.strip() or texts.message("apology", lang)


class TelegramChannel:
    """Runs the bot on Telegram: polling or webhook, handlers, streaming answers."""

    name = "telegram"

    def __init__(self, cfg: TelegramConfig, conversation: ConversationConfig, engine: Engine,
                 store: LogStore) -> None:
        self.cfg, self.conversation, self.engine, self.store = cfg, conversation, engine, store
        self.limiter = SlidingWindow(cfg.rate_limit_per_minute)
        self._open: dict[object, tuple[int, int]] = {}  # placeholders of answers in progress
        self._secret = cfg.webhook_secret or secrets.token_urlsafe(32)
        self.app: Application = (
            ApplicationBuilder().token(cfg.token).base_url(cfg.base_url).concurrent_updates(True).build()
        )
        self.api = TelegramApi(self.app.bot)
        self._add_handlers()

    def _add_handlers(self) -> None:
        new = filters.UpdateType.MESSAGE
        commands: dict[str, Callable[[Update, Ctx], Awaitable[None]]] = {
            "start": self._on_start, "help": self._on_help, "ask": self._on_ask, "reset": self._on_reset,
            "sources": self._on_sources, "reload": self._on_reload, "stats": self._on_stats,
        }
        for command, callback in commands.items():
            self.app.add_handler(CommandHandler(command, callback, filters=new))
        self.app.add_handler(MessageHandler(new & filters.TEXT & ~filters.COMMAND, self._on_text))
        private = new & filters.ChatType.PRIVATE
        self.app.add_handler(MessageHandler(private & filters.COMMAND, self._on_unknown))
        other = private & ~filters.TEXT & ~filters.StatusUpdate.ALL
        self.app.add_handler(MessageHandler(other, self._on_other))
        self.app.add_error_handler(self._on_error)

    async def start(self) -> None:
        """Connect (getMe), start the handlers, then long polling or the webhook server."""
        await self.app.initialize()
        await self.app.start()
        with suppress(TelegramError):
            await self.app.bot.set_my_commands([BotCommand(c, d) for c, d in texts.COMMANDS.items()])
        updater = self.app.updater
        assert updater is not None
        if self.cfg.mode == "webhook":
            host, _, port = self.cfg.webhook_listen.rpartition(":")
            await updater.start_webhook(
                listen=host.strip("[]"), port=int(port), url_path=self.cfg.webhook_path.lstrip("/"),
                webhook_url=self.cfg.webhook_url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES,
            )
        else:
            await updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        logger.info("telegram: running as @%s (%s)", self.app.bot.username, self.cfg.mode)

    async def stop(self) -> None:
        """Stop fetching updates, finish the answers in progress, close the connections."""
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def resume(self, turn: PendingTurn) -> None:
        """Answer a logged message that never got its answer because the process stopped."""
        msg = Incoming(self.name, turn.chat_id, turn.user_id, turn.text, turn.message_id, turn.conversation)
        reply_to = int(turn.message_id) if (turn.message_id or "").isdigit() else None
        key = ("resume", turn.turn_id)
        try:
            await self._answer(int(turn.chat_id), reply_to, msg, texts.language(turn.text), key, turn.turn_id)
        except Exception:
            logger.exception("telegram: resuming turn %s failed", turn.turn_id)
            await self._apologize(int(turn.chat_id), texts.language(turn.text), self._open.pop(key, None))

    async def _on_text(self, update: Update, context: Ctx) -> None:
        msg = update.effective_message
        assert msg is not None and msg.text is not None
        question = msg.text if msg.chat.type == ChatType.PRIVATE else self._addressed(msg)
        if question is not None:
            await self._question(update, question)

    async def _on_ask(self, update: Update, context: Ctx) -> None:
        msg = update.effective_message
        assert msg is not None and msg.text is not None
        command = next(iter(msg.parse_entities([MessageEntityType.BOT_COMMAND]).values()), "")
        await self._question(update, msg.text[len(command):].strip())

    def _addressed(self, msg: Message) -> str | None:
        """The question in a group message meant for the bot, or None when it is not for the bot."""
        bot = self.app.bot
        replied = msg.reply_to_message
        to_bot = bool(replied and replied.from_user and replied.from_user.id == bot.id)
        text = msg.text or ""
        kinds = [MessageEntityType.MENTION, MessageEntityType.TEXT_MENTION]
        for entity, value in msg.parse_entities(kinds).items():
            if value.lower() == f"@{bot.username}".lower() or (entity.user and entity.user.id == bot.id):
                to_bot = True
                text = text.replace(value, " ")
        return " ".join(text.split()) if to_bot else None

    async def _question(self, update: Update, question: str) -> None:
        """Checks (allowlist, duplicate, empty, length, rate), then the streamed answer."""
        msg, user = update.effective_message, update.effective_user
        assert msg is not None and user is not None
        lang = texts.language(question) if question else self._lang(update)
        if not await self._gate(update, lang):
            return
        if not await self.store.claim(self.name, f"{msg.chat.id}:{msg.message_id}"):
            return  # the same message delivered again (e.g. refetched after a restart)
        refusal = self._check_question(question, str(user.id), lang)
        if refusal:
            await self._reply(update, refusal)
        else:
            group = msg.chat.type != ChatType.PRIVATE
            incoming = Incoming(self.name, str(msg.chat.id), str(user.id), question, str(msg.message_id),
                                f"{self.name}:{msg.chat.id}:{user.id}" if group else "")
            # Logged before anything is sent: if the process dies from here on, restart answers it.
            turn_id = await self.engine.accept(incoming)
            await self._answer(msg.chat.id, msg.message_id, incoming, lang, update.update_id, turn_id)

    def _check_question(self, question: str, user_id: str, lang: str) -> str | None:
        """Why the question is not answered (empty, too long, too fast), or None to answer it."""
        limit = self.conversation.max_question_chars
        if not question:
            return texts.message("empty", lang)
        if len(question) > limit:
            return texts.message("too_long", lang, limit=limit)
        wait = self.limiter.wait_seconds(user_id)
        return texts.message("rate_limited", lang, seconds=wait) if wait else None

    async def _answer(self, chat_id: int, reply_to: int | None, incoming: Incoming, lang: str, key: object,
                      resume_turn_id: int | None = None) -> None:
        """Placeholder at once, typing while waiting, throttled edits while streaming, then the final text."""
        placeholder = await self.api.send(chat_id, texts.message("thinking", lang), reply_to)
        self._open[key] = (chat_id, placeholder.message_id)
        group = placeholder.chat.type != ChatType.PRIVATE
        interval = max(self.cfg.edit_interval_s, GROUP_EDIT_INTERVAL_S) if group else self.cfg.edit_interval_s
        message_id = placeholder.message_id
        live = _Live(lambda t: self.api.edit(chat_id, message_id, t), placeholder.text or "", interval)
        typing = asyncio.create_task(self._typing(chat_id, live.started))
        reply: Reply | None = None
        draft = ""
        try:
            async for event in self.engine.stream(incoming, resume_turn_id=resume_turn_id):
                if isinstance(event, Queued):
                    live.show(texts.message("queued", lang, n=event.position))
                elif isinstance(event, Delta):
                    draft += event.text
                    live.started.set()
                    live.show(_preview(draft))
                elif isinstance(event, Retract):  # the draft is withdrawn; a new one follows
                    draft = ""
                    live.show(texts.message("thinking", lang))
                elif isinstance(event, Reply):
                    reply = event
        finally:
            typing.cancel()
            await live.close()
        if reply is None:
            raise RuntimeError("the engine's stream ended without a Reply")
        await self._deliver(chat_id, message_id, final_text(reply, lang), live.shown)
        self._open.pop(key, None)

    async def _typing(self, chat_id: int, started: asyncio.Event) -> None:
        """Show 'typing…' until the first piece of the answer arrives."""
        while not started.is_set():
            try:
                await self.app.bot.send_chat_action(chat_id, ChatAction.TYPING)
            except TelegramError as exc:
                logger.debug("telegram: chat action failed: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(started.wait(), TYPING_EVERY_S)

    async def _deliver(self, chat_id: int, message_id: int, text: str, shown: str) -> None:
        """The final answer: the first part into the placeholder, the rest as new messages."""
        parts = split_message(text)
        if parts[0] != shown:
            try:
                await self.api.edit(chat_id, message_id, parts[0])
            except BadRequest as exc:  # e.g. the placeholder was deleted: never drop the answer
                logger.warning("telegram: final edit failed (%s); sending a new message", exc)
                await self.api.send(chat_id, parts[0])
        for part in parts[1:]:
            await self.api.send(chat_id, part)

    async def _on_start(self, update: Update, context: Ctx) -> None:
        lang = self._lang(update)
        if await self._gate(update, lang):
            await self._reply(update, texts.message("greeting", lang) + " " + self._help(update, lang))

    async def _on_help(self, update: Update, context: Ctx) -> None:
        lang = self._lang(update)
        if await self._gate(update, lang):
            await self._reply(update, self._help(update, lang))

    def _help(self, update: Update, lang: str) -> str:
        about = self.engine.about(lang)
        return texts.help_text(lang, about, admin=self._is_admin(update), extra=texts.message("group_hint", lang))

    async def _on_reset(self, update: Update, context: Ctx) -> None:
        lang = self._lang(update)
        if await self._gate(update, lang):
            await self.engine.reset(self._key(update))
            await self._reply(update, texts.message("reset", lang))

    async def _on_sources(self, update: Update, context: Ctx) -> None:
        lang = self._lang(update)
        if not await self._gate(update, lang):
            return
        cites = await self.engine.sources(self._key(update))
        await self._reply(update, format_sources(cites) or texts.message("no_sources", lang))

    async def _on_reload(self, update: Update, context: Ctx) -> None:
        if await self._admin(update, "reload"):
            report = await self.engine.reload()
            await self._reply(update, report.summary())

    async def _on_stats(self, update: Update, context: Ctx) -> None:
        if not await self._admin(update, "stats"):
            return
        hours = 24.0
        channel = None
        for arg in context.args or []:
            try:
                hours = float(arg)
            except ValueError:
                channel = arg
        stats = await self.engine.stats(since_hours=hours, channel=channel)
        await self._reply(update, stats.summary())

    async def _on_unknown(self, update: Update, context: Ctx) -> None:
        msg = update.effective_message
        assert msg is not None and msg.text is not None
        command = msg.text.split()[0]
        await self._reply(update, texts.message("unknown_command", self._lang(update), command=command))

    async def _on_other(self, update: Update, context: Ctx) -> None:
        await self._reply(update, texts.message("text_only", self._lang(update)))

    def _is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and str(user.id) in self.cfg.admins

    def _allowed(self, update: Update) -> bool:
        """Empty allowlists admit everyone; otherwise the user or the chat must be listed. Admins always."""
        users, chats = self.cfg.allow_users, self.cfg.allow_chats
        if (not users and not chats) or self._is_admin(update):
            return True
        user, chat = update.effective_user, update.effective_chat
        return bool((user and str(user.id) in users) or (chat and str(chat.id) in chats))

    async def _gate(self, update: Update, lang: str) -> bool:
        """True when the user may use the bot; otherwise tell them so."""
        if self._allowed(update):
            return True
        await self._reply(update, texts.message("not_allowed", lang))
        return False

    async def _admin(self, update: Update, command: str) -> bool:
        """True for an admin; a non-admin gets a polite no and the attempt is logged."""
        if self._is_admin(update):
            return True
        chat, user = update.effective_chat, update.effective_user
        await self._reply(update, texts.message("admin_only", self._lang(update)))
        await self.store.log_event(self.name, str(chat.id if chat else ""), str(user.id if user else ""),
                                   "admin_denied", f"/{command}")
        return False

    def _lang(self, update: Update) -> str:
        user = update.effective_user
        return "zh" if user and (user.language_code or "").lower().startswith("zh") else "en"

    def _key(self, update: Update) -> str:
        """The conversation key: per chat in private, per member in groups."""
        chat, user = update.effective_chat, update.effective_user
        assert chat is not None and user is not None
        if chat.type == ChatType.PRIVATE:
            return f"{self.name}:{chat.id}"
        return f"{self.name}:{chat.id}:{user.id}"

    async def _on_error(self, update: object, context: Ctx) -> None:
        """The one error handler: the error to the log, a short apology to the user."""
        logger.error("telegram: handling an update failed", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_chat is None:
            return
        placeholder = self._open.pop(update.update_id, None)
        await self._apologize(update.effective_chat.id, self._lang(update), placeholder)

    async def _apologize(self, chat_id: int, lang: str, placeholder: tuple[int, int] | None) -> None:
        text = texts.message("apology", lang)
        try:
            if placeholder is not None:
                await self._deliver(chat_id, placeholder[1], text, "")
            else:
                await self.api.send(chat_id, text)
        except TelegramError:
            logger.exception("telegram: could not send the apology to chat %s", chat_id)

    async def _reply(self, update: Update, text: str) -> None:
        """Answer the update's message, split into several messages when long."""
        msg = update.effective_message
        assert msg is not None
        for i, part in enumerate(split_message(text)):
            await self.api.send(msg.chat.id, part, msg.message_id if i == 0 else None)
