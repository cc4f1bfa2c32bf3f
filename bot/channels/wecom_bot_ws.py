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
from typing import TYPE_CHECKING, Any

from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from bot.channels.wecom_bot_reply import Handler, Undelivered, fit_bytes, markdown
from bot.errors import ConfigError
from bot.text import phrases

if TYPE_CHECKING:
    from bot.config import WecomBotConfig

log = logging.getLogger(__name__)

BAD_CREDENTIALS = 853000  # "invalid bot_id or secret" (seen in the wild; docs give no table)
CHUNK = 512 * 1024  # an upload chunk at most, before base64


class ConnectionLost(Exception):
    """The connection a frame needed is gone (or never answered)."""


class Refused(Exception):
    """WeCom answered a frame with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode


class LongConnection:
    """The connection's life (subscribe, heartbeat, reconnect) and its frames (requests and their acks)."""

    def __init__(self, cfg: WecomBotConfig, channel: Handler) -> None:
        self.cfg, self.channel = cfg, channel
        self.generation = 0  # counts subscribed connections: a req_id is good only on its own
        self._ws: WebSocketClientConnection | None = None
        self._online = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._stopping = self._kicked = False

    # -- life --

    async def start(self) -> None:
        """Connect and subscribe; refused credentials stop the start, an unreachable gateway does not."""
        self._first = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run())
        done, _ = await asyncio.wait({self._first}, timeout=self.cfg.ack_timeout_s + 10)
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
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                ws = await websocket_connect(self.cfg.gateway_url, connect_timeout=10)
            except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
                log.warning("wecom_bot: cannot reach %s: %s", self.cfg.gateway_url, exc)
            else:
                try:
                    if await self._subscribe(ws):
                        attempt = 0
                        await self._serve(ws)
                finally:
                    ws.close()
            if self._stopping:
                break
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """1 s doubling to `reconnect_max_s`, times a random 0.5-1 (instances do not retry in step); a kicked
        connection (another process took the bot over) waits the longest."""
        cap = self.cfg.reconnect_max_s
        base = cap if self._kicked else min(cap, 2.0 ** attempt)
        self._kicked = False
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
        if (code := int(ack.get("errcode", -1))) != 0:
            error = ConfigError(f"WeCom refused the AI bot's subscription ({code} {ack.get('errmsg', '')}); fix: "
                                "check WECOM_BOT_ID and WECOM_BOT_SECRET (the bot's API settings, 长连接).")
            log.error("%s", error)
            if self._first is not None and not self._first.done() and code == BAD_CREDENTIALS:
                self._first.set_exception(error)
                self._stopping = True
            return False
        return True

    async def _serve(self, ws: WebSocketClientConnection) -> None:
        """Be online on `ws` until it closes: callbacks dispatched, acks matched, heartbeat kept."""
        self.generation += 1
        self._ws, self._locks = ws, {}
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
        except (ValueError, KeyError, TypeError):
            log.warning("wecom_bot: unreadable frame ignored")
            return
        if not frame.get("cmd"):  # an acknowledgement
            if (fut := self._acks.pop(req_id, None)) is not None and not fut.done():
                fut.set_result(frame)
            return
        body = frame.get("body") or {}
        if (body.get("event") or {}).get("eventtype") == "disconnected_event":
            log.error("wecom_bot: another connection subscribed with this bot id and took over; two processes "
                      "must not share one bot (reconnecting after %.0f s)", self.cfg.reconnect_max_s)
            self._kicked = True
            return
        message = frame["cmd"] == "aibot_msg_callback"
        exchange = WsExchange(self, req_id if message else "", self.generation, _chat_of(body), req_id)
        if message:
            self.channel.spawn(self.channel.on_message(body, exchange))
        elif frame["cmd"] == "aibot_event_callback":
            self.channel.spawn(self.channel.on_event(body, exchange))

    async def _heartbeat(self, ws: WebSocketClientConnection) -> None:
        """A ping every `heartbeat_s`; two unanswered in a row close the connection (and so reconnect)."""
        missed = 0
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            try:
                await self.request("ping", None)
                missed = 0
            except (ConnectionLost, Refused) as exc:
                missed += 1
                log.warning("wecom_bot: heartbeat %d missed: %s", missed, exc)
                if missed >= 2:
                    ws.close()
                    return

    # -- frames --

    async def request(self, cmd: str, body: dict[str, Any] | None, req_id: str = "",
                      generation: int | None = None) -> dict[str, Any]:
        """Send one frame and wait for its ack; frames of one req_id go one at a time."""
        if generation is not None and generation != self.generation:
            raise ConnectionLost("the callback's connection is gone")
        req_id = req_id or _req_id(cmd)
        lock = self._locks.setdefault(req_id, asyncio.Lock())
        async with lock:
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
            except (WebSocketClosedError, TimeoutError) as exc:
                raise ConnectionLost(f"{cmd} not acknowledged ({type(exc).__name__})") from None
            finally:
                self._acks.pop(req_id, None)
        if (code := int(ack.get("errcode", 0))) != 0:
            raise Refused(code, str(ack.get("errmsg", "")))
        return ack

    async def push(self, chat_id: str, body: dict[str, Any]) -> None:
        """A new message to a chat (aibot_send_msg), once the connection is up (waits `offline_wait_s`)."""
        try:
            await asyncio.wait_for(self._online.wait(), self.cfg.offline_wait_s)
            await self.request("aibot_send_msg", {"chatid": chat_id, **body})
        except TimeoutError:
            raise Undelivered(f"offline for {self.cfg.offline_wait_s:.0f} s") from None
        except ConnectionLost as exc:
            raise Undelivered(str(exc)) from None
        except Refused as exc:
            raise Undelivered(f"aibot_send_msg refused: {exc}", final=True) from None

    async def push_image(self, chat_id: str, png: bytes, name: str = "chart.png") -> None:
        """A picture as a new message: uploaded in chunks, then sent by its media id."""
        chunks = [png[i:i + CHUNK] for i in range(0, len(png), CHUNK)] or [b""]
        try:
            init = await self.request("aibot_upload_media_init", {
                "type": "image", "filename": name, "total_size": len(png), "total_chunks": len(chunks),
                "md5": hashlib.md5(png).hexdigest()})  # noqa: S324 - the protocol's checksum, not security
            upload_id = init["body"]["upload_id"]
            for i, chunk in enumerate(chunks, 1):
                await self.request("aibot_upload_media_chunk", {
                    "upload_id": upload_id, "chunk_index": i, "base64_data": base64.b64encode(chunk).decode()})
            done = await self.request("aibot_upload_media_finish", {"upload_id": upload_id})
        except (ConnectionLost, Refused, KeyError, TypeError) as exc:
            raise Undelivered(f"the picture was not uploaded: {exc}") from None
        await self.push(chat_id, {"msgtype": "image", "image": {"media_id": done["body"]["media_id"]}})

    def resumed(self, chat_id: str, stream_id: str) -> StreamBubble:
        """A bubble for a turn without a live callback: its answer is sent as a new message."""
        return StreamBubble(WsExchange(self, "", -1, chat_id), stream_id)


def _req_id(cmd: str) -> str:
    return f"{cmd}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


def _chat_of(body: dict[str, Any]) -> str:
    """Where a new message to this callback's chat goes: the group, or the user in a private chat."""
    user = str((body.get("from") or {}).get("userid", ""))
    return str(body.get("chatid") or user) if body.get("chattype") == "group" else user


class WsExchange:
    """Answers to one callback over the connection it arrived on."""

    def __init__(self, conn: LongConnection, req_id: str, generation: int, chat_id: str, event_id: str = "") -> None:
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
        if self.began is None:
            self.began = time.monotonic()
        try:
            await self.x.conn.request("aibot_respond_msg", {"msgtype": "stream", "stream": {
                "id": self.stream_id, "finish": finish, "content": fit_bytes(content)}},
                self.x.req_id, self.x.generation)
        except (ConnectionLost, Refused) as exc:
            log.warning("wecom_bot: stream %s cannot be updated (%s); the answer goes as a new message",
                        self.stream_id, exc)
            self.alive = False
            return False
        self.shown = content
        return True

    def _late(self) -> bool:
        return self.began is not None and time.monotonic() - self.began > self.cfg.stream_deadline_s

    async def _run(self) -> None:
        while self.alive and not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set() or self.want == self.shown:
                continue
            if self._late():
                await self._close_late()
                return
            await self._frame(self.want, False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.cfg.stream_interval_s)

    async def _close_late(self) -> None:
        """WeCom ends a stream 6 minutes after it began: close it with a pointer to the message to come."""
        note = phrases.message("continued", phrases.language(self.want or self.shown))
        await self._frame(f"{self.shown}\n\n{note}".strip(), True)
        self.alive = False

    async def finish(self, text: str, image: bytes | None = None, card: dict[str, Any] | None = None) -> str:
        """The final frame (or a new message), then the picture and the buttons as messages of their own."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task
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
