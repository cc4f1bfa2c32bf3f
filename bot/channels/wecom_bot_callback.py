"""The AI bot's callback transport: WeCom posts encrypted JSON to a URL and polls the stream it was given.

The first reply to a message names a stream id; until a reply says `finish`, WeCom calls again with that
id (a refresh callback) and shows whatever content the reply holds, for up to 6 minutes after the user's
message. So here a bubble is a snapshot the next refresh takes: nothing is pushed. A reply that no
refresh took in time (or a part past the stream's 20480 bytes, or a button's command output) goes to the
callback's `response_url`, which takes one POST within an hour. Crypto as the WeCom app's (wecom_crypto),
with JSON bodies, the reply's signature under `msgsignature`, and an empty receive id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import tornado.httpserver
import tornado.netutil
import tornado.web

from bot.channels.wecom_bot_reply import Handler, Undelivered, fit_bytes, markdown
from bot.channels.wecom_crypto import (
    DecryptError,
    ReceiveIdError,
    SignatureError,
    WecomCrypto,
    callback_query,
    decode_aes_key,
    replay_key,
    skew_s,
)
from bot.errors import ConfigError
from bot.text import phrases

if TYPE_CHECKING:
    from bot.config import WecomBotConfig

log = logging.getLogger(__name__)

_TURN_PREFIX = re.compile(r"^(t\d+-)")
KEEP_S = 600.0  # a finished stream is still answered (a repeated refresh) this long
RESUME_GRACE_S = 15.0  # after a start, refreshes of unknown streams wait this long for their resumed turns


class _Handler(tornado.web.RequestHandler):
    """GET verifies the URL; POST is a callback."""

    def initialize(self, server: CallbackServer) -> None:
        self.server = server

    def _query(self) -> dict[str, str]:
        return callback_query(self.get_query_argument)  # type: ignore[arg-type]

    def _finish(self, status: int, body: str, kind: str = "text/plain") -> None:
        self.set_status(status)
        self.set_header("Content-Type", f"{kind}; charset=utf-8")
        self.finish(body)

    async def get(self) -> None:
        self._finish(*self.server.verify_url(self._query(), self.request.remote_ip or ""))

    async def post(self) -> None:
        status, body = await self.server.accept(self._query(), self.request.body, self.request.remote_ip or "")
        self._finish(status, body, "application/json" if body.startswith("{") else "text/plain")


class CallbackServer:
    """The callback URL's server, the streams WeCom is polling, and the replies that go by response_url."""

    def __init__(self, cfg: WecomBotConfig, channel: Handler) -> None:
        try:
            self.key = decode_aes_key(cfg.aes_key)
        except ValueError as exc:
            raise ConfigError(f"WECOM_BOT_AES_KEY is invalid ({exc}); fix: copy the 43-character EncodingAESKey "
                              "from the bot's API settings (回调).") from None
        self.crypto = WecomCrypto(cfg.token, cfg.aes_key, "")  # an AI bot's receive id is empty
        self.cfg, self.channel = cfg, channel
        self.port = 0
        self.bubbles: dict[str, PolledBubble] = {}  # stream id (and a resumed turn's "t<id>-") -> bubble
        self.by_message: dict[str, str] = {}  # msgid -> stream id: WeCom repeats a callback it got no reply to
        self._server: tornado.httpserver.HTTPServer | None = None
        self.started = time.monotonic()

    async def start(self) -> None:
        """Listen on `listen` (port 0: any free one, see .port)."""
        host, _, port = self.cfg.listen.rpartition(":")
        app = tornado.web.Application([(re.escape(self.cfg.path), _Handler, {"server": self})])
        sockets = tornado.netutil.bind_sockets(int(port), host.strip("[]") or None)
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=1 << 20, idle_connection_timeout=60)
        self._server.add_sockets(sockets)
        log.info("wecom_bot: callback server on %s:%d%s", host, self.port, self.cfg.path)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    def resumed(self, chat_id: str, stream_id: str, asked_at: float) -> PolledBubble:
        """A restart's bubble for a pending turn: WeCom may still poll the old stream (same turn id) for 6
        minutes from the question; after that there is no way left to reach the chat."""
        bubble = PolledBubble(self, stream_id, "", time.monotonic() - max(0.0, time.time() - asked_at))
        if m := _TURN_PREFIX.match(stream_id):
            self.bubbles[m.group(1)] = bubble
        return bubble

    # -- HTTP --

    def verify_url(self, q: dict[str, str], peer: str) -> tuple[int, str]:
        """GET: the decrypted echostr when the signature is right (WeCom waits 1 s)."""
        if not all(q.values()):
            return 400, "missing parameters"
        try:
            return 200, self.crypto.verify_url(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"])
        except (SignatureError, ReceiveIdError, DecryptError) as exc:
            log.warning("wecom_bot: URL verification from %s rejected: %s", peer, exc)
            return 403, "forbidden"

    async def accept(self, q: dict[str, str], raw: bytes, peer: str) -> tuple[int, str]:
        """POST: check, decrypt, and answer with the encrypted reply (or an empty body)."""
        if not (q["msg_signature"] and q["timestamp"] and q["nonce"]):
            return 400, "missing parameters"
        try:
            encrypt = str(json.loads(raw)["encrypt"])
            self.crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], encrypt)
            if not await self._fresh(q, peer):
                return 403, "forbidden"
            body = json.loads(self.crypto.decrypt(encrypt))
        except SignatureError:
            log.warning("wecom_bot: callback from %s has a bad msg_signature; rejected", peer)
            return 403, "forbidden"
        except (ValueError, KeyError, TypeError, DecryptError, ReceiveIdError) as exc:
            log.warning("wecom_bot: callback from %s rejected: %s", peer, type(exc).__name__)
            return 400, "bad request"
        reply = await self._handle(body)
        return 200, self._seal(reply, q["nonce"]) if reply is not None else ""

    async def _fresh(self, q: dict[str, str], peer: str) -> bool:
        """Timestamp within the replay window and (timestamp, nonce, signature) never seen before."""
        if skew_s(q["timestamp"]) > self.cfg.replay_window_s or \
                not await self.channel.first_seen("wecom_bot-replay", replay_key(q)):
            log.warning("wecom_bot: stale or replayed callback from %s; rejected", peer)
            return False
        return True

    def _seal(self, reply: dict[str, Any], nonce: str) -> str:
        timestamp = str(int(time.time()))
        encrypt, sig = self.crypto.encrypt_msg(json.dumps(reply, ensure_ascii=False), nonce, timestamp)
        return json.dumps({"encrypt": encrypt, "msgsignature": sig, "timestamp": int(timestamp), "nonce": nonce})

    async def _handle(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The plaintext reply to one callback."""
        kind = body.get("msgtype")
        if kind == "stream":
            return self._refresh(str((body.get("stream") or {}).get("id", "")))
        exchange = CbExchange(self, str(body.get("response_url", "")))
        if kind == "event":
            await self.channel.on_event(body, exchange)
            return exchange.response
        msgid = str(body.get("msgid", ""))
        if msgid in self.by_message:  # WeCom's repeat: the stream it may not have learned of
            return self._refresh(self.by_message[msgid])
        await self.channel.on_message(body, exchange, self.key)
        if exchange.opened is None:
            return None
        self.by_message[msgid] = exchange.opened.stream_id
        return exchange.opened.snapshot(exchange.opened.stream_id)

    def _refresh(self, stream_id: str) -> dict[str, Any] | None:
        """A refresh: the stream's snapshot now (a restarted process finds a resumed turn by its id)."""
        self._forget_old()
        m = _TURN_PREFIX.match(stream_id)
        bubble = self.bubbles.get(stream_id) or (self.bubbles.get(m.group(1)) if m else None)
        if bubble is not None:
            return bubble.snapshot(stream_id)
        # Ours from before a restart: the restart resumes its turn within moments (keep WeCom polling until
        # then); after that nothing will answer it, so the bubble says so rather than spin for 6 minutes.
        if time.monotonic() - self.started < RESUME_GRACE_S:
            return {"msgtype": "stream", "stream": {"id": stream_id, "finish": False, "content": "…"}}
        return {"msgtype": "stream", "stream": {"id": stream_id, "finish": True,
                                                "content": phrases.message("lost_in_restart", "zh")}}

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key, bubble in list(self.bubbles.items()):
            if now - (bubble.done_at or bubble.began + self.cfg.stream_deadline_s) > KEEP_S:
                del self.bubbles[key]
                self.by_message = {m: s for m, s in self.by_message.items() if s != bubble.stream_id}

    async def respond_url(self, url: str, body: dict[str, Any]) -> None:
        """POST a reply to a callback's response_url (each takes one, within an hour)."""
        if not url:
            raise Undelivered("WeCom stopped polling and the callback had no response_url left")
        try:
            async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
                try:
                    resp = await client.post(url, json=body)
                except httpx.TransportError:  # never reached WeCom: the one use is not spent, try once more
                    await asyncio.sleep(1.0)
                    resp = await client.post(url, json=body)
            result = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Undelivered(f"response_url failed: {exc}") from None
        if result.get("errcode", 0) != 0:
            raise Undelivered(f"response_url refused: {result.get('errcode')} {result.get('errmsg', '')}", final=True)


class CbExchange:
    """Answers to one callback: the HTTP response (welcome, card update, first stream reply) and its
    response_url for anything later."""

    def __init__(self, server: CallbackServer, response_url: str) -> None:
        self.server, self.response_url = server, response_url
        self.response: dict[str, Any] | None = None
        self.opened: PolledBubble | None = None

    def bubble(self, stream_id: str) -> PolledBubble:
        """A message's stream (WeCom polls it); an event's reply goes by response_url (no stream to poll)."""
        bubble = PolledBubble(self.server, stream_id, self.response_url, time.monotonic(),
                              polled=self.response is None)
        if bubble.polled:
            self.opened = bubble
            self.server.bubbles[stream_id] = bubble
        return bubble

    async def respond(self, body: dict[str, Any]) -> None:
        """The callback's own HTTP reply (a welcome, a card update)."""
        self.response = body

    async def push(self, body: dict[str, Any]) -> None:
        """A new message: by response_url, once."""
        url, self.response_url = self.response_url, ""
        await self.server.respond_url(url, body)


class PolledBubble:
    """A stream WeCom polls: the snapshot the next refresh takes; `finish` waits for a refresh to take the
    finished one. Past `stream_deadline_s` (WeCom stops at 6 minutes) a refresh gets the bubble closed with
    a pointer instead, and the answer goes by response_url: one of the two, never both."""

    def __init__(self, server: CallbackServer, stream_id: str, response_url: str, began: float, *,
                 polled: bool = True) -> None:
        self.server, self.stream_id, self.response_url = server, stream_id, response_url
        self.began, self.polled = began, polled
        self.content, self.finished, self.moved = "", False, False
        self.feedback = ""  # sent with the first snapshot (WeCom takes it only there)
        self.image: bytes | None = None
        self.card: dict[str, Any] | None = None
        self.taken = asyncio.Event()
        self.done_at: float | None = None

    def show(self, text: str) -> None:
        """The content the next refresh shows."""
        if text.strip() and not self.finished:
            self.content = text

    def _late(self) -> bool:
        return time.monotonic() - self.began > self.server.cfg.stream_deadline_s

    def snapshot(self, stream_id: str) -> dict[str, Any]:
        """The reply to a refresh of this stream (taking a finished one counts as delivered)."""
        if not self.taken.is_set() and (self.moved or self._late()):
            self.moved = True
            note = phrases.message("continued", phrases.language(self.content))
            shown = self.content if not self.finished else ""
            return {"msgtype": "stream", "stream": {"id": stream_id, "finish": True,
                                                    "content": f"{shown}\n\n{note}".strip()}}
        stream: dict[str, Any] = {"id": stream_id, "finish": self.finished, "content": fit_bytes(self.content or "…")}
        if self.feedback:
            stream["feedback"], self.feedback = {"id": self.feedback}, ""
        if not self.finished:
            return {"msgtype": "stream", "stream": stream}
        if self.image is not None:
            stream["msg_item"] = [{"msgtype": "image", "image": {
                "base64": base64.b64encode(self.image).decode(),
                "md5": hashlib.md5(self.image).hexdigest()}}]  # noqa: S324 - the protocol's checksum
        self.taken.set()
        self.done_at = self.done_at or time.monotonic()
        if self.card is not None:
            return {"msgtype": "stream_with_template_card", "stream": stream, "template_card": self.card}
        return {"msgtype": "stream", "stream": stream}

    async def finish(self, text: str, image: bytes | None = None, card: dict[str, Any] | None = None) -> str:
        """Finished: taken by a refresh before the deadline, else sent by response_url."""
        self.content, self.image, self.card, self.finished = text, image, card, True
        try:
            if self.polled and not self._late():
                wait = self.began + self.server.cfg.stream_deadline_s - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.taken.wait(), max(wait, 0.0))
            if self.taken.is_set():
                return "stream"
            self.moved = True  # from now on a refresh closes the bubble with a pointer, never the answer
            if image is not None or card is not None:
                log.warning("wecom_bot: stream %s went by response_url, which takes text only: its picture or "
                            "buttons were dropped", self.stream_id)
            await self.follow(text)
            return "response_url"
        finally:
            self.done_at = self.done_at or time.monotonic()

    async def follow(self, text: str) -> None:
        """A message past the stream: by response_url (one is all a callback gets)."""
        url, self.response_url = self.response_url, ""
        await self.server.respond_url(url, markdown(fit_bytes(text)))

    async def interrupted(self, text: str) -> None:
        """Shutdown mid-answer: nothing to do; the restarted process answers WeCom's next refresh."""
