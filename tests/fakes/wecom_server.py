"""A loopback fake of the WeCom API (gettoken, message/send) and a client that sends callbacks as WeCom does.

The client's crypto is written here on its own (library PKCS#7, its own framing and signature) and does
not import the product's `bot.channels.wecom_crypto`, so a shared mistake cannot make both sides agree.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CORP_ID = "ww0000000000test"
AGENT_ID = "1000002"
CORP_SECRET = "s3cret-corp-secret-value-0123456789"
TOKEN = "cbTokenForTests42"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 chars -> 32 bytes


@dataclass
class Recorded:
    """One request the fake API received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


class FakeWecomApi:
    """A real HTTP server on 127.0.0.1 playing qyapi.weixin.qq.com; records every request."""

    def __init__(self, corp_id: str = CORP_ID, corp_secret: str = CORP_SECRET,
                 expires_in: int = 7200) -> None:
        self.corp_id = corp_id
        self.corp_secret = corp_secret
        self.expires_in = expires_in
        self.requests: list[Recorded] = []
        self.sent: list[dict[str, Any]] = []  # accepted message/send payloads
        self.valid_tokens: set[str] = set()
        self.expired_tokens: set[str] = set()
        self.expire_in: int | None = None  # accepted sends left before every token expires
        self.stalls: list[float] = []  # seconds the next message/send calls hang before a 504
        self.uploads: dict[str, bytes] = {}  # media_id -> an image the bot uploaded
        self.user_files: dict[str, bytes] = {}  # media_id -> a file a user sent (media/get serves it)
        self.queued_errors: list[int] = []  # errcodes the next message/send calls answer with
        self.out_of_range: set[str] = set()  # users outside the app's visible range: message/send says 81013
        self.gettoken_errors: list[int] = []
        self.port = 0
        self._server: tornado.httpserver.HTTPServer | None = None
        self._sent_event = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_to(self, path: str) -> list[Recorded]:
        """Recorded requests for one path, e.g. '/cgi-bin/gettoken'."""
        return [r for r in self.requests if r.path == path]

    def expire_tokens_after(self, sends: int) -> None:
        """The tokens expire once `sends` more messages have been accepted (mid-way through a long answer)."""
        self.expire_in = sends

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001 (access_token expired)."""
        self.expired_tokens |= self.valid_tokens
        self.valid_tokens.clear()

    def stall_next_sends(self, seconds: float, times: int = 1) -> None:
        """The next `times` message/send calls get no reply for `seconds` (a stalled gateway), then a 504;
        nothing is sent."""
        self.stalls.extend([seconds] * times)

    def fail_next_sends(self, errcode: int, times: int = 1) -> None:
        """The next `times` message/send calls answer with `errcode` (e.g. 45009 rate limit)."""
        self.queued_errors.extend([errcode] * times)

    async def wait_sent(self, n: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least `n` messages were accepted; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {n} message/send calls, got {len(self.sent)}: {self.sent}")
            self._sent_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_event.wait(), left)
        return list(self.sent)

    async def start(self, port: int = 0) -> None:
        """Listen on a loopback port (a free one by default)."""
        app = tornado.web.Application([
            (r"/cgi-bin/gettoken", _GetToken, {"api": self}),
            (r"/cgi-bin/message/send", _Send, {"api": self}),
            (r"/cgi-bin/media/upload", _Upload, {"api": self}),
            (r"/cgi-bin/media/get", _MediaGet, {"api": self}),
        ], log_function=lambda handler: None)  # its access log would print the secrets it receives
        sockets = tornado.netutil.bind_sockets(port, "127.0.0.1", family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Stop listening and drop connections."""
        if self._server:
            self._server.stop()
            await self._server.close_all_connections()

    def _record(self, handler: tornado.web.RequestHandler) -> Recorded:
        body: Any = None
        if handler.request.body:
            try:
                body = json.loads(handler.request.body)
            except ValueError:
                body = handler.request.body
        query = {k: handler.get_query_argument(k) for k in handler.request.query_arguments}
        rec = Recorded(handler.request.method or "", handler.request.path, query, body)
        self.requests.append(rec)
        return rec

    def texts_to(self, user: str) -> list[str]:
        """The text (or markdown) messages sent to a user, in order."""
        return [m[m["msgtype"]]["content"] for m in self.sent
                if m["touser"] == user and m["msgtype"] in ("text", "markdown")]

    def images_to(self, user: str) -> list[bytes]:
        """The images sent to a user, as uploaded."""
        return [self.uploads[m["image"]["media_id"]] for m in self.sent
                if m["touser"] == user and m["msgtype"] == "image"]

    def _check_token(self, rec: Recorded) -> int:
        token = rec.query.get("access_token", "")
        if token in self.expired_tokens:
            return 42001
        return 0 if token in self.valid_tokens else 40014

    def _check_send(self, rec: Recorded) -> int:
        if code := self._check_token(rec):
            return code
        if self.queued_errors:
            return self.queued_errors.pop(0)
        body = rec.body
        if isinstance(body, dict) and body.get("touser") in self.out_of_range:
            return 81013
        if isinstance(body, dict) and body.get("msgtype") == "image" and body.get("touser"):
            return 0 if (body.get("image") or {}).get("media_id") in self.uploads else 40007  # invalid media_id
        return _payload_error(body)


def _payload_error(body: Any) -> int:
    """0 when a message/send payload is well formed, else the errcode WeCom would give."""
    if not isinstance(body, dict) or not body.get("touser") or body.get("agentid") is None:
        return 40003
    kind = body.get("msgtype")
    if kind not in ("text", "markdown") or not isinstance(body.get(kind), dict):
        return 40008
    content = body[kind].get("content", "")
    if not content:
        return 44004
    if len(content.encode("utf-8")) > 2048:
        return 45002
    return 0


class _Base(tornado.web.RequestHandler):
    def initialize(self, api: FakeWecomApi) -> None:
        self.api = api

    def reply(self, errcode: int, **extra: Any) -> None:
        self.set_header("Content-Type", "application/json")
        msg = "ok" if errcode == 0 else f"fake error {errcode}"
        self.finish(json.dumps({"errcode": errcode, "errmsg": msg, **extra}))


class _GetToken(_Base):
    def get(self) -> None:
        rec = self.api._record(self)
        if self.api.gettoken_errors:
            return self.reply(self.api.gettoken_errors.pop(0))
        if rec.query.get("corpid") != self.api.corp_id:
            return self.reply(40013)
        if rec.query.get("corpsecret") != self.api.corp_secret:
            return self.reply(40001)
        token = "tok-" + uuid.uuid4().hex
        self.api.valid_tokens.add(token)
        self.reply(0, access_token=token, expires_in=self.api.expires_in)


class _Send(_Base):
    async def post(self) -> None:
        rec = self.api._record(self)
        if self.api.stalls:
            await asyncio.sleep(self.api.stalls.pop(0))
            self.set_status(504)
            return
        code = self.api._check_send(rec)
        if code == 0:
            self.api.sent.append(rec.body)
            self.api._sent_event.set()
            if self.api.expire_in is not None:
                self.api.expire_in -= 1
                if self.api.expire_in == 0:
                    self.api.expire_in = None
                    self.api.expire_tokens()
            return self.reply(0, invaliduser="", msgid=uuid.uuid4().hex)
        self.reply(code)


class _Upload(_Base):
    """media/upload: a temporary image (PNG or JPG, at most 10 MB) in the multipart field `media`."""

    def post(self) -> None:
        rec = self.api._record(self)
        if code := self.api._check_token(rec):
            return self.reply(code)
        files = self.request.files.get("media") or []
        data = files[0]["body"] if files else b""
        if rec.query.get("type") != "image" or not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8")):
            return self.reply(40005)  # invalid file type
        if len(data) > 10 * 1024 * 1024:
            return self.reply(40009)  # invalid image size
        media_id = "m-" + uuid.uuid4().hex
        self.api.uploads[media_id] = data
        self.reply(0, type="image", media_id=media_id, created_at=str(int(time.time())))


class _MediaGet(_Base):
    """media/get: a file a user sent, as bytes (an error as JSON, as WeCom answers it)."""

    def get(self) -> None:
        rec = self.api._record(self)
        if code := self.api._check_token(rec):
            return self.reply(code)
        data = self.api.user_files.get(rec.query.get("media_id", ""))
        if data is None:
            return self.reply(40007)
        try:  # WeCom serves a text file as text/plain, as it was uploaded
            data.decode("utf-8")
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        except UnicodeDecodeError:
            self.set_header("Content-Type", "application/octet-stream")
        self.finish(data)


# ---- the callback client: WeCom's side of the encrypted callback, with its own crypto ----


class CallbackClient:
    """Encrypts, signs and POSTs callbacks to the bot as the WeCom server does."""

    def __init__(self, url: str, token: str = TOKEN, aes_key: str = AES_KEY, corp_id: str = CORP_ID) -> None:
        self.url = url
        self.token = token
        self.key = base64.b64decode(aes_key + "=")
        assert len(self.key) == 32
        self.corp_id = corp_id
        self._msg_ids = iter(range(7_000_000_000_000_000_000, 8_000_000_000_000_000_000))

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """sha1 over the lexicographically sorted four strings."""
        parts = [self.token, timestamp, nonce, encrypt]
        parts.sort()
        return hashlib.sha1("".join(parts).encode()).hexdigest()

    def encrypt(self, plaintext: str, random_prefix: bytes | None = None) -> str:
        """AES-256-CBC of random(16) + len(4, BE) + msg + corp id, PKCS#7 to 32-byte blocks."""
        msg = plaintext.encode()
        data = (random_prefix or os.urandom(16)) + struct.pack("!I", len(msg)) + msg + self.corp_id.encode()
        padder = padding.PKCS7(256).padder()
        padded = padder.update(data) + padder.finalize()
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(padded) + enc.finalize()).decode()

    def decrypt(self, encrypt: str) -> tuple[str, str]:
        """(message, receive id) of a ciphertext, for checking vectors."""
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        padded = dec.update(base64.b64decode(encrypt)) + dec.finalize()
        unpadder = padding.PKCS7(256).unpadder()
        data = unpadder.update(padded) + unpadder.finalize()
        size = struct.unpack("!I", data[16:20])[0]
        return data[20:20 + size].decode(), data[20 + size:].decode()

    def next_msg_id(self) -> str:
        """A fresh 64-bit-looking MsgId."""
        return str(next(self._msg_ids))

    def text_xml(self, user: str, content: str, msg_id: str | None = None, msg_type: str = "text") -> str:
        """The inner XML of a user message as WeCom sends it."""
        msg_id = msg_id or self.next_msg_id()
        inner = (f"<Content><![CDATA[{content}]]></Content>" if msg_type == "text"
                 else "<PicUrl><![CDATA[http://example.invalid/p.jpg]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>")
        return (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
                f"<MsgType><![CDATA[{msg_type}]]></MsgType>{inner}<MsgId>{msg_id}</MsgId>"
                f"<AgentID>{AGENT_ID}</AgentID></xml>")

    def link_xml(self, user: str, url: str, title: str = "分享的网页") -> str:
        """A shared link (MsgType link) as WeCom sends it."""
        return (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
                f"<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[{title}]]></Title>"
                f"<Description><![CDATA[]]></Description><Url><![CDATA[{url}]]></Url>"
                f"<PicUrl><![CDATA[]]></PicUrl><MsgId>{self.next_msg_id()}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>")

    def file_xml(self, user: str, media_id: str, name: str, size: int) -> str:
        """A file message, for a WeCom that delivers them to the app (MediaId for media/get)."""
        return (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
                f"<MsgType><![CDATA[file]]></MsgType><MediaId><![CDATA[{media_id}]]></MediaId>"
                f"<FileName><![CDATA[{name}]]></FileName><FileSize>{size}</FileSize>"
                f"<MsgId>{self.next_msg_id()}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>")

    def event_xml(self, user: str, event: str = "enter_agent") -> str:
        """An event callback (no MsgId)."""
        return (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
                f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>"
                f"<EventKey><![CDATA[]]></EventKey><AgentID>{AGENT_ID}</AgentID></xml>")

    def envelope(self, inner_xml: str, *, timestamp: str | None = None,
                 nonce: str | None = None) -> tuple[dict[str, str], str]:
        """(query, body) for one encrypted POST, signed over the ciphertext."""
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(int.from_bytes(os.urandom(4), "big"))
        encrypt = self.encrypt(inner_xml)
        sig = self.sign(timestamp, nonce, encrypt)
        query = {"msg_signature": sig, "timestamp": timestamp, "nonce": nonce}
        body = (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>")
        return query, body

    async def post_raw(self, query: dict[str, str], body: str | bytes) -> httpx.Response:
        """POST exactly this query and body (used for retries and replays)."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            return await client.post(self.url + "?" + urlencode(query), content=body,
                                     headers={"Content-Type": "text/xml"})

    async def post(self, inner_xml: str, **kw: str | None) -> tuple[httpx.Response, dict[str, str], str]:
        """Encrypt, sign and POST one callback; returns (response, query, body) for replays."""
        query, body = self.envelope(inner_xml, **kw)
        return await self.post_raw(query, body), query, body

    async def verify_url(self, echostr_plain: str, *, bad_signature: bool = False) -> httpx.Response:
        """The GET URL verification WeCom does when the callback URL is saved."""
        timestamp, nonce = str(int(time.time())), "1372623149"
        echostr = self.encrypt(echostr_plain)
        sig = self.sign(timestamp, nonce, echostr)
        if bad_signature:
            sig = "0" * 40
        params = {"msg_signature": sig, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
        async with httpx.AsyncClient(timeout=5.0) as client:
            return await client.get(self.url, params=params)
