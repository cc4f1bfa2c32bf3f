"""What a Telegram update is, as the neutral `Incoming`: who and where, admin or not, the user's language,
and whether a group message is meant for the bot (a command, a mention, a reply to one of its messages)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot, Message, Update
from telegram.constants import ChatType, MessageEntityType

from bot.types import Attachment, Incoming


def incoming(update: Update, bot: Bot, admins: list[str]) -> Incoming | None:
    """The neutral message for an update: who, where, whether it is meant for the bot."""
    msg, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if msg is None or user is None or chat is None:
        return None
    private = chat.type == ChatType.PRIVATE
    text, addressed = _text(msg, private, bot)
    replied = msg.reply_to_message
    reply_to = str(replied.message_id) if replied and replied.from_user and replied.from_user.id == bot.id else None
    if msg.document is not None:  # its caption is its text; in a group, sent in reply to the bot is for it
        text, addressed = msg.caption or "", private or reply_to is not None
    if update.callback_query is not None:  # a button under the bot's notice: it sends its command
        text, addressed, reply_to = update.callback_query.data or "", True, None
    return Incoming("telegram", str(chat.id), str(user.id), text,
                    None if update.callback_query else str(msg.message_id), group=not private,
                    addressed=addressed, is_admin=str(user.id) in admins,
                    lang="zh" if (user.language_code or "").lower().startswith("zh") else "en",
                    kind="text" if msg.text is not None or update.callback_query else _kind(msg),
                    attachment=_attachment(msg, bot), reply_to=reply_to, replies=True)


def _attachment(msg: Message, bot: Bot) -> Attachment | None:
    """A document's name and size, and how to download it (getFile, then the file URL)."""
    doc = msg.document
    if doc is None:
        return None

    async def fetch() -> bytes:
        file = await bot.get_file(doc.file_id)
        return bytes(await file.download_as_bytearray())

    return Attachment(doc.file_name or "document", doc.file_size, fetch)


def _text(msg: Message, private: bool, bot: Bot) -> tuple[str, bool]:
    """(text, addressed): a command loses its @botname; a group message counts only when it is a
    command, a mention of the bot or a reply to one of its messages."""
    if msg.text is None:
        return "", private
    commands = msg.parse_entities([MessageEntityType.BOT_COMMAND])
    command = next((v for e, v in commands.items() if e.offset == 0), "")
    if command:
        name, _, target = command.partition("@")
        rest = msg.text[len(command):].strip()
        return f"{name} {rest}".strip(), not target or target.lower() == (bot.username or "").lower()
    if private:
        return msg.text, True
    replied = msg.reply_to_message
    to_bot = bool(replied and replied.from_user and replied.from_user.id == bot.id)
    text = msg.text
    kinds = [MessageEntityType.MENTION, MessageEntityType.TEXT_MENTION]
    for entity, value in msg.parse_entities(kinds).items():
        if value.lower() == f"@{bot.username}".lower() or (entity.user and entity.user.id == bot.id):
            to_bot = True
            text = text.replace(value, " ")
    return " ".join(text.split()), to_bot


def _kind(msg: Message) -> str:
    """The name of a non-text message's kind (photo, voice, sticker …) for the log."""
    for kind in ("photo", "voice", "audio", "video", "document", "sticker", "animation", "location", "contact"):
        if getattr(msg, kind, None):
            return kind
    return "other"


class TakenFirst(asyncio.Queue[Any]):
    """PTB's update queue for the webhook: each update is taken (the core logs its message) before it is
    queued. The webhook server awaits the queue before it answers 200, so a process killed after that answer
    has the question in the log, where another instance sharing it answers it; Telegram never sends an
    acknowledged update again, and a process killed before it gets the update again."""

    def __init__(self, take: Callable[[Update], Awaitable[None]]) -> None:
        super().__init__()
        self._take = take

    async def put(self, item: Any) -> None:
        """Take an update, then queue it for the handlers."""
        if isinstance(item, Update):
            await self._take(item)
        await super().put(item)
