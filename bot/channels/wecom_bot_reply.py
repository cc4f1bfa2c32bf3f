"""What the WeCom AI bot's adapter and its two transports share: a reply bubble, an exchange (how one
callback is answered), the transport and handler interfaces, and WeCom's size limit."""

from __future__ import annotations

from typing import Any, Protocol

from bot.channels.common import fit_prefix, utf8_len

MAX_BYTES = 20480  # a stream's or a markdown message's content at most, in UTF-8 bytes


class Undelivered(Exception):
    """A reply could not reach the chat (`final`: it never will, e.g. WeCom refused it for good)."""

    def __init__(self, why: str, *, final: bool = False) -> None:
        super().__init__(why)
        self.final = final


class Bubble(Protocol):
    """One stream message being answered into: shows the latest snapshot, then the finished reply (and says
    how it went out: 'stream', or 'message' / 'response_url' when the stream could not take it)."""

    stream_id: str
    feedback: str  # WeCom's feedback id for the answer, sent with its first frame ("": none)

    def show(self, text: str) -> None: ...
    async def finish(self, text: str, image: bytes | None = None, card: dict[str, Any] | None = None) -> str: ...
    async def follow(self, text: str) -> None: ...
    async def interrupted(self, text: str) -> None: ...


class Exchange(Protocol):
    """How a transport answers one callback: a stream bubble (messages), a direct response (welcome, card
    update: within 5 s) and a new message to the chat."""

    def bubble(self, stream_id: str) -> Bubble: ...
    async def respond(self, body: dict[str, Any]) -> None: ...
    async def push(self, body: dict[str, Any]) -> None: ...


class Transport(Protocol):
    """A way to talk to WeCom: start, stop, and a bubble for a turn left unanswered by a restart."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def resumed(self, chat_id: str, stream_id: str, asked_at: float) -> Bubble: ...


class Handler(Protocol):
    """What a transport hands callbacks to (the adapter)."""

    def spawn(self, coro: Any) -> None: ...
    async def on_message(self, body: dict[str, Any], exchange: Exchange, fetch_key: bytes | None = None) -> bool: ...
    async def on_event(self, body: dict[str, Any], exchange: Exchange) -> None: ...
    async def first_seen(self, scope: str, key: str) -> bool: ...


def markdown(text: str) -> dict[str, Any]:
    """A markdown message body (content cut to WeCom's limit)."""
    return {"msgtype": "markdown", "markdown": {"content": fit_bytes(text)}}


def fit_bytes(text: str, limit: int = MAX_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    return text if utf8_len(text) <= limit else text[: fit_prefix(text, limit - 4, utf8_len)] + " …"
