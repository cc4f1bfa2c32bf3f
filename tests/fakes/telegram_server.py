"""A loopback fake of the Telegram Bot API that python-telegram-bot itself talks to.

It is a real HTTP server (tornado, on 127.0.0.1, random port) that implements the methods the bot
calls, keeps chat state (message ids, the current text of each message as a user would see it),
records every request for the tests to assert on, and fails calls on demand (429 with
`retry_after`, HTML parse errors, 502s). It renders `parse_mode=HTML` strictly: an unescaped
`<`, `>` or `&` is a parse error, as the Bot API documents.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.fakes.telegram_markup import _PARSE, ApiError, _entities, render_html, utf16_len
from tests.fakes.telegram_media import FileHandler, MediaApi, buttons_of

MAX_TEXT = 4096
_STRING_PARAMS = {"text", "parse_mode", "action", "url", "secret_token", "description", "ip_address", "caption",
                  "callback_query_id"}


@dataclass
class Call:
    """One request the bot made: the method, its decoded parameters, the status we answered."""

    method: str
    params: dict[str, Any]
    status: int = 200
    at: float = 0.0
    error: str = ""


@dataclass
class Fault:
    """Fail the next `count` calls of a method (after letting `skip` calls through)."""

    kind: str  # "retry_after" | "parse" | "server" | "blocked" | "hang" (no reply for `retry_after` s, then 504)
    count: int
    skip: int = 0
    retry_after: float = 1


@dataclass
class Msg:
    """A message in a chat as the server keeps it."""

    message_id: int
    chat: dict[str, Any]
    sender: dict[str, Any]
    text: str
    date: int
    from_bot: bool
    parse_mode: str | None = None
    reply_to: int | None = None
    edits: int = 0
    entities: list[dict[str, Any]] = field(default_factory=list)
    buttons: list[list[dict[str, Any]]] = field(default_factory=list)  # an inline keyboard
    photo: bytes | None = None  # a photo message: `text` is its caption
    document: dict[str, Any] | None = None  # a file a user sent: `text` is its caption

    def as_api(self) -> dict[str, Any]:
        """The Bot API `Message` object."""
        out: dict[str, Any] = {"message_id": self.message_id, "date": self.date, "chat": self.chat,
                               "from": self.sender}
        if self.photo is not None or self.document is not None:
            if self.text:
                out["caption"] = self.text
        else:
            out["text"] = self.text
        if self.photo is not None:
            out["photo"] = [{"file_id": f"photo{self.message_id}", "file_unique_id": f"u{self.message_id}",
                             "width": 800, "height": 600, "file_size": len(self.photo)}]
        if self.document is not None:
            out["document"] = self.document
        if self.buttons:
            out["reply_markup"] = {"inline_keyboard": self.buttons}
        if self.entities:
            out["entities"] = self.entities
        if self.edits:
            out["edit_date"] = self.date
        return out


class FakeTelegram(MediaApi):
    """The fake Bot API server. Use `await start()`, point the bot at `base_url`, `await stop()`."""

    def __init__(self, token: str = "123456:TEST-TOKEN", *, username: str = "article_test_bot",
                 bot_id: int = 777000) -> None:
        self.token = token
        self.bot_user = {"id": bot_id, "is_bot": True, "first_name": "Article Bot", "username": username,
                         "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False}
        self.calls: list[Call] = []
        self.messages: dict[int, Msg] = {}
        self.updates: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._ids = itertools.count(100)
        self._update_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._closing = asyncio.Event()
        self._server: HTTPServer | None = None
        self.port = 0
        self._media_init()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on 127.0.0.1 at a free port."""
        app = Application([(r"/bot([^/]+)/([A-Za-z]+)", _Handler, {"fake": self}),
                           (r"/file/bot([^/]+)/(.+)", FileHandler, {"fake": self})], log_function=_quiet)
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Close the listener and every open connection (long polls included)."""
        self._closing.set()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    @property
    def base_url(self) -> str:
        """What python-telegram-bot's `base_url` should be (the token is appended by the library)."""
        return f"http://127.0.0.1:{self.port}/bot"

    # ---- test controls ---------------------------------------------------------------------------
    def fail_next(self, method: str, count: int = 1, *, kind: str = "retry_after", retry_after: float = 1,
                  skip: int = 0) -> None:
        """Fail the next `count` calls of `method` after `skip` successful ones."""
        self._faults.setdefault(method, []).append(Fault(kind, count, skip, retry_after))

    def clear_faults(self) -> None:
        """Telegram works again: no more injected failures."""
        self._faults.clear()

    def user(self, user_id: int, *, first_name: str = "Ann", language_code: str = "en") -> dict[str, Any]:
        """A Bot API `User` for a person."""
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}

    def private_chat(self, user_id: int) -> dict[str, Any]:
        """The private chat with a user (its id is the user's)."""
        return self.chats.setdefault(user_id, {"id": user_id, "type": "private", "first_name": "Ann"})

    def group_chat(self, chat_id: int, title: str = "Readers") -> dict[str, Any]:
        """A supergroup (negative id)."""
        return self.chats.setdefault(chat_id, {"id": chat_id, "type": "supergroup", "title": title})

    def user_says(self, chat: dict[str, Any], user_id: int, text: str, *, reply_to: int | None = None,
                  language_code: str = "en") -> int:
        """A person sends `text` in `chat`; queue the update (`updates[-1]`), return the message id."""
        sender = self.user(user_id, language_code=language_code)
        msg = Msg(next(self._ids), chat, sender, text, int(time.time()), from_bot=False, reply_to=reply_to,
                  entities=_entities(text))
        self.messages[msg.message_id] = msg
        self.push_update({"message": self._message_json(msg)})
        return msg.message_id

    def private(self, user_id: int, text: str, **kw: Any) -> int:
        """A person writes to the bot in private."""
        return self.user_says(self.private_chat(user_id), user_id, text, **kw)

    def group(self, chat_id: int, user_id: int, text: str, **kw: Any) -> int:
        """A person writes in a group the bot is in."""
        return self.user_says(self.group_chat(chat_id), user_id, text, **kw)

    def push_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (an `update_id` is added) for getUpdates or `deliver_webhook`."""
        update = {"update_id": next(self._update_ids), **payload}
        self.updates.append(update)
        self._new_update.set()
        return update

    async def deliver_webhook(self, update: dict[str, Any], *, secret: str | None = None) -> int:
        """POST an update to the registered webhook as Telegram does; returns the HTTP status."""
        url = self.webhook["url"]
        token = self.webhook.get("secret_token") if secret is None else secret
        headers = {"X-Telegram-Bot-Api-Secret-Token": token} if token else {}
        async with httpx.AsyncClient(trust_env=False) as client:
            resp = await client.post(url, json=update, headers=headers, timeout=5)
        return resp.status_code

    # ---- inspection ------------------------------------------------------------------------------
    def calls_of(self, method: str) -> list[Call]:
        """The recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    def bot_messages(self, chat_id: int) -> list[Msg]:
        """The bot's messages in a chat, oldest first."""
        return sorted((m for m in self.messages.values() if m.from_bot and m.chat["id"] == chat_id),
                      key=lambda m: m.message_id)

    def bot_texts(self, chat_id: int) -> list[str]:
        """What a user sees from the bot in a chat now, one string per message."""
        return [m.text for m in self.bot_messages(chat_id)]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Wait until `predicate()` is true; fail the test with AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s; calls: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.01)

    # ---- the API ---------------------------------------------------------------------------------
    async def _fault(self, method: str) -> None:
        for fault in self._faults.get(method, []):
            if fault.count <= 0:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return
            fault.count -= 1
            if fault.kind == "retry_after":
                raise ApiError(429, f"Too Many Requests: retry after {fault.retry_after:g}",
                               {"retry_after": fault.retry_after})
            if fault.kind == "blocked":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if fault.kind == "hang":  # a stalled gateway: the client gives up first, nothing is done
                await asyncio.sleep(fault.retry_after)
                raise ApiError(504, "Gateway Timeout")
            if fault.kind == "parse":
                raise ApiError(400, f"{_PARSE}: Unsupported start tag (injected)")
            raise ApiError(502, "Bad Gateway")

    async def call(self, method: str, params: dict[str, Any], on_close: asyncio.Event) -> Any:
        """Run one API method; raises ApiError for error replies."""
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            raise ApiError(404, "Not Found: method not found")
        await self._fault(method)
        return await handler(params, on_close)

    async def _api_getMe(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        return self.bot_user

    async def _api_setMyCommands(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        return True

    async def _api_deleteWebhook(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        self.webhook = {}
        return True

    async def _api_setWebhook(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        self.webhook = dict(p)
        return True

    async def _api_getWebhookInfo(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        return {"url": self.webhook.get("url", ""), "has_custom_certificate": False,
                "pending_update_count": len(self.updates)}

    async def _api_getUpdates(self, p: dict[str, Any], on_close: asyncio.Event) -> Any:
        if self.webhook.get("url"):
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(p.get("offset") or 0)
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + float(p.get("timeout") or 0)
        while not self.updates and time.monotonic() < deadline and not on_close.is_set():
            self._new_update.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._new_update, on_close, self._closing)]
            left = deadline - time.monotonic()
            await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        limit = int(p.get("limit") or 100)
        return self.updates[:limit]

    async def _api_sendChatAction(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        return True

    async def _api_sendMessage(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        chat_id = int(p["chat_id"])
        text = self._render(p)
        reply = p.get("reply_parameters") or {}
        chat = self.chats.get(chat_id) or {"id": chat_id, "type": "private", "first_name": "Ann"}
        reply_to = reply.get("message_id") or p.get("reply_to_message_id")
        msg = Msg(next(self._ids), chat, self.bot_user, text, int(time.time()), from_bot=True,
                  parse_mode=p.get("parse_mode"), reply_to=reply_to, buttons=buttons_of(p))
        self.messages[msg.message_id] = msg
        return self._message_json(msg)

    async def _api_editMessageText(self, p: dict[str, Any], _: asyncio.Event) -> Any:
        msg = self.messages.get(int(p.get("message_id") or 0))
        if msg is None or not msg.from_bot or msg.chat["id"] != int(p["chat_id"]):
            raise ApiError(400, "Bad Request: message to edit not found")
        text = self._render(p)
        if text == msg.text and buttons_of(p) == msg.buttons:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and "
                                "reply markup are exactly the same as a current content and reply markup")
        msg.text, msg.parse_mode = text, p.get("parse_mode")
        msg.buttons = buttons_of(p)  # an edit without reply_markup removes the buttons, as Telegram does
        msg.edits += 1
        return self._message_json(msg)

    def _render(self, p: dict[str, Any]) -> str:
        raw = str(p.get("text") or "")
        text = render_html(raw) if (p.get("parse_mode") or "").upper() == "HTML" else raw
        text = text.strip()  # Telegram trims leading and trailing whitespace
        if not text:
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return text

    def _message_json(self, msg: Msg) -> dict[str, Any]:
        out = msg.as_api()
        replied = self.messages.get(msg.reply_to) if msg.reply_to else None
        if replied is not None:
            out["reply_to_message"] = replied.as_api()
        return out


class _Handler(RequestHandler):
    """Routes /bot<token>/<method> to the fake; records the call and its outcome."""

    def initialize(self, fake: FakeTelegram) -> None:
        self.fake = fake
        self.closed = asyncio.Event()

    def on_connection_close(self) -> None:
        self.closed.set()

    async def get(self, token: str, method: str) -> None:
        await self.post(token, method)

    async def post(self, token: str, method: str) -> None:
        params = self._params()
        call = Call(method, params, at=time.monotonic())
        self.fake.calls.append(call)
        if token != self.fake.token:
            self._reply(call, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        try:
            result = await self.fake.call(method, params, self.closed)
        except ApiError as exc:
            body: dict[str, Any] = {"ok": False, "error_code": exc.status, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
            call.error = exc.description
            self._reply(call, exc.status, body)
            return
        if not self.closed.is_set():
            self._reply(call, 200, {"ok": True, "result": result})

    def _reply(self, call: Call, status: int, body: dict[str, Any]) -> None:
        call.status = status
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, ensure_ascii=False))

    def _params(self) -> dict[str, Any]:
        ctype = self.request.headers.get("Content-Type", "")
        body = self.request.body.decode("utf-8") if self.request.body and "multipart" not in ctype else ""
        if "json" in ctype and body:
            return dict(json.loads(body))
        pairs = parse_qsl(body, keep_blank_values=True) if "form" in ctype else []
        pairs += [(k, v[-1].decode()) for k, v in self.request.query_arguments.items()]
        if "multipart" in ctype:
            pairs += [(k, v[-1].decode()) for k, v in self.request.body_arguments.items()]
        params: dict[str, Any] = {k: (v if k in _STRING_PARAMS else _maybe_json(v)) for k, v in pairs}
        # Uploads (sendPhoto's photo) as bytes; a parameter naming an upload ("attach://x") gets its bytes.
        uploads = {k: v[0]["body"] for k, v in self.request.files.items()}
        params.update(uploads)
        for k, v in list(params.items()):
            if isinstance(v, str) and v.startswith("attach://") and v[9:] in uploads:
                params[k] = uploads[v[9:]]
        return params


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _quiet(handler: RequestHandler) -> None:
    """Tornado's access log would print every 4xx we answer on purpose."""
