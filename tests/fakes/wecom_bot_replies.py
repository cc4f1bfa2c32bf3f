"""The reply, push and upload commands of the fake long-connection gateway (docs/wecom-aibot-protocol.md §1.6-1.9).

A mixin of FakeGateway: each handler takes (connection, req_id, body), raises Reject for a frame WeCom would refuse,
and returns the response body (or None) for one it accepts. State changes happen only once every check has passed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.wecom_bot_checks import (
    CHAT_UNREACHABLE,
    EVENT_DEADLINE,
    MEDIA_ID,
    MEDIA_TYPE,
    MEDIA_TYPES,
    MSGTYPE,
    PARAM,
    STREAM_EXPIRED,
    UPLOAD,
    Reject,
    check_card,
    check_content,
    check_markdown,
    check_stream,
    need_dict,
    need_str,
)

if TYPE_CHECKING:
    from tests.fakes.wecom_bot_gateway import Issued, Socket

RESPOND_TYPES = ("stream", "markdown", "template_card", *MEDIA_TYPES)
PUSH_TYPES = ("markdown", "template_card", *MEDIA_TYPES)
WELCOME_TYPES = ("text", "template_card")
MAX_CHUNK = 512 * 1024  # bytes before base64
MAX_CHUNKS = 100

Handler = Callable[["Socket", str, dict[str, Any]], "dict[str, Any] | None"]


@dataclass
class Upload:
    """An upload session opened by aibot_upload_media_init."""

    kind: str
    filename: str
    total_size: int
    total_chunks: int
    md5: str | None
    at: float
    chunks: dict[int, bytes] = field(default_factory=dict)


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Reject(PARAM, f"{key} must be an integer")
    return value


class Replies:
    """The gateway's handlers for aibot_respond_*, aibot_send_msg and aibot_upload_media_*."""

    stream_expiry_s: float
    event_deadline_s: float

    def __init__(self) -> None:
        self.media: dict[str, tuple[str, bytes]] = {}  # media_id -> (type, bytes) of finished uploads
        self.media_names: dict[str, str] = {}  # media_id -> the filename given at init
        self.upload_ttl_s = 1800.0
        self._chats: set[str] = set()  # userids (single chats) and chatids (groups) that messaged the bot
        self._task_ids: set[str] = set()  # task_ids of every card sent
        self._uploads: dict[str, Upload] = {}

    def _issued_for(self, sock: Socket, req_id: str, kind: str) -> Issued:
        raise NotImplementedError

    def reply_handlers(self) -> dict[str, Handler]:
        """cmd -> handler for every command but subscribe and ping."""
        return {
            "aibot_respond_msg": self._respond_msg,
            "aibot_respond_welcome_msg": self._welcome,
            "aibot_respond_update_msg": self._update,
            "aibot_send_msg": self._send_msg,
            "aibot_upload_media_init": self._upload_init,
            "aibot_upload_media_chunk": self._upload_chunk,
            "aibot_upload_media_finish": self._upload_finish,
        }

    # ---- replies and pushes ----

    def _respond_msg(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        issued = self._issued_for(sock, req_id, "msg")
        now = time.monotonic()
        if body.get("msgtype") == "stream":
            stream = need_dict(body, "stream")
            check_stream(stream)
            if issued.first_reply is not None and now - issued.first_reply > self.stream_expiry_s:
                raise Reject(STREAM_EXPIRED, "stream message update expired")
            done = stream.get("finish") is True
        else:
            self._check_body(body, RESPOND_TYPES)
            done = True
        if issued.first_reply is None:
            issued.first_reply = now
        issued.done = done

    def _welcome(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        issued = self._event_issued(sock, req_id, "enter_chat")
        self._check_body(body, WELCOME_TYPES)
        issued.done = True

    def _update(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        issued = self._event_issued(sock, req_id, "template_card_event")
        if body.get("response_type") != "update_template_card":
            raise Reject(PARAM, "response_type must be update_template_card")
        userids = body.get("userids")
        if userids is not None and (not isinstance(userids, list) or not all(isinstance(u, str) for u in userids)):
            raise Reject(PARAM, "userids must be a list of strings")
        check_card(body.get("template_card"), update_of=issued.task_id)
        issued.done = True

    def _send_msg(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        chatid = need_str(body, "chatid")
        if chatid not in self._chats:
            raise Reject(CHAT_UNREACHABLE, "chatid has not messaged the bot")
        self._check_body(body, PUSH_TYPES)

    def _event_issued(self, sock: Socket, req_id: str, eventtype: str) -> Issued:
        issued = self._issued_for(sock, req_id, eventtype)
        if time.monotonic() - issued.at > self.event_deadline_s:
            raise Reject(EVENT_DEADLINE, "event reply deadline passed")
        return issued

    def _check_body(self, body: dict[str, Any], allowed: tuple[str, ...]) -> None:
        """Check a non-stream body whose msgtype must be in `allowed`; a new card's task_id is then taken."""
        kind = body.get("msgtype")
        if kind not in allowed:
            raise Reject(MSGTYPE, f"msgtype {kind!r} not allowed here")
        task_id = ""
        if kind == "markdown":
            check_markdown(body)
        elif kind == "template_card":
            task_id = check_card(body.get("template_card"), used_task_ids=self._task_ids)
        elif kind == "text":
            check_content(need_dict(body, "text").get("content"), "text.content")
        else:
            self._check_media(kind, need_dict(body, kind))
        if task_id:
            self._task_ids.add(task_id)

    def _check_media(self, kind: str, part: dict[str, Any]) -> None:
        media_id = need_str(part, "media_id")
        if media_id not in self.media:
            raise Reject(MEDIA_ID, "invalid media_id")
        if self.media[media_id][0] != kind:
            raise Reject(MEDIA_TYPE, f"media_id was uploaded as {self.media[media_id][0]}, not {kind}")
        for key in ("title", "description"):
            if key in part and (kind != "video" or not isinstance(part[key], str)):
                raise Reject(PARAM, f"{key} is only for video, as a string")

    # ---- uploads ----

    def _upload_init(self, sock: Socket, req_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("type")
        if kind not in MEDIA_TYPES:
            raise Reject(MEDIA_TYPE, "invalid media type")
        filename = need_str(body, "filename")
        total_size, total_chunks = _int(body, "total_size"), _int(body, "total_chunks")
        if not 1 <= total_chunks <= MAX_CHUNKS:
            raise Reject(UPLOAD, f"total_chunks must be 1 to {MAX_CHUNKS}")
        if not total_chunks <= total_size <= total_chunks * MAX_CHUNK:
            raise Reject(UPLOAD, "total_size does not fit total_chunks")
        md5 = body.get("md5")
        if md5 is not None and not isinstance(md5, str):
            raise Reject(PARAM, "md5 must be a string")
        upload_id = "upload-" + secrets.token_hex(8)
        self._uploads[upload_id] = Upload(kind, filename, total_size, total_chunks, md5, time.monotonic())
        return {"upload_id": upload_id}

    def _upload_chunk(self, sock: Socket, req_id: str, body: dict[str, Any]) -> None:
        upload = self._upload_of(body)
        index = _int(body, "chunk_index")
        if not 1 <= index <= upload.total_chunks:
            raise Reject(UPLOAD, f"chunk_index must be 1 to {upload.total_chunks}")
        try:
            data = base64.b64decode(need_str(body, "base64_data"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Reject(PARAM, "base64_data is not base64") from exc
        if len(data) > MAX_CHUNK:
            raise Reject(UPLOAD, "chunk larger than 512 KB")
        upload.chunks[index] = data

    def _upload_finish(self, sock: Socket, req_id: str, body: dict[str, Any]) -> dict[str, Any]:
        upload_id = need_str(body, "upload_id")
        upload = self._upload_of(body)
        missing = [i for i in range(1, upload.total_chunks + 1) if i not in upload.chunks]
        if missing:
            raise Reject(UPLOAD, f"chunks missing: {missing}")
        data = b"".join(upload.chunks[i] for i in range(1, upload.total_chunks + 1))
        if len(data) != upload.total_size:
            raise Reject(UPLOAD, f"total_size {upload.total_size} but {len(data)} bytes received")
        if upload.md5 is not None and hashlib.md5(data).hexdigest() != upload.md5.lower():
            raise Reject(UPLOAD, "md5 mismatch")
        media_id = "media-" + secrets.token_hex(12)
        self.media[media_id] = (upload.kind, data)
        self.media_names[media_id] = upload.filename
        del self._uploads[upload_id]
        return {"type": upload.kind, "media_id": media_id, "created_at": str(int(time.time()))}

    def _upload_of(self, body: dict[str, Any]) -> Upload:
        upload = self._uploads.get(need_str(body, "upload_id"))
        if upload is None or time.monotonic() - upload.at > self.upload_ttl_s:
            raise Reject(MEDIA_ID, "invalid upload_id")
        return upload
