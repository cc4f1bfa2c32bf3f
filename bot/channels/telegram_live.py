"""A Telegram message being streamed into: the placeholder (new, or the one a turn was shown in before),
then the latest wish shown, at most one edit per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from bot.channels.common import split_text, utf16_len
from bot.channels.telegram_api import TelegramApi
from bot.text import phrases
from bot.types import Choice

if TYPE_CHECKING:
    from bot.core.runtime import Turn

logger = logging.getLogger(__name__)
MAX_CHARS = 4096  # Bot API limit per message, in UTF-16 code units after entity parsing
TYPING_EVERY_S = 4.5  # the typing indicator lasts about 5 s


async def placeholder(api: TelegramApi, chat_id: int, reply_to: int | None, turn: Turn) -> tuple[int, str, bool]:
    """The message an answer streams into, its text, and whether it is new (to be logged with the turn): the
    one shown for this turn before (by an instance that died, or before a restart), else a new one."""
    thinking = phrases.message("thinking", turn.lang)
    if turn.placeholder and turn.placeholder.isdigit():
        try:
            await api.edit(chat_id, int(turn.placeholder), thinking)
            return int(turn.placeholder), thinking, False
        except BadRequest as exc:  # deleted meanwhile, or too old to edit: a new one (not on a timeout)
            logger.info("telegram: turn %s's placeholder cannot be edited (%s)", turn.turn_id, exc)
    sent = await api.send(chat_id, thinking, reply_to)
    return sent.message_id, sent.text or "", True


def split_message(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Split text into messages of at most `limit` UTF-16 units, at a paragraph, line, sentence or word."""
    return split_text(text, limit, utf16_len)


async def deliver(api: TelegramApi, chat_id: int, message_id: int, text: str, shown: str,
                  choices: tuple[Choice, ...] = ()) -> None:
    """The final answer: the first part into the placeholder, the rest as new messages, the buttons (👍 / 👎)
    under the last."""
    parts = split_message(text)
    last = len(parts) - 1
    if parts[0] == shown and choices and last == 0:
        with suppress(BadRequest):  # the buttons only: a missing placeholder still shows the answer
            await api.buttons(chat_id, message_id, choices)
    elif parts[0] != shown:
        try:
            await api.edit(chat_id, message_id, parts[0], choices if last == 0 else ())
        except BadRequest as exc:  # e.g. the placeholder was deleted: never drop the answer
            logger.warning("telegram: final edit failed (%s); sending a new message", exc)
            await api.send(chat_id, parts[0], None, choices if last == 0 else ())
    for i, part in enumerate(parts[1:], 1):
        await api.send(chat_id, part, None, choices if i == last else ())


async def mark(message: Message, pressed: str) -> None:
    """The message's buttons with the pressed one marked ✓ (the others unmarked): a rating shown, still
    changeable."""
    keyboard = message.reply_markup.inline_keyboard if message.reply_markup else ()
    rows = [[InlineKeyboardButton(("✓ " if b.callback_data == pressed else "") + b.text.removeprefix("✓ "),
                                  callback_data=b.callback_data) for b in row] for row in keyboard]
    if not rows:
        return
    with suppress(TelegramError):
        await message.edit_reply_markup(InlineKeyboardMarkup(rows))


async def show_typing(bot: Bot, chat_id: int, started: asyncio.Event) -> None:
    """Show 'typing…' until the first piece of the answer arrives."""
    while not started.is_set():
        try:
            await bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            logger.debug("telegram: chat action failed: %s", exc)
        with suppress(TimeoutError):
            await asyncio.wait_for(started.wait(), TYPING_EVERY_S)


async def notify(api: TelegramApi, admins: list[str], text: str) -> int:
    """A message to each admin's private chat (its id is theirs); how many got it (one who never started
    the bot cannot be written to)."""
    sent = 0
    for admin in (a for a in admins if a.lstrip("-").isdigit()):
        try:
            for part in split_message(text):
                await api.send(int(admin), part)
            sent += 1
        except TelegramError as exc:
            logger.warning("telegram: could not message admin %s: %s", admin, exc)
    return sent


async def apologize(api: TelegramApi, chat_id: int, lang: str, placeholder: tuple[int, int] | None) -> None:
    """A short apology, in the answer's placeholder if one was shown."""
    text = phrases.message("apology", lang)
    try:
        if placeholder is not None:
            await deliver(api, chat_id, placeholder[1], text, "")
        else:
            await api.send(chat_id, text)
    except TelegramError:
        logger.exception("telegram: could not send the apology to chat %s", chat_id)


class LiveMessage:
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
