"""WeCom (企业微信) self-built app channel: encrypted callbacks in, `message/send` replies out.

A tornado server answers the callback URL: GET verifies the URL, POST checks signature, freshness and replay,
decrypts, acknowledges at once with HTTP 200 and answers in a background task. MsgIds are claimed in the
store, so WeCom's retries (and repeats after a restart) are answered once. Replies go out through
`WecomApi` (wecom_api.py), split at sentence boundaries into parts of at most 2048 bytes (common.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from bot.channels.common import SlidingWindow, format_sources, split_text, utf8_len
from bot.channels.wecom_api import WecomApi
from bot.channels.wecom_crypto import (
    DecryptError,
    ReceiveIdError,
    SignatureError,
    WecomCrypto,
    XmlError,
    parse_xml,
)
from bot.errors import BotError, ConfigError
from bot.texts import help_text, language, message
from bot.types import Incoming, PendingTurn

if TYPE_CHECKING:
    from bot.config import ConversationConfig, WecomConfig
    from bot.engine import Engine
    from bot.store import LogStore

log = logging.getLogger(__name__)

MAX_BYTES = 2048  # message/send limit per text message, in UTF-8 bytes


def split_message(text: str, limit: int = MAX_BYTES) -> list[str]:
    """Split text into messages of at most `limit` UTF-8 bytes, at a paragraph, line, sentence or word."""
    return split_text(text, limit, utf8_len)


# ---- the callback server ----


class _CallbackHandler(tornado.web.RequestHandler):
    """Hands GET and POST on the callback path to the channel."""

    def initialize(self, channel: WecomChannel) -> None:
        self.channel = channel

    def _query(self) -> dict[str, str]:
        names = ("msg_signature", "timestamp", "nonce", "echostr")
        # Base64 never has spaces: a '+' decoded as ' ' from an unencoded query is put back.
        return {n: self.get_query_argument(n, "").replace(" ", "+") for n in names}

    def _finish(self, status: int, body: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(body)

    async def get(self) -> None:
        self._finish(*self.channel.verify_url(self._query(), self.request.remote_ip or ""))

    async def post(self) -> None:
        peer = self.request.remote_ip or ""
        self._finish(*await self.channel.accept(self._query(), self.request.body, peer))


def _access_log(handler: tornado.web.RequestHandler) -> None:
    """Access log without the query string."""
    req = handler.request
    log.debug("wecom: %d %s %s (%s) %.1f ms", handler.get_status(), req.method, req.path, req.remote_ip,
              1000.0 * req.request_time())


class WecomChannel:
    """The WeCom self-built app: callback server, replay and duplicate checks, commands, replies."""

    name = "wecom"

    def __init__(self, cfg: WecomConfig, conversation: ConversationConfig, engine: Engine, store: LogStore, *,
                 retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0), stop_timeout: float = 15.0) -> None:
        missing = [env for env, value in (("WECOM_CORP_ID", cfg.corp_id), ("WECOM_AGENT_ID", cfg.agent_id),
                                          ("WECOM_CORP_SECRET", cfg.corp_secret), ("WECOM_TOKEN", cfg.token),
                                          ("WECOM_AES_KEY", cfg.aes_key)) if not value]
        if missing:
            raise ConfigError(f"WeCom channel enabled but {', '.join(missing)} not set; fix: export them.")
        try:
            self._crypto = WecomCrypto(cfg.token, cfg.aes_key, cfg.corp_id)
        except ValueError as exc:
            raise ConfigError(f"WECOM_AES_KEY is invalid ({exc}); fix: copy the 43-character "
                              "EncodingAESKey from the app's callback settings.") from None
        self.cfg = cfg
        self.conversation = conversation
        self.engine = engine
        self.store = store
        self.api = WecomApi(cfg, retry_delays)
        self.limiter = SlidingWindow(cfg.rate_limit_per_minute)
        self.port = 0
        self.stop_timeout = stop_timeout
        self._server: tornado.httpserver.HTTPServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._lang: dict[str, str] = {}

    # -- lifecycle --

    async def start(self) -> None:
        """Listen on cfg.listen (port 0 picks a free one, see .port) in the running loop."""
        host, _, port = self.cfg.listen.rpartition(":")
        app = tornado.web.Application([(re.escape(self.cfg.path), _CallbackHandler, {"channel": self})],
                                      log_function=_access_log)
        sockets = tornado.netutil.bind_sockets(int(port), host.strip("[]") or None)
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=1 << 20, idle_connection_timeout=60)
        self._server.add_sockets(sockets)
        log.info("wecom: callback server on %s:%d%s", host, self.port, self.cfg.path)

    async def stop(self) -> None:
        """Stop listening, let in-flight replies finish (bounded), close the HTTP client."""
        if self._server:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
        if self._tasks:
            done, pending = await asyncio.wait(set(self._tasks), timeout=self.stop_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("wecom: %d replies still running at shutdown were cancelled", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await self.api.close()

    async def resume(self, turn: PendingTurn) -> None:
        """Answer a logged but unanswered message after a restart."""
        msg = Incoming(self.name, turn.chat_id, turn.user_id, turn.text, turn.message_id, turn.conversation)
        try:
            async with self._lock_for(turn.chat_id):
                await self._ask_and_send(msg, language(turn.text), resume_turn_id=turn.turn_id)
        except Exception:
            log.exception("wecom: resuming turn %s failed", turn.turn_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock_for(self, user: str) -> asyncio.Lock:
        return self._user_locks.setdefault(user, asyncio.Lock())

    # -- HTTP --

    def verify_url(self, q: dict[str, str], peer: str) -> tuple[int, str]:
        """GET: the decrypted echostr when the signature is right, else 403."""
        if not all(q[k] for k in ("msg_signature", "timestamp", "nonce", "echostr")):
            return 400, "missing parameters"
        try:
            return 200, self._crypto.verify_url(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"])
        except (SignatureError, ReceiveIdError) as exc:
            log.warning("wecom: URL verification from %s rejected: %s", peer, exc)
            return 403, "forbidden"
        except DecryptError as exc:
            log.warning("wecom: URL verification from %s undecryptable: %s", peer, exc)
            return 400, "bad request"

    async def accept(self, q: dict[str, str], body: bytes, peer: str) -> tuple[int, str]:
        """POST: check, decrypt and queue one callback; answers at once, never waits for the model."""
        if not all(q[k] for k in ("msg_signature", "timestamp", "nonce")):
            return 400, "missing parameters"
        try:
            encrypt = parse_xml(body).get("Encrypt", "")
            if not encrypt:
                raise XmlError("no <Encrypt> element")
            self._crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], encrypt)
            if not await self._fresh(q, peer):
                return 403, "forbidden"
            fields = parse_xml(self._crypto.decrypt(encrypt))
        except SignatureError:
            log.warning("wecom: callback from %s has a bad msg_signature; rejected", peer)
            return 403, "forbidden"
        except ReceiveIdError:
            log.warning("wecom: callback from %s is for another corp id; rejected", peer)
            return 403, "forbidden"
        except (XmlError, DecryptError) as exc:
            log.warning("wecom: callback from %s rejected: %s", peer, exc)
            return 400, "bad request"
        await self._dispatch(fields)
        return 200, ""

    async def _fresh(self, q: dict[str, str], peer: str) -> bool:
        """Timestamp within the replay window and (timestamp, nonce, signature) never seen before."""
        try:
            skew = abs(time.time() - int(q["timestamp"]))
        except ValueError:
            skew = math.inf
        if skew > self.cfg.replay_window_s:
            log.warning("wecom: callback from %s has a stale timestamp (%.0f s off); rejected", peer, skew)
            return False
        key = f"{q['timestamp']}:{q['nonce']}:{q['msg_signature'].lower()}"
        if not await self.store.claim("wecom-replay", key):
            log.warning("wecom: replayed callback from %s (same timestamp, nonce, signature); rejected", peer)
            return False
        return True

    async def _dispatch(self, f: dict[str, str]) -> None:
        """Events are ignored; a message is claimed by MsgId and answered in the background."""
        kind, user = f.get("MsgType", ""), f.get("FromUserName", "")
        if kind == "event" or not user:
            log.debug("wecom: ignored %s %s", kind, f.get("Event", ""))
            return
        msg_id = f.get("MsgId") or f"{user}:{f.get('CreateTime', '')}:{kind}"
        if not await self.store.claim(self.name, msg_id):
            log.info("wecom: duplicate MsgId %s (a WeCom retry); already answered", msg_id)
            return
        text = f.get("Content", "").strip()
        problem, turn_id = None, None
        if kind == "text" and not text.startswith("/"):
            problem = await self._problem(user, text)
            if problem is None:
                # Logged before WeCom gets its 200: after a crash from here on, restart answers it.
                turn_id = await self.engine.accept(Incoming(self.name, user, user, text, msg_id))
        self._spawn(self._handle(user, kind, text, msg_id, problem, turn_id))

    # -- answering --

    async def _handle(self, user: str, kind: str, text: str, msg_id: str, problem: str | None,
                      turn_id: int | None) -> None:
        """Answer one message; per-user order is kept, failures are logged and never escape."""
        async with self._lock_for(user):
            try:
                if kind != "text":
                    await self.store.log_event(self.name, user, user, "non_text", kind)
                    await self._send(user, message("text_only", self._lang.get(user, "zh")))
                elif text.startswith("/"):
                    await self._command(user, text)
                elif problem is not None:
                    await self._send(user, problem)
                else:
                    await self._ask_and_send(Incoming(self.name, user, user, text, msg_id), self._lang[user],
                                             resume_turn_id=turn_id)
            except Exception as exc:
                log.exception("wecom: answering MsgId %s failed", msg_id)
                with contextlib.suppress(Exception):
                    await self.store.log_event(self.name, user, user, "send_failed", type(exc).__name__)

    async def _problem(self, user: str, text: str) -> str | None:
        """Why a text cannot be asked now (empty, too long, too fast), in the user's language; else None."""
        lang = self._lang[user] = language(text) if text else self._lang.get(user, "zh")
        limit = self.conversation.max_question_chars
        if not text:
            return message("empty", lang)
        if len(text) > limit:
            await self.store.log_event(self.name, user, user, "too_long", str(len(text)))
            return message("too_long", lang, limit=limit)
        wait = self.limiter.wait_seconds(user)
        if wait:
            await self.store.log_event(self.name, user, user, "rate_limited", "")
            return message("rate_limited", lang, seconds=wait)
        return None

    async def _ask_and_send(self, msg: Incoming, lang: str, resume_turn_id: int | None = None) -> None:
        try:
            reply = await self.engine.ask(msg, resume_turn_id=resume_turn_id)
            text = reply.text_with_sources() or message("apology", lang)
        except BotError as exc:
            log.error("wecom: engine failed: %s", exc)
            text = exc.user_message
        except Exception:
            log.exception("wecom: engine failed")
            text = message("apology", lang)
        await self._send(msg.chat_id, text)

    async def _command(self, user: str, text: str) -> None:
        cmd, _, arg = text.partition(" ")
        cmd, lang, admin = cmd.lower(), self._lang.get(user, "zh"), user in self.cfg.admins
        key = Incoming(self.name, user, user, "").conversation_key
        if cmd in ("/reload", "/stats") and not admin:
            log.warning("wecom: non-admin %s tried %s", user, cmd)
            await self.store.log_event(self.name, user, user, "admin_denied", cmd)
            return await self._send(user, message("admin_only", lang))
        if cmd in ("/help", "/start"):
            out = help_text(lang, self.engine.about(lang), admin=admin)
        elif cmd == "/reset":
            await self.engine.reset(key)
            out = message("reset", lang)
        elif cmd == "/sources":
            out = format_sources(await self.engine.sources(key)) or message("no_sources", lang)
        elif cmd == "/reload":
            await self.store.log_event(self.name, user, user, "admin_reload", "")
            out = (await self.engine.reload()).summary()
        elif cmd == "/stats":
            hours = float(arg) if re.fullmatch(r"\d+(\.\d+)?", arg.strip()) else 24.0
            out = (await self.engine.stats(since_hours=hours)).summary()
        else:
            out = message("unknown_command", lang, command=cmd)
        await self._send(user, out)

    async def _send(self, user: str, text: str) -> None:
        """Send a reply, split into parts of at most 2048 bytes."""
        for part in split_message(text):
            await self.api.send(user, part, self.cfg.reply_format)
