"""The WeCom AI bot (企业微信智能机器人) adapter: callbacks -> `Incoming`; the core's events -> a stream reply.

One adapter for both transports WeCom offers (docs/wecom-aibot-protocol.md): the long connection
(wecom_bot_ws.py, chosen when WECOM_BOT_ID and WECOM_BOT_SECRET are set: the bot dials out, no public
address) and callbacks (wecom_bot_callback.py, WECOM_BOT_TOKEN and WECOM_BOT_AES_KEY: WeCom posts to a URL
and polls the stream). A transport hands each callback here with an `Exchange`, its way of answering; the
answer streams into a `Bubble` (a stream message that WeCom shows growing), as Telegram edits a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import re
import secrets
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from bot.channels.common import split_text, utf8_len
from bot.channels.wecom_bot_callback import CallbackServer
from bot.channels.wecom_bot_reply import MAX_BYTES, Bubble, Exchange, Transport, Undelivered, fit_bytes
from bot.channels.wecom_bot_ws import LongConnection
from bot.channels.wecom_crypto import decrypt_media
from bot.errors import ConfigError
from bot.text import phrases
from bot.types import Attachment, Choice, Delta, Incoming, Notice, Progress, Queued, Reply

if TYPE_CHECKING:
    from bot.config import WecomBotConfig
    from bot.core.runtime import Core, Turn

log = logging.getLogger(__name__)
# WeCom's reasons for an inaccurate answer (feedback_event.inaccurate_reason_list), as its dialog names them.
_INACCURATE = {1: "与问题无关", 2: "内容不完整", 3: "内容有错误", 4: "数据分析错误"}

_LEADING_MENTION = re.compile(r"^\s*@\S+\s*")


def card(text: str, choices: tuple[Choice, ...], task_id: str) -> dict[str, Any]:
    """A button card for a notice's choices; each button's key is the command it sends."""
    title = text.strip().splitlines()[0] if text.strip() else "…"
    return {"card_type": "button_interaction", "task_id": task_id,
            "main_title": {"title": title[:26]},
            "button_list": [{"text": c.label, "style": 1 if i == 0 else 2, "key": c.command}
                            for i, c in enumerate(choices[:6])]}


def pressed(task_id: str, label: str) -> dict[str, Any]:
    """The card after a press: the chosen button alone, its key inert."""
    return {"card_type": "button_interaction", "task_id": task_id, "main_title": {"title": label[:26]},
            "button_list": [{"text": f"✓ {label}"[:20], "style": 2, "key": f"done:{task_id}"}]}


class WecomBotChannel:
    """The AI bot on either transport: messages to the core, answers streamed back, card presses as commands."""

    name = "wecom_bot"

    def __init__(self, cfg: WecomBotConfig, core: Core, transport: Transport | None = None) -> None:
        self.cfg, self.core = cfg, core
        self.transport = transport or self._transport()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cards: dict[str, dict[str, str]] = {}  # task id -> {command: label} of the cards sent

    def _transport(self) -> Transport:
        cfg = self.cfg
        long_conn, callbacks = bool(cfg.bot_id and cfg.secret), bool(cfg.token and cfg.aes_key)
        if long_conn and callbacks:
            raise ConfigError("WECOM_BOT_ID/WECOM_BOT_SECRET and WECOM_BOT_TOKEN/WECOM_BOT_AES_KEY are all set; "
                              "fix: keep the pair of the mode chosen in the bot's API settings (长连接 or 回调).")
        if long_conn:
            return LongConnection(cfg, self)
        if callbacks:
            return CallbackServer(cfg, self)
        missing = "WECOM_BOT_SECRET" if cfg.bot_id else "WECOM_BOT_AES_KEY" if cfg.token else "WECOM_BOT_ID"
        raise ConfigError(f"WeCom AI bot enabled but {missing} is not set; fix: export WECOM_BOT_ID and "
                          "WECOM_BOT_SECRET (long connection) or WECOM_BOT_TOKEN and WECOM_BOT_AES_KEY (callbacks).")

    # -- lifecycle --

    async def start(self) -> None:
        """Connect (long connection) or listen (callbacks)."""
        await self.transport.start()

    async def stop(self) -> None:
        """Let replies in flight finish (briefly), then disconnect."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.transport.stop()

    async def resume(self, turn: Turn) -> None:
        """A question a restart found unanswered: its answer as a new message (its old stream is gone)."""
        # In the background: a callback bubble waits for WeCom's next refresh, which must not hold up the rest.
        self.spawn(self._render(turn, self.transport.resumed(turn.incoming.chat_id, self.stream_id(turn),
                                                              turn.created_at)))

    async def notify_admins(self, text: str, only: set[str]) -> int:
        """A markdown message to those admins' single chats with the bot (the gaps digest), over the long
        connection; callbacks cannot start a conversation (WeCom lets them only answer one): 0."""
        if not isinstance(self.transport, LongConnection):
            return 0
        sent = 0
        for admin in (a for a in self.cfg.admins if a in only):
            try:
                await self.transport.push(admin, {"msgtype": "markdown", "markdown": {"content": text}})
                sent += 1
            except Exception as exc:  # one unreachable admin must not stop the others
                log.warning("wecom_bot: could not message admin %s: %s", admin, exc)
        return sent

    async def first_seen(self, scope: str, key: str) -> bool:
        """A transport's replay protection, kept in the log."""
        return await self.core.first_seen(scope, key)

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background, kept until done (stop waits for it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("wecom_bot: handling a callback failed", exc_info=exc)

    @staticmethod
    def stream_id(turn: Turn | None) -> str:
        """A new stream's id; a question's starts with its turn id, so a restart can find it again."""
        prefix = f"t{turn.turn_id}-" if turn is not None and turn.turn_id is not None else "n-"
        return prefix + secrets.token_hex(6)

    # -- callbacks in --

    def incoming(self, body: dict[str, Any], fetch_key: bytes | None = None) -> Incoming:
        """The neutral message for a message callback's body."""
        user = str((body.get("from") or {}).get("userid", ""))
        group = body.get("chattype") == "group"
        chat = str(body.get("chatid") or user) if group else user
        kind, text, attachment = str(body.get("msgtype", "")), "", None
        if kind in ("text", "voice"):  # WeCom turns speech into text itself
            text = str((body.get(kind) or {}).get("content", ""))
        elif kind == "mixed":
            items = (body.get("mixed") or {}).get("msg_item") or []
            text = " ".join(str((i.get("text") or {}).get("content", "")) for i in items if i.get("msgtype") == "text")
            kind = "text" if text.strip() else kind
        elif kind == "file" and (f := body.get("file") or {}).get("url"):
            key = _file_key(f.get("aeskey")) or fetch_key
            attachment = Attachment(str(f.get("filename") or "document"), None, partial(_download, f["url"], key))
            kind = "document"
        addressed = not group or self._mentioned(text)
        if group:
            text = self._strip_mention(text)
        return Incoming(self.name, chat, user, text.strip(), str(body.get("msgid") or "") or None, group=group,
                        addressed=addressed, is_admin=user in self.cfg.admins, kind="text" if kind == "text" else kind,
                        attachment=attachment)

    def _mentioned(self, text: str) -> bool:
        if self.cfg.names:
            return any(f"@{n.lstrip('@')}" in text for n in self.cfg.names)
        return bool(_LEADING_MENTION.match(text))

    def _strip_mention(self, text: str) -> str:
        for n in self.cfg.names:
            text = text.replace(f"@{n.lstrip('@')}", " ")
        return text if self.cfg.names else _LEADING_MENTION.sub("", text, count=1)

    async def on_message(self, body: dict[str, Any], exchange: Exchange, fetch_key: bytes | None = None) -> bool:
        """A message callback: its turn started in a bubble (True), or nothing to answer (False)."""
        turn = await self.core.receive(self.incoming(body, fetch_key))
        if turn is None:
            return False
        self._answer(turn, exchange.bubble(self.stream_id(turn)))
        return True

    def _answer(self, turn: Turn, bubble: Bubble) -> None:
        """A sign of life in the bubble at once (as Telegram's placeholder), the answer in the background. An
        answer's first frame carries its stream id as WeCom's feedback id: WeCom shows its own 👍 / 👎 under
        it (with a dialog for the reason) and reports a press as a feedback event."""
        bubble.feedback = bubble.stream_id if turn.rateable else ""
        bubble.show(phrases.message("thinking", turn.lang))
        self.spawn(self._render(turn, bubble))

    async def on_event(self, body: dict[str, Any], exchange: Exchange) -> None:
        """An event callback: the welcome on entering the chat, a card's press, a kick (the transport's)."""
        event = body.get("event") or {}
        kind = event.get("eventtype")
        if kind == "enter_chat":
            await self._welcome(body, exchange)
        elif kind == "template_card_event":
            await self._press(body, event.get("template_card_event") or {}, exchange)
        elif kind == "feedback_event":
            await self._rated(body, event.get("feedback_event") or {})
        else:
            log.debug("wecom_bot: event %s ignored", kind)

    async def _welcome(self, body: dict[str, Any], exchange: Exchange) -> None:
        msg = self.incoming({**body, "msgtype": "text", "text": {"content": "/start"}})
        text = self.cfg.welcome
        if not text and (turn := await self.core.receive(msg)) is not None:
            final = await turn.reply()
            text = final.text if isinstance(final, Notice) else final.text_with_sources()
        text = text or phrases.message("greeting", "zh")
        await exchange.respond({"msgtype": "text", "text": {"content": fit_bytes(text)}})

    async def _press(self, body: dict[str, Any], event: dict[str, Any], exchange: Exchange) -> None:
        """A button: the card updated at once (WeCom waits 5 s), then its command run like a typed one."""
        task_id, key = str(event.get("task_id", "")), str(event.get("event_key", ""))
        if key.startswith("done:"):
            return
        label = self._cards.get(task_id, {}).get(key, key)
        presser = str((body.get("from") or {}).get("userid", ""))
        # Only the presser's card changes: in a group a reader's press (refused by the core) leaves the
        # admin's buttons in place.
        await exchange.respond({"response_type": "update_template_card", "userids": [presser],
                                "template_card": pressed(task_id, label)})
        msg = dataclasses.replace(self.incoming({**body, "msgtype": "text", "text": {"content": key}}), addressed=True)
        turn = await self.core.receive(msg)
        if turn is not None:
            self._answer(turn, exchange.bubble(self.stream_id(turn)))

    async def _rated(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """WeCom's 👍 (type 1), 👎 (2, with the reasons picked and typed in its dialog) or a withdrawal (3) of
        an answer: the reader's rating, through the core like the buttons elsewhere (WeCom shows it; the
        event takes an empty reply). A repeated event is dropped by its msgid, as messages are."""
        turn_id = re.match(r"^t(\d+)-", str(event.get("id", "")))
        rating = {1: "up", 2: "down", 3: "clear"}.get(int(event.get("type") or 0))
        if turn_id is None or rating is None:
            return
        reasons = [_INACCURATE.get(int(c), "") for c in event.get("inaccurate_reason_list") or [] if str(c).isdigit()]
        reason = "；".join([r for r in reasons if r] + [str(event.get("content") or "").strip()]).strip("；")
        command = f"/rate {turn_id.group(1)} {rating} {reason}".strip()
        msg = dataclasses.replace(self.incoming({**body, "msgtype": "text", "text": {"content": command}}),
                                  addressed=True)
        if (turn := await self.core.receive(msg)) is not None:
            await turn.reply()

    # -- answering --

    async def _render(self, turn: Turn, bubble: Bubble) -> None:
        """Stream the turn into the bubble, finish it, and tell the turn once whether it arrived."""
        error, final, lang, via = None, False, turn.lang, ""
        try:
            text, image, choices = await self._stream(turn, bubble)
            parts = split_text(text, MAX_BYTES, utf8_len) or [phrases.message("apology", lang)]
            task_id = f"c{secrets.token_hex(8)}" if choices else ""
            if choices:
                self._cards[task_id] = {c.command: c.label for c in choices}
            via = await bubble.finish(parts[0], image, card(parts[0], choices, task_id) if choices else None)
            for part in parts[1:]:
                await bubble.follow(part)
        except asyncio.CancelledError:  # shutdown: the question stays pending for the restart
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bubble.interrupted(phrases.message("restarting", lang)), 2.0)
            raise
        except Undelivered as exc:
            log.warning("wecom_bot: reply to %s not delivered: %s", turn.incoming.chat_id, exc)
            error, final = str(exc), exc.final
        except Exception as exc:
            log.exception("wecom_bot: answering message %s failed", turn.incoming.message_id)
            error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # kept waiting for a re-send; the user is told now
                await asyncio.wait_for(bubble.finish(phrases.message("apology", lang)), 10.0)
        with contextlib.suppress(Exception) if error else contextlib.nullcontext():
            await turn.delivered(error, final=final, via=via)

    async def _stream(self, turn: Turn, bubble: Bubble) -> tuple[str, bytes | None, tuple[Choice, ...]]:
        """Show the turn's events as they come; the final text, picture and buttons."""
        lang, draft = turn.lang, ""
        async for event in turn.events():
            if isinstance(event, Queued):
                bubble.show(phrases.message("queued", lang, n=event.position))
            elif isinstance(event, Delta):
                draft += event.text
                bubble.show(fit_bytes(draft))
            elif isinstance(event, Progress) and not draft:
                bubble.show(phrases.progress(event, lang))
            elif isinstance(event, Reply):
                return phrases.final_text(event, lang), None, ()
            elif isinstance(event, Notice):
                return event.text or phrases.message("apology", lang), event.image, event.choices
        raise RuntimeError("the core's events ended without a Reply or Notice")


def _file_key(aeskey: object) -> bytes | None:
    """A media file's own AES key (base64 in the callback), or None."""
    if not isinstance(aeskey, str) or not aeskey:
        return None
    return base64.b64decode(aeskey + "=" * (-len(aeskey) % 4))


async def _download(url: str, key: bytes | None) -> bytes:
    """A file WeCom links to (valid 5 minutes), decrypted with its key."""
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
        resp = await client.get(url)
        resp.raise_for_status()
    return decrypt_media(resp.content, key) if key else resp.content
