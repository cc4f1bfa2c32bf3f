"""Files, photos and buttons for the fake Bot API: documents users send (getFile and the file URL),
sendPhoto with a PNG upload, inline keyboards, and callback queries when a user presses a button.

Strict where Telegram is: getFile refuses files over 20 MB, a photo must be an image, a caption is at
most 1024 characters, button data at most 64 bytes, and a callback query must be answered.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

from tornado.web import RequestHandler

from tests.fakes.telegram_markup import ApiError

if TYPE_CHECKING:
    from tests.fakes.telegram_server import FakeTelegram, Msg

MAX_DOWNLOAD = 20 * 1024 * 1024  # getFile's limit for bots
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64


class MediaApi:
    """Mixed into FakeTelegram: what the server keeps of files, photos and presses."""

    files: dict[str, tuple[str, bytes]]  # file_id -> (file_path, bytes)
    answered_queries: list[str]
    toasts: dict[str, str]  # query id -> the text shown to the presser ("" none)

    def _media_init(self) -> None:
        self.files, self.answered_queries, self.toasts = {}, [], {}
        self._file_ids = itertools.count(1)
        self._query_ids = itertools.count(1)

    def user_sends_document(self: FakeTelegram, chat: dict[str, Any], user_id: int, name: str, data: bytes,
                            *, mime: str = "application/octet-stream", caption: str = "",
                            language_code: str = "zh", reply_to: int | None = None) -> int:
        """A person sends a file; its bytes are served at the file URL after getFile."""
        from tests.fakes.telegram_server import Msg

        file_id = f"BQAC{next(self._file_ids):06d}"
        self.files[file_id] = (f"documents/file_{file_id}{name[name.rfind('.'):] if '.' in name else ''}", data)
        msg = Msg(next(self._ids), chat, self.user(user_id, language_code=language_code), caption, int(time.time()),
                  from_bot=False, reply_to=reply_to,
                  document={"file_id": file_id, "file_unique_id": file_id[::-1], "file_name": name,
                            "mime_type": mime, "file_size": len(data)})
        self.messages[msg.message_id] = msg
        self.push_update({"message": self._message_json(msg)})
        return msg.message_id

    def press(self: FakeTelegram, message_id: int, user_id: int, label: str, *, language_code: str = "zh") -> str:
        """A person presses the button labelled `label` under a bot message; returns the query id."""
        msg = self.messages[message_id]
        buttons = [b for row in msg.buttons for b in row]
        button = next(b for b in buttons if label in b["text"])
        query_id = str(next(self._query_ids))
        self.push_update({"callback_query": {
            "id": query_id, "from": self.user(user_id, language_code=language_code), "chat_instance": "1",
            "message": self._message_json(msg), "data": button["callback_data"]}})
        return query_id

    def photos(self: FakeTelegram, chat_id: int) -> list[Msg]:
        """The bot's photo messages in a chat, oldest first."""
        return [m for m in self.bot_messages(chat_id) if m.photo is not None]

    # ---- the API ---------------------------------------------------------------------------------
    async def _api_getFile(self: FakeTelegram, p: dict[str, Any], _: Any) -> Any:
        found = self.files.get(str(p.get("file_id")))
        if found is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, data = found
        if len(data) > MAX_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": p["file_id"], "file_unique_id": str(p["file_id"])[::-1], "file_size": len(data),
                "file_path": path}

    async def _api_sendPhoto(self: FakeTelegram, p: dict[str, Any], _: Any) -> Any:
        from tests.fakes.telegram_server import Msg

        photo = p.get("photo")
        if not isinstance(photo, bytes) or not photo.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8")):
            raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
        caption = str(p.get("caption") or "")
        if len(caption) > MAX_CAPTION:
            raise ApiError(400, "Bad Request: message caption is too long")
        chat_id = int(p["chat_id"])
        chat = self.chats.get(chat_id) or {"id": chat_id, "type": "private", "first_name": "Ann"}
        reply = p.get("reply_parameters") or {}
        msg = Msg(next(self._ids), chat, self.bot_user, caption, int(time.time()), from_bot=True, photo=photo,
                  reply_to=reply.get("message_id"))
        self.messages[msg.message_id] = msg
        return self._message_json(msg)

    async def _api_answerCallbackQuery(self: FakeTelegram, p: dict[str, Any], _: Any) -> Any:
        query = str(p["callback_query_id"])
        if query in self.answered_queries:  # Telegram: "query is too old and response timeout expired..."
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        if len(str(p.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        self.answered_queries.append(query)
        self.toasts[query] = str(p.get("text") or "")
        return True

    async def _api_editMessageReplyMarkup(self: FakeTelegram, p: dict[str, Any], _: Any) -> Any:
        msg = self.messages.get(int(p.get("message_id") or 0))
        if msg is None or not msg.from_bot:
            raise ApiError(400, "Bad Request: message to edit not found")
        if buttons_of(p) == msg.buttons:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and "
                                "reply markup are exactly the same as a current content and reply markup")
        msg.buttons = buttons_of(p)
        return self._message_json(msg)


def buttons_of(p: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The inline keyboard of a send or edit (none: no buttons), checked as Telegram checks it."""
    markup = p.get("reply_markup") or {}
    rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
    for button in (b for row in rows for b in row):
        if len(str(button.get("callback_data", "")).encode()) > MAX_CALLBACK_DATA:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return rows


class FileHandler(RequestHandler):
    """GET /file/bot<token>/<file_path>: a file's bytes, as the Bot API's file URL serves them."""

    def initialize(self, fake: FakeTelegram) -> None:
        self.fake = fake

    def get(self, token: str, path: str) -> None:
        data = next((d for p, d in self.fake.files.values() if p == path), None)
        if token != self.fake.token or data is None:
            self.set_status(404)
            self.finish("Not Found")
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(data)
