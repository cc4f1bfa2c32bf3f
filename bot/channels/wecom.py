"""The WeCom (企业微信) self-built app adapter: encrypted callbacks -> `Incoming`; the core's reply -> `message/send`.

A tornado server answers the callback URL: GET verifies the URL, POST checks signature, freshness and replay
(the protocol's own rules), decrypts, hands the message to the core, acknowledges at once with HTTP 200 and
renders the reply in a background task. The core drops a MsgId it has seen, so WeCom's retries (and repeats
after a restart) are answered once, unless the answer was never delivered: then the repeat sends it.
Replies go out through `WecomApi` (wecom_api.py), split at sentence boundaries into parts of at most
2048 bytes (common.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from functools import partial
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from bot.channels.common import split_text, utf8_len
from bot.channels.wecom_api import WecomApi, WecomApiError
from bot.channels.wecom_crypto import (
    DecryptError,
    ReceiveIdError,
    SignatureError,
    WecomCrypto,
    XmlError,
    callback_query,
    parse_xml,
    replay_key,
    skew_s,
)
from bot.errors import ConfigError
from bot.text.phrases import final_text, message
from bot.types import Attachment, Incoming, Notice, Reply

if TYPE_CHECKING:
    from bot.config import WecomConfig
    from bot.core.runtime import Core, Turn

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
        return callback_query(self.get_query_argument)  # type: ignore[arg-type]

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

    def __init__(self, cfg: WecomConfig, core: Core, *,
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
        self.core = core
        self.api = WecomApi(cfg, retry_delays)
        self.port = 0
        self.stop_timeout = stop_timeout
        self._server: tornado.httpserver.HTTPServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._user_locks: dict[str, asyncio.Lock] = {}

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

    async def resume(self, turn: Turn) -> None:
        """Answer a logged but unanswered question after a restart."""
        async with self._lock_for(turn.incoming.user_id):
            await self._render(turn)

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
        if (skew := skew_s(q["timestamp"])) > self.cfg.replay_window_s:
            log.warning("wecom: callback from %s has a stale timestamp (%.0f s off); rejected", peer, skew)
            return False
        if not await self.core.first_seen("wecom-replay", replay_key(q)):
            log.warning("wecom: replayed callback from %s (same timestamp, nonce, signature); rejected", peer)
            return False
        return True

    async def _dispatch(self, f: dict[str, str]) -> None:
        """Events are ignored; a message goes to the core (which logs a question before WeCom gets its 200)
        and is answered in the background, in order per user."""
        kind, user = f.get("MsgType", ""), f.get("FromUserName", "")
        if kind == "event" or not user:
            log.debug("wecom: ignored %s %s", kind, f.get("Event", ""))
            return
        incoming = self.incoming(f)
        turn = await self.core.receive(incoming)
        if turn is None:
            log.info("wecom: MsgId %s not answered again (a WeCom retry)", incoming.message_id)
            return
        self._spawn(self._answer(turn))

    def incoming(self, f: dict[str, str]) -> Incoming:
        """The neutral message for a callback's fields. An admin's shared link is its URL as text (the core
        offers to add that page); a file, where WeCom delivers one, is downloaded with media/get if needed."""
        kind, user = f.get("MsgType", ""), f.get("FromUserName", "")
        msg_id = f.get("MsgId") or f"{user}:{f.get('CreateTime', '')}:{kind}"
        text, attachment = f.get("Content", "").strip() if kind == "text" else "", None
        if kind == "link" and f.get("Url") and user in self.cfg.admins:
            kind, text = "text", f["Url"].strip()
        elif kind == "file" and (media_id := f.get("MediaId")):
            size = int(f["FileSize"]) if f.get("FileSize", "").isdigit() else None
            attachment = Attachment(f.get("FileName") or "document", size, partial(self.api.media, media_id))
            kind = "document"
        return Incoming(self.name, user, user, text, msg_id, is_admin=user in self.cfg.admins, kind=kind,
                        attachment=attachment)

    # -- answering --

    async def _answer(self, turn: Turn) -> None:
        """Render one turn in per-user order; failures are logged and never escape."""
        async with self._lock_for(turn.incoming.user_id):
            await self._render(turn)

    async def _render(self, turn: Turn) -> None:
        """WeCom is not streamed: the checked answer with its sources (or the core's notice) as text."""
        msg, error, permanent = turn.incoming, None, False
        try:
            final = await turn.reply()
            text = final_text(final, turn.lang) if isinstance(final, Reply) else final.text
            if isinstance(final, Notice) and final.image is not None:
                try:  # the picture is extra: its numbers follow as text in any case
                    await self.api.send_image(msg.user_id, final.image)
                except WecomApiError as exc:
                    log.warning("wecom: the chart for %s was not sent: %s", msg.user_id, exc)
            if isinstance(final, Notice) and final.choices:  # no buttons in a text message: the commands
                text += "\n" + "\n".join(message("reply_with", turn.lang, label=c.label, command=c.command)
                                         for c in final.choices)
            await self._send(msg.user_id, text or message("apology", turn.lang))
        except Exception as exc:
            log.exception("wecom: answering MsgId %s failed", msg.message_id)
            # Kept waiting (a restart or WeCom's repeat sends it) unless WeCom refused it for good.
            error, permanent = f"{type(exc).__name__}: {exc}", isinstance(exc, WecomApiError) and exc.permanent
            if not turn.is_question:  # a question's failure is logged by `delivered`; a command's gets an apology
                with contextlib.suppress(Exception):
                    await self.core.note(msg, "reply_failed", type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self._send(msg.user_id, message("apology", turn.lang))
        with contextlib.suppress(Exception) if error else contextlib.nullcontext():
            await turn.delivered(error, final=permanent)

    async def notify_admins(self, text: str, only: set[str]) -> int:
        """A message to those admins (the gaps digest); how many got it."""
        sent = 0
        for admin in (a for a in self.cfg.admins if a in only):
            try:
                await self._send(admin, text)
                sent += 1
            except Exception as exc:  # one admin out of the app's range must not stop the others
                log.warning("wecom: could not message admin %s: %s", admin, exc)
        return sent

    async def _send(self, user: str, text: str) -> None:
        """Send a reply, split into parts of at most 2048 bytes."""
        for part in split_message(text):
            await self.api.send(user, part, self.cfg.reply_format)
