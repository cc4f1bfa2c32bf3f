"""WeCom's side of the AI bot's callback (HTTP) mode, docs/wecom-aibot-protocol.md §2.

`FakeCallbacks` encrypts, signs and POSTs JSON callbacks to the bot, checks the encrypted passive replies strictly,
polls unfinished streams with refresh callbacks as WeCom does, and serves single-use response_url endpoints on
127.0.0.1. Its crypto (`AibotCrypto`) is written here on its own and imports nothing from the product, so a shared
mistake cannot make both sides agree. The receive id of an AI bot is the empty string.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.fakes.wecom_bot_checks import (
    MSGTYPE,
    PARAM,
    RESPONSE_URL_INVALID,
    RESPONSE_URL_USED,
    Reject,
    callback_head,
    check_card,
    check_content,
    check_markdown,
    check_stream,
    need_dict,
)

AIBOT_ID = "aibot-test-0001"
TOKEN = "aibotCbToken7"
AES_KEY = "Qm9vdHN0cmFwQWlCb3RDYWxsYmFja0tleUZvclRlc3Q"  # 43 chars -> 32 bytes
STREAM_REPLIES = ("stream", "stream_with_template_card")


class AibotCrypto:
    """WeCom's callback crypto: sha1 signature, AES-256-CBC with IV = key[:16], PKCS#7 to 32-byte blocks."""

    def __init__(self, token: str, aes_key: str, receive_id: str = "") -> None:
        self.token = token
        self.key = base64.b64decode(aes_key + "=")
        if len(aes_key) != 43 or len(self.key) != 32:
            raise ValueError("an EncodingAESKey is 43 characters (32 bytes)")
        self.receive_id = receive_id

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """Hex sha1 of the token, timestamp, nonce and ciphertext, sorted and joined."""
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def encrypt(self, message: str, random_prefix: bytes | None = None) -> str:
        """Base64 ciphertext of random(16) ‖ len(4, big-endian) ‖ message ‖ receive id."""
        raw = message.encode("utf-8")
        plain = (random_prefix or os.urandom(16)) + struct.pack(">I", len(raw)) + raw + self.receive_id.encode()
        padder = padding.PKCS7(256).padder()
        padded = padder.update(plain) + padder.finalize()
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypt: str) -> tuple[str, str]:
        """(message, receive id) of a base64 ciphertext; ValueError if it does not decrypt."""
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        padded = dec.update(base64.b64decode(encrypt, validate=True)) + dec.finalize()
        unpadder = padding.PKCS7(256).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        (size,) = struct.unpack(">I", plain[16:20])
        if 20 + size > len(plain):
            raise ValueError("message length past the end of the plaintext")
        return plain[20:20 + size].decode("utf-8"), plain[20 + size:].decode("utf-8")


@dataclass
class ResponseUrl:
    """A response_url the fake handed out with a callback."""

    msgid: str
    chattype: str
    created: float
    used: bool = False


class _Respond(tornado.web.RequestHandler):
    def initialize(self, fake: FakeCallbacks) -> None:
        self.fake = fake

    def post(self, code: str) -> None:
        errcode, errmsg = self.fake._respond(code, self.request.headers.get("Content-Type", ""), self.request.body)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"errcode": errcode, "errmsg": errmsg}))


class FakeCallbacks:
    """WeCom calling the AI bot's callback URL: messages, events, stream refresh polling and response_urls."""

    def __init__(self, url: str, token: str = TOKEN, aes_key: str = AES_KEY, *, poll_interval_s: float = 0.3,
                 stream_window_s: float = 360.0) -> None:
        self.url = url
        self.crypto = AibotCrypto(token, aes_key)
        self.poll_interval_s = poll_interval_s
        self.stream_window_s = stream_window_s
        self.response_url_ttl_s = 3600.0
        self.aibotid = AIBOT_ID
        self.responses: list[dict[str, Any]] = []  # accepted response_url bodies
        self.response_of: dict[str, dict[str, Any]] = {}  # msgid -> the accepted response_url body for it
        self.rejected_responses: list[tuple[int, bytes]] = []  # (errcode, body) of refused response_url POSTs
        self.violations: list[str] = []  # protocol rules the bot's replies broke
        self.poll_errors: list[str] = []  # refresh callbacks that got no HTTP answer at all
        self.expired: list[str] = []  # stream ids WeCom stopped polling unfinished (window over)
        self.cards: list[dict[str, Any]] = []  # template cards the bot sent (replies, refreshes, response_urls)
        self.bodies: dict[str, dict[str, Any]] = {}  # msgid -> plaintext callback body sent
        self.port = 0
        self._streams: dict[str, list[dict[str, Any]]] = {}
        self._urls: dict[str, ResponseUrl] = {}
        self._task_ids: set[str] = set()
        self._pollers: set[asyncio.Task[None]] = set()
        self._polling: set[str] = set()  # stream ids with a running poller
        self._server: tornado.httpserver.HTTPServer | None = None

    async def start(self) -> None:
        """Listen on a loopback port for the response_url endpoints."""
        app = tornado.web.Application([(r"/response/([0-9a-f]+)", _Respond, {"fake": self})],
                                      log_function=lambda handler: None)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Cancel the pollers and stop listening."""
        for task in list(self._pollers):
            task.cancel()
        await asyncio.gather(*self._pollers, return_exceptions=True)
        if self._server:
            self._server.stop()
            await self._server.close_all_connections()

    # ---- callbacks ----

    async def verify(self, echo: str = "echo-123", *, forge: bool = False) -> httpx.Response:
        """The GET URL verification WeCom does when the callback URL is saved."""
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        echostr = self.crypto.encrypt(echo)
        sig = _forged(self.crypto.sign(timestamp, nonce, echostr)) if forge else self.crypto.sign(
            timestamp, nonce, echostr)
        params = {"msg_signature": sig, "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
        async with httpx.AsyncClient(timeout=10.0) as client:
            return await client.get(self.url, params=params)

    async def message(self, user: str, text: str, *, chat_id: str | None = None, msgid: str | None = None,
                      forge: bool = False) -> tuple[httpx.Response, dict[str, Any] | None]:
        """A user's text message; returns (response, decrypted reply or None). An unfinished stream gets polled."""
        started = time.monotonic()
        body = self._head(user, chat_id, "text", msgid)
        body["text"] = {"content": text}
        body["response_url"] = self._new_url(body)
        resp, reply = await self._post(body, forge=forge)
        if reply is not None:
            self._check_message_reply(reply, user, chat_id, started)
        return resp, reply

    async def event(self, user: str, eventtype: str, *, chat_id: str | None = None,
                    **fields: Any) -> tuple[httpx.Response, dict[str, Any] | None]:
        """An event callback (msgtype "event") with a response_url; returns (response, decrypted reply or None)."""
        body = self._head(user, chat_id, "event")
        body["create_time"] = int(time.time())
        body["event"] = {"eventtype": eventtype, **fields}
        body["response_url"] = self._new_url(body)
        resp, reply = await self._post(body)
        self._check_event_reply(eventtype, fields, reply)
        return resp, reply

    async def click(self, user: str, task_id: str, event_key: str) -> tuple[httpx.Response, dict[str, Any] | None]:
        """A button click on a button_interaction card."""
        card_event = {"card_type": "button_interaction", "event_key": event_key, "task_id": task_id}
        return await self.event(user, "template_card_event", template_card_event=card_event)

    async def post_raw(self, query: dict[str, str], body: bytes) -> httpx.Response:
        """POST exactly this query and body to the bot (for replays and malformed requests)."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            return await client.post(self.url + "?" + urlencode(query), content=body,
                                     headers={"Content-Type": "application/json"})

    # ---- streams ----

    async def feedback(self, user: str, feedback_id: str, kind: int, *, content: str = "",
                       reasons: tuple[int, ...] = ()) -> tuple[httpx.Response, dict[str, Any] | None]:
        """A reader's 👍 (1), 👎 (2, with their dialog's text and picks) or withdrawal (3) of an answer whose
        first snapshot carried `feedback_id` (WeCom shows no buttons under one without)."""
        firsts = [shown[0] for shown in self._streams.values() if shown]
        sent = [s for s in firsts if (s.get("feedback") or {}).get("id") == feedback_id]
        assert sent, f"no answer's first snapshot carried feedback id {feedback_id!r}"
        event: dict[str, Any] = {"id": feedback_id, "type": kind}
        if kind == 2:
            event.update(content=content, inaccurate_reason_list=list(reasons))
        return await self.event(user, "feedback_event", feedback_event=event)

    def snapshots(self, stream_id: str) -> list[dict[str, Any]]:
        """Every stream dict the bot returned for `stream_id`, the first reply included, in order."""
        return list(self._streams.get(stream_id, []))

    def finished(self, stream_id: str) -> dict[str, Any] | None:
        """The first snapshot of `stream_id` with finish=true, if any."""
        return next((s for s in self._streams.get(stream_id, []) if s.get("finish") is True), None)

    async def wait_finished(self, stream_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the finished snapshot of `stream_id`; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while (done := self.finished(stream_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {stream_id} not finished after {timeout} s: {self.snapshots(stream_id)}"
                                     f"; violations {self.violations}")
            await asyncio.sleep(0.02)
        return done

    # ---- internals ----

    def _head(self, user: str, chat_id: str | None, msgtype: str, msgid: str | None = None) -> dict[str, Any]:
        return callback_head(self.aibotid, user, chat_id, msgtype, msgid)

    def _new_url(self, body: dict[str, Any]) -> str:
        code = secrets.token_hex(16)
        self._urls[code] = ResponseUrl(body["msgid"], body["chattype"], time.monotonic())
        return f"http://127.0.0.1:{self.port}/response/{code}"

    async def _post(self, body: dict[str, Any], *, forge: bool = False) -> tuple[httpx.Response, dict[str, Any] | None]:
        self.bodies[body["msgid"]] = body
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        encrypt = self.crypto.encrypt(json.dumps(body, ensure_ascii=False))
        sig = self.crypto.sign(timestamp, nonce, encrypt)
        query = {"msg_signature": _forged(sig) if forge else sig, "timestamp": timestamp, "nonce": nonce}
        resp = await self.post_raw(query, json.dumps({"encrypt": encrypt}).encode())
        if resp.status_code != 200 or not resp.content.strip():
            return resp, None
        return resp, self.open_reply(resp.content, nonce)

    def open_reply(self, content: bytes, nonce: str) -> dict[str, Any]:
        """The plaintext JSON of an encrypted passive reply, its envelope checked strictly (AssertionError)."""
        try:
            env = json.loads(content)
        except ValueError as exc:
            raise AssertionError(f"reply is not JSON: {content[:200]!r}") from exc
        if not isinstance(env, dict) or set(env) != {"encrypt", "msgsignature", "timestamp", "nonce"}:
            raise AssertionError(f"reply envelope must have exactly encrypt/msgsignature/timestamp/nonce: {env!r}")
        ts, enc = env["timestamp"], env["encrypt"]
        if not isinstance(ts, int) or isinstance(ts, bool) or abs(ts - time.time()) > 300:
            raise AssertionError(f"reply timestamp must be an int of seconds now: {ts!r}")
        if env["nonce"] != nonce:
            raise AssertionError(f"reply nonce {env['nonce']!r} is not the callback's {nonce!r}")
        if not isinstance(enc, str) or env["msgsignature"] != self.crypto.sign(str(ts), nonce, enc):
            raise AssertionError("reply msgsignature does not match")
        try:
            message, receive_id = self.crypto.decrypt(enc)
            reply = json.loads(message)
        except ValueError as exc:
            raise AssertionError(f"reply does not decrypt to JSON: {exc}") from exc
        if receive_id != "" or not isinstance(reply, dict):
            raise AssertionError(f"reply receive id {receive_id!r} (must be empty) or not an object: {reply!r}")
        return reply

    def _check_message_reply(self, reply: dict[str, Any], user: str, chat_id: str | None, started: float) -> None:
        kind = reply.get("msgtype")
        if kind not in ("stream", "template_card", "stream_with_template_card"):
            self.violations.append(f"message reply msgtype {kind!r} not allowed")
            return
        if "template_card" in reply or kind == "template_card":
            self._check(lambda: self._take_card(reply.get("template_card")), "message reply card")
        if kind in STREAM_REPLIES:
            stream = reply.get("stream")
            if self._take_stream(stream, "message reply") and isinstance(stream, dict) and not stream.get("finish"):
                self._start_poller(user, chat_id, stream["id"], started)

    def _start_poller(self, user: str, chat_id: str | None, stream_id: str, started: float) -> None:
        """Poll `stream_id` in the background, unless a poller for it is already running."""
        if stream_id in self._polling:
            return
        task = asyncio.create_task(self._poll(user, chat_id, stream_id, started))
        self._pollers.add(task)
        self._polling.add(stream_id)

        def done(_: asyncio.Task[None]) -> None:
            self._pollers.discard(task)
            self._polling.discard(stream_id)

        task.add_done_callback(done)

    def _check_event_reply(self, eventtype: str, fields: dict[str, Any], reply: dict[str, Any] | None) -> None:
        if reply is None:
            return
        if eventtype == "enter_chat":
            kind = reply.get("msgtype")
            if kind == "text":
                self._check(lambda: check_content(need_dict(reply, "text").get("content"), "text"), "welcome")
            elif kind == "template_card":
                self._check(lambda: self._take_card(reply.get("template_card")), "welcome card")
            else:
                self.violations.append(f"welcome reply msgtype {kind!r} not allowed")
        elif eventtype == "template_card_event":
            task_id = (fields.get("template_card_event") or {}).get("task_id", "")
            if reply.get("response_type") != "update_template_card":
                self.violations.append(f"card event reply is not update_template_card: {reply!r}")
            else:
                self._check(lambda: check_card(reply.get("template_card"), update_of=task_id), "card update")
        else:
            self.violations.append(f"{eventtype} allows only an empty reply: {reply!r}")

    def _check(self, check: Any, where: str) -> None:
        try:
            check()
        except Reject as rej:
            self.violations.append(f"{where}: {rej.code} {rej.msg}")

    def _take_card(self, card: Any) -> None:
        if task_id := check_card(card, used_task_ids=self._task_ids):
            self._task_ids.add(task_id)
        self.cards.append(card)

    def _take_stream(self, stream: Any, where: str) -> bool:
        """Record one stream snapshot, noting its rule violations; False if it has no usable id."""
        if not isinstance(stream, dict) or not isinstance(stream.get("id"), str) or not stream["id"]:
            self.violations.append(f"{where}: stream without an id: {stream!r}")
            return False
        self._check(lambda: check_stream(stream), f"{where} (stream {stream['id']})")
        self._streams.setdefault(stream["id"], []).append(stream)
        return True

    async def _poll(self, user: str, chat_id: str | None, stream_id: str, started: float) -> None:
        """Refresh callbacks every poll_interval_s until the stream finishes or the window is over."""
        where = f"refresh of stream {stream_id}"
        while True:
            await asyncio.sleep(self.poll_interval_s)
            if time.monotonic() - started >= self.stream_window_s:
                self.expired.append(stream_id)
                return
            body = self._head(user, chat_id, "stream")
            body["stream"] = {"id": stream_id}
            try:
                resp, reply = await self._post(body)
            except httpx.HTTPError as exc:
                self.poll_errors.append(f"{where}: {exc!r}")
                continue
            except AssertionError as exc:
                self.violations.append(f"{where}: {exc}")
                continue
            stream = reply.get("stream") if reply and reply.get("msgtype") in STREAM_REPLIES else None
            if not isinstance(stream, dict) or stream.get("id") != stream_id:
                self.violations.append(f"{where}: HTTP {resp.status_code}, not a stream reply for it: {reply!r}")
                continue
            if reply and "template_card" in reply:
                self._check(partial(self._take_card, reply.get("template_card")), f"{where} card")
            if self._take_stream(stream, where) and stream.get("finish") is True:
                return

    def _respond(self, code: str, content_type: str, raw: bytes) -> tuple[int, str]:
        """Check one POST to a response_url; (errcode, errmsg) to answer."""
        url = self._urls.get(code)
        try:
            if url is None or time.monotonic() - url.created > self.response_url_ttl_s:
                raise Reject(RESPONSE_URL_INVALID, "invalid response_url")
            if url.used:
                raise Reject(RESPONSE_URL_USED, "response_url used")
            body = _json_body(content_type, raw)
            if body.get("msgtype") == "markdown":
                check_markdown(body)
            elif body.get("msgtype") == "template_card" and url.chattype == "single":
                self._take_card(body.get("template_card"))
            else:
                raise Reject(MSGTYPE, f"msgtype {body.get('msgtype')!r} not allowed on this response_url")
        except Reject as rej:
            self.rejected_responses.append((rej.code, raw))
            return rej.code, rej.msg
        url.used = True
        self.responses.append(body)
        self.response_of[url.msgid] = body
        return 0, "ok"


def _json_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise Reject(PARAM, "Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise Reject(PARAM, "body is not JSON") from exc
    if not isinstance(body, dict):
        raise Reject(PARAM, "body must be a JSON object")
    return body


def _forged(sig: str) -> str:
    """A signature that is well formed but wrong."""
    return hashlib.sha1(("forged" + sig).encode()).hexdigest()
