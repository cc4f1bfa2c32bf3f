"""A Telegram message being streamed into: the latest wish shown, at most one edit per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

from telegram.error import TelegramError

logger = logging.getLogger(__name__)


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
