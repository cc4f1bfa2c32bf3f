"""The AI bot's long connection: one WebSocket dialled out to WeCom's gateway, no public address needed.

Frames are JSON `{cmd, headers: {req_id}, body}`; WeCom acknowledges each with the same req_id. The bot
subscribes with its id and secret, pings every `heartbeat_s`, and reconnects with doubling, jittered
delays (WeCom rate-limits subscribing). A reply reuses its callback's req_id, which dies with the
connection it came on: an answer whose stream can no longer be updated goes out as a new message
(`aibot_send_msg`) once the connection is back. Frames of one req_id go one at a time, each waiting for
its ack, as WeCom's own SDK does. Tornado (already the WeCom app's HTTP server) is the WebSocket client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from bot.channels.wecom_bot_reply import Handler, Undelivered
from bot.channels.wecom_bot_stream import ConnectionLost, Refused, StreamBubble, WsExchange
from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.config import WecomBotConfig

log = logging.getLogger(__name__)

BAD_CREDENTIALS = 853000  # "invalid bot_id or secret" (seen in the wild; docs give no table)
CHUNK = 512 * 1024  # an upload chunk at most, before base64
KICKED_MAX_S = 1800.0  # the longest wait after another process took the bot over
LASTING_S = 600.0  # a connection up this long forgets earlier kicks


class LongConnection:
    """The connection's life (subscribe, heartbeat, reconnect) and its frames (requests and their acks)."""

    def __init__(self, cfg: WecomBotConfig, channel: Handler) -> None:
        self.cfg, self.channel = cfg, channel
        self.generation = 0  # counts subscribed connections: a req_id is good only on its own
        self._ws: WebSocketClientConnection | None = None
        self._online = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # req_id -> its lock and how many use it
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._stopping = self._starting = self._kicked = False
        self._kicks = 0

    # -- life --

    async def start(self) -> None:
        """Connect and subscribe; refused credentials stop the start, an unreachable gateway does not."""
        self._first = asyncio.get_running_loop().create_future()
        self._starting = True
        self._runner = asyncio.create_task(self._run())
        try:
            done, _ = await asyncio.wait({self._first}, timeout=self.cfg.ack_timeout_s + 10)
        finally:
            self._starting = False
        if done and (exc := self._first.exception()) is not None:
            await self.stop()
            raise exc
        if not done:
            log.warning("wecom_bot: not connected to %s yet; still trying", self.cfg.gateway_url)

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        if self._ws is not None:
            self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.wait({self._runner}, timeout=self.cfg.ack_timeout_s)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            up = 0.0
            try:
                up = await self._connect_once()
            except Exception:  # a bug or an odd frame must not end the reconnects
                log.exception("wecom_bot: the connection failed")
            if self._stopping:
                break
            if up >= LASTING_S:
                self._kicks = 0
            attempt = 0 if up >= self.cfg.heartbeat_s else attempt + 1  # reset only by a connection that lasted
            await asyncio.sleep(self._backoff(attempt))

    async def _connect_once(self) -> float:
        """One connection: dialled, subscribed, served until it closes; how long it was up (0: never)."""
        try:
            ws = await websocket_connect(self.cfg.gateway_url, connect_timeout=10)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
            log.warning("wecom_bot: cannot reach %s: %s", self.cfg.gateway_url, exc)
            return 0.0
        try:
            # Checked after each wait: 3.11's wait_for can swallow a cancel that meets the subscribe ack.
            if self._stopping or not await self._subscribe(ws) or self._stopping:
                return 0.0
            began = time.monotonic()
            await self._serve(ws)
            return time.monotonic() - began
        finally:
            ws.close()

    def _backoff(self, attempt: int) -> float:
        """1 s doubling to `reconnect_max_s`, times 0.5-1 at random; after a kick, longer each time."""
        base = min(self.cfg.reconnect_max_s, 2.0 ** attempt)
        if self._kicked:
            self._kicked = False
            base = min(KICKED_MAX_S, self.cfg.reconnect_max_s * 2.0 ** self._kicks)
        return base * random.uniform(0.5, 1.0)

    async def _subscribe(self, ws: WebSocketClientConnection) -> bool:
        """Send aibot_subscribe and read its ack (nothing else arrives before it)."""
        req_id = _req_id("aibot_subscribe")
        frame = {"cmd": "aibot_subscribe", "headers": {"req_id": req_id},
                 "body": {"bot_id": self.cfg.bot_id, "secret": self.cfg.secret}}
        try:
            await ws.write_message(json.dumps(frame))
            while True:
                raw = await asyncio.wait_for(ws.read_message(), self.cfg.ack_timeout_s)
                if raw is None:
                    raise ConnectionLost("closed before the subscribe ack")
                ack = json.loads(raw)
                if (ack.get("headers") or {}).get("req_id") == req_id:
                    break
        except (TimeoutError, ConnectionLost, WebSocketClosedError, ValueError) as exc:
            log.warning("wecom_bot: subscribing failed: %s", exc or type(exc).__name__)
            return False
        if (code := _errcode(ack, -1)) != 0:
            error = ConfigError(f"WeCom refused the AI bot's subscription ({code} {ack.get('errmsg', '')}); fix: "
                                "check WECOM_BOT_ID and WECOM_BOT_SECRET (the bot's API settings, 长连接).")
            log.error("%s", error)
            if self._starting and self._first is not None and not self._first.done() and code == BAD_CREDENTIALS:
                self._first.set_exception(error)
                self._stopping = True
            return False
        return True

    async def _serve(self, ws: WebSocketClientConnection) -> None:
        """Be online on `ws` until it closes: callbacks dispatched, acks matched, heartbeat kept."""
        self.generation += 1
        self._ws = ws
        self._online.set()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        log.info("wecom_bot: connected to %s (connection %d)", self.cfg.gateway_url, self.generation)
        heartbeat = asyncio.create_task(self._heartbeat(ws))
        try:
            while (raw := await ws.read_message()) is not None:
                self._received(raw)
        finally:
            heartbeat.cancel()
            self._online.clear()
            self._ws = None
            for fut in self._acks.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost("the connection closed"))
            log.warning("wecom_bot: connection %d closed", self.generation)

    def _received(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
            req_id = str(frame["headers"]["req_id"])
            body = frame.get("body") or {}
            kind = (body.get("event") or {}).get("eventtype") if isinstance(body, dict) else None
            chat = _chat_of(body) if frame.get("cmd") else ""
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("wecom_bot: unreadable frame ignored")
            return
        if not frame.get("cmd"):  # an acknowledgement
            if (fut := self._acks.pop(req_id, None)) is not None and not fut.done():
                fut.set_result(frame)
        elif kind == "disconnected_event":
            self._kicked, self._kicks = True, self._kicks + 1
            log.error("wecom_bot: another connection subscribed with this bot id and took over; two processes must "
                      "not share one bot (retrying in up to %.0f s)", min(KICKED_MAX_S, 2.0 ** self._kicks *
                                                                         self.cfg.reconnect_max_s))
            if self._ws is not None:
                self._ws.close()  # the old socket may linger half-alive (heartbeats answered, no messages)
        elif frame["cmd"] == "aibot_msg_callback":
            self.channel.spawn(self.channel.on_message(body, WsExchange(self, req_id, self.generation, chat, req_id)))
        elif frame["cmd"] == "aibot_event_callback":
            self.channel.spawn(self.channel.on_event(body, WsExchange(self, "", self.generation, chat, req_id)))

    async def _heartbeat(self, ws: WebSocketClientConnection) -> None:
        """A ping every `heartbeat_s`; two unanswered in a row close the connection (and so reconnect)."""
        missed = 0
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            try:
                await self.request("ping", None)
                missed = 0
            except Exception as exc:  # noqa: BLE001 - any failed ping counts as missed
                missed += 1
                log.warning("wecom_bot: heartbeat %d missed: %s", missed, exc)
                if missed >= 2:
                    ws.close()
                    return

    # -- frames --

    async def request(self, cmd: str, body: dict[str, Any] | None, req_id: str = "",
                      generation: int | None = None) -> dict[str, Any]:
        """One frame and its ack (one req_id's frames in turn); no ack in `ack_timeout_s`: reconnect."""
        if generation is not None and generation != self.generation:
            raise ConnectionLost("the callback's connection is gone")
        req_id = req_id or _req_id(cmd)
        async with self._one_at_a_time(req_id):
            ws = self._ws
            if ws is None or (generation is not None and generation != self.generation):
                raise ConnectionLost("offline")
            frame: dict[str, Any] = {"cmd": cmd, "headers": {"req_id": req_id}}
            if body is not None:
                frame["body"] = body
            fut = asyncio.get_running_loop().create_future()
            self._acks[req_id] = fut
            try:
                await ws.write_message(json.dumps(frame, ensure_ascii=False))
                ack = await asyncio.wait_for(fut, self.cfg.ack_timeout_s)
            except WebSocketClosedError:
                raise ConnectionLost(f"{cmd}: the connection closed") from None
            except TimeoutError:
                log.warning("wecom_bot: %s not acknowledged in %.0f s; reconnecting", cmd, self.cfg.ack_timeout_s)
                ws.close()
                raise ConnectionLost(f"{cmd} not acknowledged") from None
            finally:
                self._acks.pop(req_id, None)
        if (code := _errcode(ack, 0)) != 0:
            raise Refused(code, str(ack.get("errmsg", "")))
        return ack

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, req_id: str) -> AsyncIterator[None]:
        """The lock of one req_id, kept only while someone holds or waits for it."""
        lock, users = self._locks.setdefault(req_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                self._locks.pop(req_id, None)

    async def push(self, chat_id: str, body: dict[str, Any]) -> None:
        """A new message to a chat (aibot_send_msg) once the connection is up."""
        await self._reliably(lambda: self.request("aibot_send_msg", {"chatid": chat_id, **body}), "a new message")

    async def push_image(self, chat_id: str, png: bytes) -> None:
        """A picture as a new message: uploaded in chunks, then sent by its media id."""

        async def send() -> None:
            media_id = await upload(self.request, png, "image", "chart.png")
            image = {"chatid": chat_id, "msgtype": "image", "image": {"media_id": media_id}}
            await self.request("aibot_send_msg", image)

        await self._reliably(send, "the picture")

    async def _reliably(self, work: Callable[[], Awaitable[object]], what: str) -> None:
        """`work` once online, again on the next connection if this one drops, for up to `offline_wait_s`."""
        # A drop after WeCom took the frame but before its ack sends it twice: rarer than a loss.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.offline_wait_s
        while True:
            try:
                await asyncio.wait_for(self._online.wait(), max(0.0, deadline - loop.time()))
                await work()
                return
            except TimeoutError:
                raise Undelivered(f"{what}: offline for {self.cfg.offline_wait_s:.0f} s") from None
            except ConnectionLost as exc:
                if loop.time() >= deadline:
                    raise Undelivered(f"{what}: {exc}") from None
                await asyncio.sleep(0.1)  # the connection is going down: wait for the next one
            except (Refused, KeyError, TypeError) as exc:
                raise Undelivered(f"{what} refused: {exc}", final=isinstance(exc, Refused)) from None

    def resumed(self, chat_id: str, stream_id: str, asked_at: float = 0.0) -> StreamBubble:
        """A bubble for a turn without a live callback: its answer is sent as a new message."""
        return StreamBubble(WsExchange(self, "", -1, chat_id), stream_id)


async def upload(request: Callable[..., Awaitable[dict[str, Any]]], data: bytes, kind: str, name: str) -> str:
    """A temporary media id for `data`: init, chunks of 512 KB, finish (each a request over the connection)."""
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    init = await request("aibot_upload_media_init", {
        "type": kind, "filename": name, "total_size": len(data), "total_chunks": len(chunks),
        "md5": hashlib.md5(data).hexdigest()})  # noqa: S324 - the protocol's checksum, not security
    upload_id = init["body"]["upload_id"]
    for i, chunk in enumerate(chunks, 1):
        await request("aibot_upload_media_chunk", {
            "upload_id": upload_id, "chunk_index": i, "base64_data": base64.b64encode(chunk).decode()})
    done = await request("aibot_upload_media_finish", {"upload_id": upload_id})
    return str(done["body"]["media_id"])


def _req_id(cmd: str) -> str:
    return f"{cmd}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


def _errcode(ack: dict[str, Any], default: int) -> int:
    try:
        return int(ack.get("errcode", default))
    except (TypeError, ValueError):
        return -1


def _chat_of(body: dict[str, Any]) -> str:
    """Where a new message to this callback's chat goes: the group, or the user in a private chat."""
    user = str((body.get("from") or {}).get("userid", ""))
    return str(body.get("chatid") or user) if body.get("chattype") == "group" else user
