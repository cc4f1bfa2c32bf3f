"""The Telegram adapter: python-telegram-bot updates -> `Incoming`; the core's events -> messages and edits.

It decides only what Telegram tells: who and where, admin by `telegram.admins`, and whether a group
message is meant for the bot (a command, a mention, a reply to the bot); the core decides the rest.
Answers stream into a placeholder message (edits throttled, never without a change), end with their
citations, and are split at paragraph or sentence boundaries past 4096 UTF-16 units (channels/common.py).
PTB's AIORateLimiter keeps within flood limits and waits out 429s; `TelegramApi` (telegram_api.py)
escapes HTML and retries network errors with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import nullcontext, suppress
from functools import partial
from typing import TYPE_CHECKING

from telegram import BotCommand, Message, Update
from telegram.constants import ChatType
from telegram.error import Forbidden, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.channels.common import fit_prefix, utf16_len
from bot.channels.telegram_api import TelegramApi
from bot.channels.telegram_live import (
    MAX_CHARS,
    LiveMessage,
    apologize,
    deliver,
    mark,
    notify,
    placeholder,
    show_typing,
    split_message,
)
from bot.channels.telegram_updates import TakenFirst, incoming
from bot.config import TelegramConfig
from bot.core.commands import menu
from bot.text import phrases
from bot.types import Choice, Delta, Incoming, Notice, Progress, Queued, Reply

if TYPE_CHECKING:
    from bot.core.runtime import Core, Turn

logger = logging.getLogger(__name__)
Ctx = ContextTypes.DEFAULT_TYPE

GROUP_EDIT_INTERVAL_S = 3.0  # Telegram allows about 20 messages a minute in a group; edits count
ALLOWED_UPDATES = ["message", "callback_query"]  # messages, and presses of the buttons under a notice
CAPTION_CHARS = 1024  # a photo's caption at most; a longer text follows as its own message
FLOOD_RETRIES = 10  # 429s waited out (as long as Telegram asks each time) before a call gives up


def _preview(draft: str) -> str:
    """The streamed draft as it fits one message."""
    if utf16_len(draft) <= MAX_CHARS:
        return draft
    return draft[: fit_prefix(draft, MAX_CHARS - 2, utf16_len)] + " …"


class TelegramChannel:
    """Runs the bot on Telegram: polling or webhook, one message handler, streaming answers."""

    name = "telegram"

    def __init__(self, cfg: TelegramConfig, core: Core) -> None:
        self.cfg, self.core = cfg, core
        self._open: dict[object, tuple[int, int]] = {}  # placeholders of answers in progress
        self._secret = cfg.webhook_secret or secrets.token_urlsafe(32)
        # PTB's rate limiter keeps under Telegram's flood limits and waits out a 429 (RetryAfter) itself.
        limiter = AIORateLimiter(max_retries=FLOOD_RETRIES)
        t = cfg.api_timeout_s
        # Webhook updates taken before their 200, by object: a repeat of the update id is another object.
        self._taken: dict[int, Turn | Exception | None] = {}
        builder = (ApplicationBuilder().token(cfg.token).base_url(cfg.base_url)
                   .base_file_url(file_url(cfg.base_url)).rate_limiter(limiter)
                   .connect_timeout(t).read_timeout(t).write_timeout(t).concurrent_updates(True))
        if cfg.mode == "webhook":
            builder = builder.update_queue(TakenFirst(self._take))
        self.app: Application = builder.build()
        self.api = TelegramApi(self.app.bot)
        self.app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & ~filters.StatusUpdate.ALL, self._on_message))
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_error_handler(self._on_error)

    async def start(self) -> None:
        """Connect (getMe), start the handlers, then long polling or the webhook server."""
        await self.app.initialize()
        await self.app.start()
        with suppress(TelegramError):
            await self.app.bot.set_my_commands([BotCommand(c, d) for c, d in menu().items()])
        updater = self.app.updater
        assert updater is not None
        if self.cfg.mode == "webhook":
            host, _, port = self.cfg.webhook_listen.rpartition(":")
            path, url = self.cfg.webhook_path.lstrip("/"), self.cfg.webhook_url
            await updater.start_webhook(listen=host.strip("[]"), port=int(port), url_path=path, webhook_url=url,
                                        secret_token=self._secret, allowed_updates=ALLOWED_UPDATES)
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

    async def resume(self, turn: Turn) -> None:
        """Answer a logged question that never got its answer because the process stopped."""
        msg = turn.incoming
        reply_to = int(msg.message_id) if (msg.message_id or "").isdigit() else None
        key = ("resume", turn.turn_id)
        try:
            await self._answer(int(msg.chat_id), reply_to, turn, key)
        except Exception:
            logger.exception("telegram: resuming turn %s failed", turn.turn_id)
            await apologize(self.api, int(msg.chat_id), turn.lang, self._open.pop(key, None))

    async def notify_admins(self, text: str, only: set[str]) -> int:
        """A message to those admins (the gaps digest); how many got it."""
        return await notify(self.api, [a for a in self.cfg.admins if a in only], text)

    # -- translating updates --

    def incoming(self, update: Update) -> Incoming | None:
        """The neutral message for an update (telegram_updates.incoming)."""
        return incoming(update, self.app.bot, self.cfg.admins)

    async def _take(self, update: Update) -> None:
        """Before the webhook acknowledges an update a handler will take, the core receives its message: a
        question is logged (or, the log taking no writes, refused plainly). An error is kept for the handler
        to raise, so the error handler apologises as it would have without the webhook."""
        checks = (h.check_update(update) for h in self.app.handlers.get(0, []))
        if not any(c is not None and c is not False for c in checks):  # as Application.process_update
            return
        incoming = self.incoming(update)
        try:
            self._taken[id(update)] = await self.core.receive(incoming) if incoming else None
        except Exception as exc:  # the handler raises it, for the error handler's apology
            self._taken[id(update)] = exc

    async def _turn_of(self, update: Update) -> Turn | None:
        """The core's turn for an update: taken before the webhook's 200 (its error raised here), or now."""
        if id(update) in self._taken:
            turn = self._taken.pop(id(update))
            if isinstance(turn, Exception):
                raise turn
            return turn
        incoming = self.incoming(update)
        return await self.core.receive(incoming) if incoming else None

    async def _on_message(self, update: Update, context: Ctx) -> None:
        turn = await self._turn_of(update)
        if turn is None:
            return
        chat_id, reply_to = int(turn.incoming.chat_id), int(turn.incoming.message_id or 0) or None
        if turn.is_question:
            await self._answer(chat_id, reply_to, turn, update.update_id)
        else:
            await self._notice(chat_id, reply_to, turn)

    async def _on_button(self, update: Update, context: Ctx) -> None:
        """A button press, run as its command; in a private chat its buttons go (a rating's stay), so once."""
        query = update.callback_query
        assert query is not None
        message = query.message if isinstance(query.message, Message) else None
        private = message is not None and message.chat.type == ChatType.PRIVATE
        if (query.data or "").startswith("/rate "):
            return await self._rated(update, message if private else None)
        with suppress(TelegramError):
            await query.answer()  # the client stops its spinner
            if message is not None and private:
                await message.edit_reply_markup(None)
        await self._on_message(update, context)

    async def _rated(self, update: Update, message: Message | None) -> None:
        """👍 / 👎: thanks in a toast, or why? in a message to reply to; marked in a private chat once recorded."""
        query, notice = update.callback_query, None
        assert query is not None
        try:
            turn = await self._turn_of(update)
            notice = await turn.reply() if turn is not None else None
        finally:  # answered whatever happens: the client's spinner stops
            with suppress(TelegramError):
                await query.answer(notice.text[:200] if isinstance(notice, Notice) and not notice.expects else None)
        if message is not None and notice is not None:  # a group's buttons are everyone's: left unmarked
            await mark(message, query.data or "")
        if turn is not None and isinstance(notice, Notice) and notice.expects is not None:
            sent = await self.api.send(int(turn.incoming.chat_id), notice.text, None, force_reply=True)
            await turn.shown(str(sent.message_id), notice)

    async def _notice(self, chat_id: int, reply_to: int | None, turn: Turn) -> None:
        """A command's reply: its progress in a message of its own, then the text (with buttons), or a
        picture with the text as its caption."""
        live: LiveMessage | None = None
        notice, progress_id = Notice(""), 0
        try:
            async for event in turn.events():
                if isinstance(event, Progress):
                    shown = phrases.progress(event, turn.lang)
                    if live is None:
                        sent = await self.api.send(chat_id, shown, reply_to)
                        progress_id = sent.message_id
                        live = LiveMessage(partial(self.api.edit, chat_id, progress_id), shown,
                                           self.cfg.edit_interval_s)
                    live.show(shown)
                elif isinstance(event, Notice):
                    notice = event
        finally:
            if live is not None:
                await live.close()
        if notice.image is not None:
            fits = utf16_len(notice.text) <= CAPTION_CHARS  # Telegram counts UTF-16 units
            photo = await self.api.send_photo(chat_id, notice.image, notice.text if fits else "", reply_to)
            shown_in = photo.message_id
            if not fits:
                shown_in = (await self._send(chat_id, notice.text, None)).message_id
        elif live is not None and len(split_message(notice.text)) == 1:
            await self.api.edit(chat_id, progress_id, notice.text, notice.choices)
            shown_in = progress_id
        else:
            force = notice.expects is not None and not notice.choices
            shown_in = (await self._send(chat_id, notice.text, reply_to, notice.choices, force_reply=force)).message_id
        if notice.expects is not None:  # a reply to that message is what the notice asked for
            await turn.shown(str(shown_in), notice)

    # -- rendering the core's events --

    async def _answer(self, chat_id: int, reply_to: int | None, turn: Turn, key: object) -> None:
        """Stream the turn's answer and tell the turn, once, whether it reached the user."""
        error: str | None = None
        final = cancelled = False
        try:
            await self._stream(chat_id, reply_to, turn, key)
        except asyncio.CancelledError:  # shutdown: the question stays pending and the restart answers it
            cancelled = True
            if (opened := self._open.pop(key, None)) is not None:
                with suppress(Exception):
                    await asyncio.wait_for(self.api.edit(*opened, phrases.message("restarting", turn.lang)), 2.0)
            raise
        except Forbidden as exc:  # blocked by the user, or the bot left the group: nothing reaches them now
            self._open.pop(key, None)
            logger.warning("telegram: chat %s refuses the bot's messages (%s); answer not delivered", chat_id, exc)
            error, final = exc.message, True
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"  # kept waiting: a restart sends it again
            raise
        finally:
            if not cancelled:
                with suppress(Exception) if error else nullcontext():
                    await turn.delivered(error, final=final)

    async def _stream(self, chat_id: int, reply_to: int | None, turn: Turn, key: object) -> None:
        """Placeholder at once, typing and progress while waiting, edits of checked text, then the final text."""
        lang = turn.lang
        message_id, shown, new = await placeholder(self.api, chat_id, reply_to, turn)
        self._open[key] = (chat_id, message_id)
        if new:
            await turn.placed(str(message_id))
        group = turn.incoming.group
        interval = max(self.cfg.edit_interval_s, GROUP_EDIT_INTERVAL_S) if group else self.cfg.edit_interval_s
        live = LiveMessage(lambda t: self.api.edit(chat_id, message_id, t), shown, interval)
        typing = asyncio.create_task(show_typing(self.app.bot, chat_id, live.started))
        reply: Reply | None = None
        draft = ""
        try:
            async for event in turn.events():
                if isinstance(event, Queued):
                    live.show(phrases.message("queued", lang, n=event.position))
                elif isinstance(event, Delta):
                    draft += event.text
                    live.started.set()
                    live.show(_preview(draft))
                elif isinstance(event, Progress) and not draft:
                    live.show(phrases.message(f"progress_{event.step}", lang))
                elif isinstance(event, Reply):
                    reply = event
        finally:
            typing.cancel()
            await live.close()
        if reply is None:
            raise RuntimeError("the core's events ended without a Reply")
        await deliver(self.api, chat_id, message_id, phrases.final_text(reply, lang), live.shown, reply.choices)
        self._open.pop(key, None)

    async def _send(self, chat_id: int, text: str, reply_to: int | None, choices: tuple[Choice, ...] = (), *,
                    force_reply: bool = False) -> Message:
        """A fixed reply, split into several messages when long; the first answers the user's message, the
        last carries the buttons (or opens a reply to itself); the last one sent."""
        parts = split_message(text)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            sent = await self.api.send(chat_id, part, reply_to if i == 0 else None, choices if last else (),
                                       force_reply=force_reply and last)
        return sent

    async def _on_error(self, update: object, context: Ctx) -> None:
        """The one error handler: the error to the log and the event log, a short apology to the user."""
        logger.error("telegram: handling an update failed", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_chat is None:
            return
        incoming = self.incoming(update)
        if incoming is not None:
            with suppress(Exception):
                await self.core.note(incoming, "reply_failed", type(context.error).__name__)
        lang = incoming.lang if incoming else "en"
        await apologize(self.api, update.effective_chat.id, lang, self._open.pop(update.update_id, None))

def file_url(base_url: str) -> str:
    """Where the Bot API serves files for a `base_url` (a self-hosted Bot API server serves both)."""
    root, _, last = base_url.rstrip("/").rpartition("/")
    return f"{root}/file/{last}" if last.startswith("bot") else base_url.rstrip("/") + "/file/bot"
