"""A Telegram message being streamed into: the placeholder (new, or the one a turn was shown in before),
then the latest wish shown, at most one edit per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from telegram.error import BadRequest, TelegramError

from bot.channels.telegram_api import TelegramApi
from bot.text import phrases

if TYPE_CHECKING:
    from bot.core.runtime import Turn

logger = logging.getLogger(__name__)


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
