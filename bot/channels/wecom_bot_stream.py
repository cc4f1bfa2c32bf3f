"""A reply over the AI bot's long connection: an exchange (how one callback is answered) and its stream
bubble, whose frames reuse the callback's req_id (and so die with the connection it came on)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from bot.channels.wecom_bot_reply import fit_bytes, markdown
from bot.text import phrases

if TYPE_CHECKING:
    from bot.config import WecomBotConfig

log = logging.getLogger(__name__)


class ConnectionLost(Exception):
    """The connection a frame needed is gone (or never answered)."""


class Refused(Exception):
    """WeCom answered a frame with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode


class Connection(Protocol):
    """What a reply needs of the long connection (wecom_bot_ws.LongConnection)."""

    cfg: WecomBotConfig

    async def request(self, cmd: str, body: dict[str, Any] | None, req_id: str = "",
                      generation: int | None = None) -> dict[str, Any]: ...
    async def push(self, chat_id: str, body: dict[str, Any]) -> None: ...
    async def push_image(self, chat_id: str, png: bytes) -> None: ...


class WsExchange:
    """Answers to one callback over the connection it arrived on (`req_id` "" : no stream, new messages only)."""

    def __init__(self, conn: Connection, req_id: str, generation: int, chat_id: str, event_id: str = "") -> None:
        self.conn, self.req_id, self.generation, self.chat_id = conn, req_id, generation, chat_id
        self.event_id = event_id  # an event's req_id takes only its own reply (welcome, card update), no stream

    def bubble(self, stream_id: str) -> StreamBubble:
        """A stream reply to a message callback (an event's: new messages only)."""
        return StreamBubble(self, stream_id)

    async def respond(self, body: dict[str, Any]) -> None:
        """A welcome (enter_chat) or a card update (a press), with the event's req_id."""
        cmd = "aibot_respond_update_msg" if "response_type" in body else "aibot_respond_welcome_msg"
        try:
            await self.conn.request(cmd, body, self.event_id, self.generation)
        except (ConnectionLost, Refused) as exc:
            log.warning("wecom_bot: %s failed: %s", cmd, exc)

    async def push(self, body: dict[str, Any]) -> None:
        """A new message to the callback's chat."""
        await self.conn.push(self.chat_id, body)


class StreamBubble:
    """A stream reply: the latest snapshot sent at most every `stream_interval_s`, each frame after the
    last one's ack; when the stream cannot go on (connection gone, WeCom's deadline near, a refusal) the
    finished answer is sent as a new message instead."""

    def __init__(self, exchange: WsExchange, stream_id: str) -> None:
        self.x, self.stream_id = exchange, stream_id
        self.feedback = ""  # sent with the first frame (WeCom takes it only there)
        self.cfg = exchange.conn.cfg
        self.want = self.shown = ""
        self.alive = bool(exchange.req_id)
        self.began: float | None = None
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._run()) if self.alive else None

    def show(self, text: str) -> None:
        """Ask for `text` to be the stream's content (coalesced: only the latest wish is sent)."""
        if text.strip() and text != self.want:
            self.want = text
            self._wake.set()

    async def _frame(self, content: str, finish: bool) -> bool:
        """One stream frame; False (and the stream given up) when it cannot be sent."""
        if not self.alive:
            return False
        stream: dict[str, Any] = {"id": self.stream_id, "finish": finish, "content": fit_bytes(content)}
        if self.began is None:
            self.began = time.monotonic()
            if self.feedback:
                stream["feedback"] = {"id": self.feedback}
        try:
            await self.x.conn.request("aibot_respond_msg", {"msgtype": "stream", "stream": stream},
                                      self.x.req_id, self.x.generation)
        except (ConnectionLost, Refused) as exc:
            log.warning("wecom_bot: stream %s cannot be updated (%s); the answer goes as a new message",
                        self.stream_id, exc)
            self.alive = False
            return False
        self.shown = content
        return True

    def _left(self) -> float | None:
        """Seconds until WeCom's deadline for this stream (None before its first frame)."""
        return None if self.began is None else self.began + self.cfg.stream_deadline_s - time.monotonic()

    def _late(self) -> bool:
        left = self._left()
        return left is not None and left <= 0

    async def _run(self) -> None:
        while self.alive and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):  # wakes for new text, or at the deadline
                await asyncio.wait_for(self._wake.wait(), self._left())
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._late():
                await self._close_late()
                return
            if self.want != self.shown:
                await self._frame(self.want, False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.cfg.stream_interval_s)

    async def _close_late(self) -> None:
        """WeCom ends a stream 6 minutes after it began: close it with a pointer to the message to come."""
        note = phrases.message("continued", phrases.language(self.want or self.shown))
        await self._frame(f"{self.shown}\n\n{note}".strip(), True)
        self.alive = False

    async def _halt(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def finish(self, text: str, image: bytes | None = None, card: dict[str, Any] | None = None) -> str:
        """The final frame (or a new message), then the picture and the buttons as messages of their own."""
        await self._halt()
        if self.alive and self._late():
            await self._close_late()
        elif self.alive and self.want != self.shown:  # checked text still waiting for its turn: shown first
            await self._frame(self.want, False)
        via = "stream"
        if not await self._frame(text, True):
            await self.x.push(markdown(text))
            via = "message"
        if image is not None:
            await self.x.conn.push_image(self.x.chat_id, image)
        if card is not None:
            await self.x.push({"msgtype": "template_card", "template_card": card})
        return via

    async def follow(self, text: str) -> None:
        """A part of a long answer past the stream's limit, as a new message."""
        await self.x.push(markdown(text))

    async def interrupted(self, text: str) -> None:
        """Shutdown mid-answer: the bubble closed with `text` (the restart answers as a new message)."""
        await self._halt()
        await self._frame(text, True)
