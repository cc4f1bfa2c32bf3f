"""A loopback fake of WeCom's AI bot long-connection gateway (wss://openws.work.weixin.qq.com), as strict as the
protocol in docs/wecom-aibot-protocol.md §1.

A tornado server on 127.0.0.1: a websocket route "/" speaking the JSON frames {cmd, headers: {req_id}, body} and a
route "/files/<id>" serving the encrypted files users send. Every frame the bot sends is recorded (`frames`), and
answered {"headers": {"req_id"}, "errcode", "errmsg"[, "body"]}. The error codes are listed in wecom_bot_checks.
Written from the docs alone: it imports nothing from the product.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from tests.fakes.wecom_bot_checks import (
    ALREADY_SUBSCRIBED,
    BAD_CREDENTIALS,
    INVALID_FRAME,
    INVALID_REQ_ID,
    NOT_SUBSCRIBED,
    UNKNOWN_CMD,
    Reject,
    callback_head,
    encrypt_file,
    parse_frame,
)
from tests.fakes.wecom_bot_replies import Replies

BOT_ID = "aibot-test-0001"
BOT_SECRET = "aibot-secret-for-tests"
MSG_CALLBACK = "aibot_msg_callback"
EVENT_CALLBACK = "aibot_event_callback"
REPLY_CMDS = ("aibot_respond_msg", "aibot_respond_welcome_msg", "aibot_respond_update_msg")


@dataclass
class Frame:
    """One frame the bot sent, and the errcode the fake answered it with."""

    conn: int  # which connection (1, 2, ... in order of acceptance)
    cmd: str
    req_id: str
    body: dict[str, Any]
    errcode: int
    at: float


@dataclass
class Issued:
    """A req_id the fake issued with a callback; replies to it are checked against this."""

    conn: int
    kind: str  # "msg" for a message callback, else the event type
    at: float
    task_id: str = ""
    first_reply: float | None = None
    done: bool = False  # used up: no more replies accepted


class Socket(tornado.websocket.WebSocketHandler):
    """One websocket connection from the bot."""

    def initialize(self, gw: FakeGateway) -> None:
        self.gw = gw
        self.conn = 0
        self.alive = False
        self.subscribed = False
        self.issued: dict[str, Issued] = {}
        self.watchdog: asyncio.TimerHandle | None = None

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        self.gw._opened(self)

    def on_message(self, message: str | bytes) -> None:
        self.gw._on_frame(self, message)

    def on_close(self) -> None:
        self.gw._closed(self)

    def send(self, frame: dict[str, Any]) -> None:
        """Write one JSON frame; AssertionError when the connection is closed."""
        try:
            fut = self.write_message(json.dumps(frame, ensure_ascii=False))
        except tornado.websocket.WebSocketClosedError as exc:
            raise AssertionError(f"connection {self.conn} is closed") from exc
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a write that fails later is not an error

    def abort(self) -> None:
        """Close the TCP stream without a close frame, as a network failure does."""
        ws = self.ws_connection
        if ws is not None and ws.stream is not None:  # type: ignore[attr-defined]
            ws.stream.close()  # type: ignore[attr-defined]
        else:
            self.close()


class _FileGet(tornado.web.RequestHandler):
    def initialize(self, gw: FakeGateway) -> None:
        self.gw = gw

    def get(self, file_id: str) -> None:
        self.gw.downloads.append(file_id)
        entry = self.gw._files.get(file_id)
        if entry is None or time.monotonic() - entry[1] > self.gw.file_ttl_s:
            self.set_status(404)
            self.finish({"errcode": 40007, "errmsg": "file expired or unknown"})
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(entry[0])


class FakeGateway(Replies):
    """WeCom's long-connection gateway on 127.0.0.1, recording every frame and enforcing the documented rules."""

    def __init__(self, bot_id: str = BOT_ID, secret: str = BOT_SECRET, *, stream_expiry_s: float = 360.0,
                 event_deadline_s: float = 5.0, heartbeat_timeout_s: float = 90.0) -> None:
        super().__init__()
        self.bot_id = bot_id
        self.secret = secret
        self.stream_expiry_s = stream_expiry_s
        self.event_deadline_s = event_deadline_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.file_ttl_s = 300.0
        self.frames: list[Frame] = []
        self.errors: list[Frame] = []
        self.subscriptions = 0
        self.sent: list[dict[str, Any]] = []  # callback frames the fake sent, with "conn" added
        self.disconnects: list[tuple[int, str]] = []  # (conn, why): drop, kick, replaced, heartbeat, client, stop
        self.downloads: list[str] = []  # file ids fetched from /files/
        # Network faults on cue: req_id -> the n-th frame of it on which the connection dies unanswered; req_ids
        # whose frames are taken but never acknowledged (a stalled gateway).
        self.drop_on: dict[str, int] = {}
        self.unacked: set[str] = set()
        self.port = 0
        self._files: dict[str, tuple[bytes, float]] = {}
        self._bodies: dict[str, dict[str, Any]] = {}  # msgid -> message callback body
        self._req_msgid: dict[str, str] = {}
        self._sockets: list[Socket] = []
        self._current: Socket | None = None
        self._accepted = 0
        self._server: tornado.httpserver.HTTPServer | None = None

    # ---- lifecycle ----

    async def start(self, port: int = 0) -> None:
        """Listen on a loopback port (a free one by default)."""
        app = tornado.web.Application([
            (r"/", Socket, {"gw": self}),
            (r"/files/([0-9a-f]+)", _FileGet, {"gw": self}),
        ], log_function=lambda handler: None)
        sockets = tornado.netutil.bind_sockets(port, "127.0.0.1", family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        for sock in list(self._sockets):
            self._note_close(sock, "stop")
            if sock.watchdog:
                sock.watchdog.cancel()
            sock.abort()
        if self._server:
            self._server.stop()
            await self._server.close_all_connections()

    @property
    def url(self) -> str:
        """The gateway URL the bot is configured with."""
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def connected(self) -> bool:
        """A subscribed connection is open now."""
        sock = self._current
        return sock is not None and sock.alive and sock.subscribed

    async def wait_subscribed(self, n: int = 1, timeout: float = 10.0) -> None:
        """Wait until `n` subscribes have succeeded in all."""
        await self.wait_for(lambda: self.subscriptions >= n, timeout, f"{n} subscription(s)")

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        """Poll `predicate` until it is true; AssertionError naming `what` on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
            await asyncio.sleep(0.01)

    async def drop(self) -> None:
        """Close the current connection abruptly, with no disconnected_event (a network failure)."""
        sock = self._need_current()
        self._note_close(sock, "drop")
        sock.abort()
        await self.wait_for(lambda: not sock.alive, 5.0, "the dropped connection to close")

    async def kick(self) -> None:
        """Send disconnected_event on the current connection, then close it."""
        self._kick(self._need_current(), "kick")
        await asyncio.sleep(0)

    # ---- what the bot receives ----

    def message(self, user: str, text: str, *, chat_id: str | None = None, msgid: str | None = None,
                msgtype: str = "text", **extra: Any) -> str:
        """Send a user's message (aibot_msg_callback) on the current connection; returns its req_id."""
        sock = self._need_current()
        body = self._head(user, chat_id, msgtype, msgid)
        if msgtype in ("text", "voice"):
            body[msgtype] = {"content": text}
        body.update(extra)
        self._bodies[body["msgid"]] = body
        self._chats.add(chat_id or user)
        return self._callback(sock, MSG_CALLBACK, body)

    def redeliver(self, msgid: str) -> str:
        """The same message again with a new req_id on the current connection; returns the req_id."""
        return self._callback(self._need_current(), MSG_CALLBACK, dict(self._bodies[msgid]))

    def msgid_of(self, req_id: str) -> str:
        """The msgid of the callback sent with `req_id`."""
        return self._req_msgid[req_id]

    def file(self, user: str, name: str, data: bytes) -> str:
        """Serve `data` encrypted under a fresh key and send a single-chat file message for it; returns the req_id."""
        key = os.urandom(32)
        file_id = secrets.token_hex(8)
        self._files[file_id] = (encrypt_file(key, data), time.monotonic())
        part = {"url": f"http://127.0.0.1:{self.port}/files/{file_id}", "aeskey": base64.b64encode(key).decode(),
                "filename": name}
        return self.message(user, "", msgtype="file", file=part)

    def event(self, user: str, eventtype: str, *, chat_id: str | None = None, **fields: Any) -> str:
        """Send an aibot_event_callback on the current connection; returns its req_id."""
        return self._event(self._need_current(), user, eventtype, chat_id, fields)

    def click(self, user: str, task_id: str, event_key: str, *, chat_id: str | None = None) -> str:
        """A button click on a button_interaction card; returns the event's req_id."""
        card_event = {"card_type": "button_interaction", "event_key": event_key, "task_id": task_id}
        return self.event(user, "template_card_event", chat_id=chat_id, template_card_event=card_event)

    def feedback(self, user: str, feedback_id: str, kind: int, *, content: str = "", reasons: tuple[int, ...] = (),
                 chat_id: str | None = None) -> str:
        """A reader's 👍 (1), 👎 (2, with what they typed and picked in WeCom's dialog) or withdrawal (3) of an
        answer whose first stream frame carried `feedback_id` (WeCom shows no buttons under one without)."""
        sent = [s for f in self.frames if f.cmd == "aibot_respond_msg" and f.errcode == 0
                for s in [f.body.get("stream") or {}] if (s.get("feedback") or {}).get("id") == feedback_id]
        assert sent, f"no answer carried feedback id {feedback_id!r}: WeCom would show no 👍 / 👎 under it"
        event: dict[str, Any] = {"id": feedback_id, "type": kind}
        if kind == 2:  # the reason and the reasons picked come with a 👎 only
            event.update(content=content, inaccurate_reason_list=list(reasons))
        return self.event(user, "feedback_event", chat_id=chat_id, feedback_event=event)

    # ---- what the bot sent ----

    def replies(self, req_id: str) -> list[Frame]:
        """Every accepted reply frame (respond/welcome/update) carrying `req_id`."""
        return [f for f in self.frames if f.req_id == req_id and f.errcode == 0 and f.cmd in REPLY_CMDS]

    def streams(self, req_id: str) -> list[dict[str, Any]]:
        """The stream dicts of the accepted aibot_respond_msg frames for `req_id`, in order."""
        return [f.body["stream"] for f in self.replies(req_id)
                if f.cmd == "aibot_respond_msg" and f.body.get("msgtype") == "stream"]

    def pushes(self, chatid: str) -> list[dict[str, Any]]:
        """The bodies of accepted aibot_send_msg frames to `chatid`, in order."""
        return [f.body for f in self.frames
                if f.cmd == "aibot_send_msg" and f.errcode == 0 and f.body.get("chatid") == chatid]

    # ---- internals: connections ----

    def _need_current(self) -> Socket:
        if not self.connected or self._current is None:
            raise AssertionError("no subscribed connection to the fake gateway")
        return self._current

    def _opened(self, sock: Socket) -> None:
        self._accepted += 1
        sock.conn = self._accepted
        sock.alive = True
        self._sockets.append(sock)
        self._arm_watchdog(sock)

    def _closed(self, sock: Socket) -> None:
        self._note_close(sock, "client")
        sock.alive = False
        if sock.watchdog:
            sock.watchdog.cancel()
        if sock in self._sockets:
            self._sockets.remove(sock)

    def _note_close(self, sock: Socket, why: str) -> None:
        if sock.alive and all(conn != sock.conn for conn, _ in self.disconnects):
            self.disconnects.append((sock.conn, why))
        if self._current is sock:
            self._current = None

    def _arm_watchdog(self, sock: Socket) -> None:
        if sock.watchdog:
            sock.watchdog.cancel()
        sock.watchdog = asyncio.get_running_loop().call_later(self.heartbeat_timeout_s, self._heartbeat_lost, sock)

    def _heartbeat_lost(self, sock: Socket) -> None:
        if sock.alive:
            self._note_close(sock, "heartbeat")
            sock.close(1000, "heartbeat timeout")

    def _kick(self, sock: Socket, why: str) -> None:
        self._event(sock, "", "disconnected_event", None, {})
        self._note_close(sock, why)
        sock.close(1000, "disconnected")

    def _head(self, user: str, chat_id: str | None, msgtype: str, msgid: str | None = None) -> dict[str, Any]:
        return callback_head(self.bot_id, user, chat_id, msgtype, msgid)

    def _event(self, sock: Socket, user: str, eventtype: str, chat_id: str | None, fields: dict[str, Any]) -> str:
        body = self._head(user, chat_id, "event")
        body["create_time"] = int(time.time())
        body["event"] = {"eventtype": eventtype, **fields}
        if not user:  # disconnected_event comes from no one
            del body["from"]
        return self._callback(sock, EVENT_CALLBACK, body)

    def _callback(self, sock: Socket, cmd: str, body: dict[str, Any]) -> str:
        req_id = f"{cmd}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"
        kind = "msg" if cmd == MSG_CALLBACK else body["event"]["eventtype"]
        task_id = ((body.get("event") or {}).get("template_card_event") or {}).get("task_id", "")
        sock.issued[req_id] = Issued(sock.conn, kind, time.monotonic(), task_id)
        self._req_msgid[req_id] = body["msgid"]
        frame = {"cmd": cmd, "headers": {"req_id": req_id}, "body": body}
        self.sent.append({"conn": sock.conn, **frame})
        sock.send(frame)
        return req_id

    # ---- internals: frames from the bot ----

    def _on_frame(self, sock: Socket, raw: str | bytes) -> None:
        cmd, req_id, body, problem = parse_frame(raw)
        if self.drop_on.get(req_id) == 1 + sum(f.req_id == req_id for f in self.frames):
            del self.drop_on[req_id]
            self._note_close(sock, "drop")
            sock.abort()  # lost with the connection: neither taken nor answered
            return
        result: dict[str, Any] | None = None
        try:
            if problem:
                raise Reject(INVALID_FRAME, problem)
            result = self._dispatch(sock, cmd, req_id, body)
            code, msg = 0, "ok"
        except Reject as rej:
            code, msg = rej.code, rej.msg
        frame = Frame(sock.conn, cmd, req_id, body, code, time.monotonic())
        self.frames.append(frame)
        if code:
            self.errors.append(frame)
        answer: dict[str, Any] = {"headers": {"req_id": req_id}, "errcode": code, "errmsg": msg}
        if result is not None:
            answer["body"] = result
        if sock.alive and req_id not in self.unacked:
            sock.send(answer)

    def _dispatch(self, sock: Socket, cmd: str, req_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        handlers: dict[str, Callable[[Socket, str, dict[str, Any]], dict[str, Any] | None]] = {
            "aibot_subscribe": self._subscribe, "ping": self._ping, **self.reply_handlers()}
        if cmd not in handlers:
            raise Reject(UNKNOWN_CMD, f"unknown cmd {cmd}")
        if cmd != "aibot_subscribe" and not sock.subscribed:
            raise Reject(NOT_SUBSCRIBED, "not subscribed")
        return handlers[cmd](sock, req_id, body)

    def _subscribe(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        if sock.subscribed:
            raise Reject(ALREADY_SUBSCRIBED, "already subscribed")
        if body.get("bot_id") != self.bot_id or body.get("secret") != self.secret:
            raise Reject(BAD_CREDENTIALS, "invalid bot_id or secret")
        old = self._current
        sock.subscribed = True
        self.subscriptions += 1
        self._current = sock
        if old is not None and old is not sock and old.alive:
            self._kick(old, "replaced")

    def _ping(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        self._arm_watchdog(sock)

    def _issued_for(self, sock: Socket, req_id: str, kind: str) -> Issued:
        issued = sock.issued.get(req_id)
        if issued is None or issued.kind != kind or issued.done:
            raise Reject(INVALID_REQ_ID, "invalid req_id")
        return issued
