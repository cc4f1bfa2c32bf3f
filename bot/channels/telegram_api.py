"""The Telegram Bot API calls the channel makes: HTML-escaped sends and edits, network errors retried.

Network errors are retried with doubling backoff; a BadRequest is never retried. Flood control (429) is
left to PTB's AIORateLimiter, which the application is built with.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from telegram import Bot, ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError

from bot.types import Choice

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TelegramApi:
    """sendMessage and editMessageText through one bot, in HTML parse mode with everything escaped."""

    def __init__(self, bot: Bot, network_attempts: int = 4, backoff_s: float = 0.5) -> None:
        self.bot = bot
        self.network_attempts = network_attempts
        self.backoff_s = backoff_s

    async def send(self, chat_id: int, text: str, reply_to: int | None = None,
                   choices: tuple[Choice, ...] = (), *, force_reply: bool = False) -> Message:
        """sendMessage, optionally as a reply to a message (sent anyway if that one is gone), with buttons, or
        opening a reply to itself in the user's client (`force_reply`: it asks for one)."""
        kw: dict[str, Any] = {"chat_id": chat_id, **_markup(choices)}
        if force_reply:
            kw["reply_markup"] = ForceReply(selective=True)
        if reply_to is not None:
            kw["reply_parameters"] = ReplyParameters(reply_to, allow_sending_without_reply=True)
        return await self._html_call(self.bot.send_message, text, **kw)

    async def send_photo(self, chat_id: int, png: bytes, caption: str, reply_to: int | None = None) -> Message:
        """sendPhoto of a PNG with a caption (at most 1024 characters: the caller sends longer text apart)."""
        kw: dict[str, Any] = {"chat_id": chat_id, "photo": InputFile(png, filename="chart.png")}
        if reply_to is not None:
            kw["reply_parameters"] = ReplyParameters(reply_to, allow_sending_without_reply=True)
        return await self._call(self.bot.send_photo, caption=caption, **kw)

    async def edit(self, chat_id: int, message_id: int, text: str, choices: tuple[Choice, ...] = ()) -> None:
        """editMessageText (buttons given, or none); Telegram's "message is not modified" counts as done."""
        try:
            await self._html_call(self.bot.edit_message_text, text, chat_id=chat_id, message_id=message_id,
                                  **_markup(choices))
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def buttons(self, chat_id: int, message_id: int, choices: tuple[Choice, ...]) -> None:
        """editMessageReplyMarkup: buttons under a message whose text stays; "not modified" counts as done."""
        try:
            await self._call(self.bot.edit_message_reply_markup, chat_id=chat_id, message_id=message_id,
                             **_markup(choices))
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def _html_call(self, fn: Callable[..., Awaitable[T]], text: str, **kw: Any) -> T:
        """Send `text` in HTML parse mode with everything escaped; plain text if Telegram cannot parse it."""
        try:
            return await self._call(fn, text=html.escape(text, quote=False), parse_mode=ParseMode.HTML, **kw)
        except BadRequest as exc:
            if "parse entities" not in str(exc).lower():
                raise
            logger.warning("telegram: HTML rejected (%s); sending plain text", exc)
            return await self._call(fn, text=text, **kw)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call the Bot API and retry network errors with backoff (429s are PTB's AIORateLimiter's job)."""
        failures = 0
        while True:
            try:
                return await fn(*args, **kwargs)
            except BadRequest:
                raise
            except NetworkError as exc:  # TimedOut included
                failures += 1
                if failures >= self.network_attempts:
                    raise
                logger.warning("telegram: network error (%s), retry %d", exc, failures)
                await asyncio.sleep(self.backoff_s * 2 ** (failures - 1))


def _markup(choices: tuple[Choice, ...]) -> dict[str, Any]:
    """An inline keyboard with one row of buttons; each button's data is the command it sends."""
    if not choices:
        return {}
    return {"reply_markup": InlineKeyboardMarkup([[InlineKeyboardButton(c.label, callback_data=c.command)
                                                   for c in choices]])}
