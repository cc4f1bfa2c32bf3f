"""Frame and body rules of the WeCom AI bot (智能机器人) shared by the long-connection and callback fakes.

Written from docs/wecom-aibot-protocol.md, not from the product. A rule broken raises `Reject(errcode, errmsg)`.
Also here: parsing a long-connection frame, and the AES-256-CBC media encryption.

Error codes. Only 846605, 846608, 853000 and 40058 were seen from WeCom (docs §4); the rest are this fake's choice
(most borrow the meaning WeCom's general API gives the number):

| errcode | errmsg | when |
|---|---|---|
| 40001 | invalid frame | not JSON, not an object, no str `cmd`, no non-empty `headers.req_id`, no body dict |
| 40004 | invalid media type | upload `type` not file/image/voice/video; a media_id sent as another type |
| 40006 | invalid upload | chunk index/size out of range, chunks missing, total size or md5 mismatch, > 100 chunks |
| 40007 | invalid media_id | unknown media_id or upload_id |
| 40008 | invalid msgtype | msgtype not allowed for this command (or for a group chat's response_url) |
| 40035 | invalid parameter | a field missing or of the wrong type or value |
| 40040 | invalid template_card | card_type, main_title, task_id format, button_list, a task_id unlike the event's |
| 40041 | task_id already used | a card's task_id was sent before (unique per bot on first send) |
| 40058 | content exceed max length | content (stream, markdown, text) over 20480 UTF-8 bytes |
| 40060 | unknown cmd | a cmd the gateway does not know |
| 40061 | chatid not reachable | aibot_send_msg to a chat that never messaged the bot |
| 60140 | response_url used | a response_url POSTed to a second time |
| 60141 | invalid response_url | an unknown or expired (after 3600 s) response_url |
| 846605 | invalid req_id | req_id not issued on this connection, of the wrong kind, or already used up |
| 846608 | stream message update expired | a stream frame more than stream_expiry_s after the req_id's first reply |
| 846609 | event reply deadline passed | a welcome/update reply more than event_deadline_s after its event |
| 853000 | invalid bot_id or secret | subscribe with wrong credentials (the connection stays open) |
| 853001 | not subscribed | any cmd but aibot_subscribe before a successful subscribe |
| 853002 | already subscribed | aibot_subscribe again on a subscribed connection |
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAX_CONTENT = 20480  # bytes of UTF-8, for stream, markdown and text content
MAX_MSG_ITEMS = 10
MAX_IMAGE = 10 * 1024 * 1024
CARD_TYPES = ("text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction")
INTERACTIVE = ("button_interaction", "vote_interaction", "multiple_interaction")
TASK_ID = re.compile(r"[0-9A-Za-z_\-@]{1,128}")
MEDIA_TYPES = ("file", "image", "voice", "video")

INVALID_FRAME = 40001
MEDIA_TYPE = 40004
UPLOAD = 40006
MEDIA_ID = 40007
MSGTYPE = 40008
PARAM = 40035
CARD = 40040
TASK_ID_USED = 40041
TOO_LONG = 40058
UNKNOWN_CMD = 40060
CHAT_UNREACHABLE = 40061
RESPONSE_URL_USED = 60140
RESPONSE_URL_INVALID = 60141
INVALID_REQ_ID = 846605
STREAM_EXPIRED = 846608
EVENT_DEADLINE = 846609
BAD_CREDENTIALS = 853000
NOT_SUBSCRIBED = 853001
ALREADY_SUBSCRIBED = 853002


class Reject(Exception):
    """A request WeCom would refuse: the errcode and errmsg it answers with."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg


def need_dict(body: dict[str, Any], key: str) -> dict[str, Any]:
    """body[key], which must be a JSON object."""
    value = body.get(key)
    if not isinstance(value, dict):
        raise Reject(PARAM, f"{key} must be an object")
    return value


def need_str(body: dict[str, Any], key: str, *, empty: bool = False) -> str:
    """body[key], which must be a string (non-empty unless `empty`)."""
    value = body.get(key)
    if not isinstance(value, str) or (not value and not empty):
        raise Reject(PARAM, f"{key} must be a {'' if empty else 'non-empty '}string")
    return value


def check_content(value: Any, what: str, *, empty: bool = False) -> str:
    """A content string of at most 20480 UTF-8 bytes."""
    if not isinstance(value, str) or (not value and not empty):
        raise Reject(PARAM, f"{what} must be a {'' if empty else 'non-empty '}string")
    if len(value.encode("utf-8")) > MAX_CONTENT:
        raise Reject(TOO_LONG, "content exceed max length")
    return value


def check_markdown(body: dict[str, Any]) -> None:
    """{"markdown": {"content": ≤20480 B, "feedback"?: {"id"}}}."""
    md = need_dict(body, "markdown")
    check_content(md.get("content"), "markdown.content")
    check_feedback(md)


def check_feedback(part: dict[str, Any]) -> None:
    """An optional feedback {"id": ≤256 bytes}."""
    if "feedback" not in part:
        return
    fb = part["feedback"]
    if not isinstance(fb, dict) or not isinstance(fb.get("id"), str) or len(fb["id"].encode()) > 256:
        raise Reject(PARAM, "feedback.id must be a string of at most 256 bytes")


def check_stream(stream: dict[str, Any]) -> None:
    """A stream dict: non-empty id, content ≤ 20480 B, bool finish, msg_item only when finished."""
    need_str(stream, "id")
    check_content(stream.get("content", ""), "stream.content", empty=True)
    if not isinstance(stream.get("finish", False), bool):
        raise Reject(PARAM, "stream.finish must be a boolean")
    check_feedback(stream)
    if "msg_item" in stream:
        check_msg_items(stream["msg_item"], finish=stream.get("finish") is True)


def check_msg_items(items: Any, *, finish: bool) -> None:
    """Images in a stream: only on the final frame, at most 10, base64 JPG/PNG ≤ 10 MB with the md5 of the raw bytes."""
    if not finish:
        raise Reject(PARAM, "msg_item only allowed when finish is true")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MSG_ITEMS:
        raise Reject(PARAM, "msg_item must be a list of 1 to 10 items")
    for item in items:
        if not isinstance(item, dict) or item.get("msgtype") != "image" or not isinstance(item.get("image"), dict):
            raise Reject(MSGTYPE, "msg_item entries must be images")
        image = item["image"]
        try:
            raw = base64.b64decode(need_str(image, "base64"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Reject(PARAM, "msg_item image.base64 is not base64") from exc
        if hashlib.md5(raw).hexdigest() != need_str(image, "md5").lower():
            raise Reject(PARAM, "msg_item image.md5 does not match the image")
        if len(raw) > MAX_IMAGE or not raw.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
            raise Reject(PARAM, "msg_item image must be a JPG or PNG of at most 10 MB")


def check_card(card: Any, *, used_task_ids: set[str] | None = None, update_of: str | None = None) -> str:
    """A template card; returns its task_id ("" if none). A new card's task_id must not be in `used_task_ids`;
    an update's (`update_of` set) must equal the event's."""
    if not isinstance(card, dict):
        raise Reject(CARD, "template_card must be an object")
    kind = card.get("card_type")
    if kind not in CARD_TYPES:
        raise Reject(CARD, f"invalid card_type {kind!r}")
    if not isinstance(card.get("main_title"), dict):
        raise Reject(CARD, "main_title must be an object")
    task_id = card.get("task_id", "")
    needs_task = kind in INTERACTIVE or "task_id" in card
    if needs_task and (not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id)):
        raise Reject(CARD, "task_id must match [0-9A-Za-z_\\-@]{1,128}")
    if kind == "button_interaction" or "button_list" in card:
        _check_buttons(card.get("button_list"))
    if update_of is not None and task_id != update_of:
        raise Reject(CARD, "task_id differs from the event's task_id")
    if update_of is None and used_task_ids is not None and task_id and task_id in used_task_ids:
        raise Reject(TASK_ID_USED, "task_id already used")
    return task_id


def _check_buttons(buttons: Any) -> None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6:
        raise Reject(CARD, "button_list must hold 1 to 6 buttons")
    keys: set[str] = set()
    for button in buttons:
        if not isinstance(button, dict):
            raise Reject(CARD, "a button must be an object")
        text, key = button.get("text"), button.get("key")
        if not isinstance(text, str) or not text or not isinstance(key, str) or not key:
            raise Reject(CARD, "a button needs a non-empty text and key")
        if len(key.encode("utf-8")) > 1024 or key in keys:
            raise Reject(CARD, "button keys must be unique and at most 1024 bytes")
        keys.add(key)


def parse_frame(raw: str | bytes) -> tuple[str, str, dict[str, Any], str]:
    """(cmd, req_id, body, problem) of one frame from the bot; problem is "" when the frame is well formed."""
    frame: Any = None
    if isinstance(raw, str):
        try:
            frame = json.loads(raw)
        except ValueError:
            frame = None
    if not isinstance(frame, dict):
        return "", "", {"raw": raw if isinstance(raw, str) else repr(raw)}, "invalid frame: not a JSON object"
    cmd, headers, body = frame.get("cmd"), frame.get("headers"), frame.get("body")
    req_id = headers.get("req_id") if isinstance(headers, dict) else None
    cmd_s = cmd if isinstance(cmd, str) else ""
    req_s = req_id if isinstance(req_id, str) else ""
    body_d = body if isinstance(body, dict) else {}
    problem = ""
    if not cmd_s:
        problem = "invalid frame: no cmd"
    elif not req_s:
        problem = "invalid frame: no headers.req_id"
    elif cmd_s != "ping" and not isinstance(body, dict):
        problem = "invalid frame: no body object"
    return cmd_s, req_s, body_d, problem


def encrypt_file(key: bytes, data: bytes) -> bytes:
    """AES-256-CBC with IV = key[:16], PKCS#7 padded to a multiple of 32 bytes (how WeCom serves media)."""
    padder = padding.PKCS7(256).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return enc.update(padded) + enc.finalize()


def callback_head(aibotid: str, user: str, chat_id: str | None, msgtype: str,
                  msgid: str | None = None) -> dict[str, Any]:
    """The fields every AI bot callback body starts with (docs §1.5, §2.2)."""
    body: dict[str, Any] = {"msgid": msgid or uuid.uuid4().hex, "aibotid": aibotid,
                            "chattype": "group" if chat_id else "single"}
    if chat_id:
        body["chatid"] = chat_id
    body["from"] = {"userid": user}
    body["msgtype"] = msgtype
    return body
