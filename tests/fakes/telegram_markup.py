"""What the fake Bot API checks of text: Telegram's strict HTML parse mode, UTF-16 lengths, entities."""

from __future__ import annotations

import html
import re
from typing import Any

_PARSE = "Bad Request: can't parse entities"
_ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
                 "a", "code", "pre", "blockquote", "tg-emoji"}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*)?>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")


class ApiError(Exception):
    """An error reply of the Bot API: HTTP status, description, optional parameters."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def render_html(markup: str) -> str:
    """The text a user sees for `parse_mode=HTML`, or ApiError 400 like Telegram's parser."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(markup):
        ch = markup[i]
        if ch == "<":
            m = _TAG.match(markup, i)
            if not m or m.group(2).lower() not in _ALLOWED_TAGS:
                raise ApiError(400, f"{_PARSE}: Unsupported start tag at byte offset {i}")
            name = m.group(2).lower()
            if m.group(1):
                if not stack or stack.pop() != name:
                    raise ApiError(400, f"{_PARSE}: Unmatched end tag at offset {i}")
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(markup, i)
            if not m:
                raise ApiError(400, f"{_PARSE}: Character '&' is reserved at offset {i}")
            out.append(html.unescape(m.group(0)))
            i = m.end()
        elif ch == ">":
            raise ApiError(400, f"{_PARSE}: Character '>' is reserved at offset {i}")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise ApiError(400, f"{_PARSE}: Can't find end tag corresponding to {stack[-1]}")
    return "".join(out)


def utf16_len(text: str) -> int:
    """Telegram counts text length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram's client-side parser adds: a leading bot command and @mentions."""
    found: list[dict[str, Any]] = []
    m = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
    if m:
        found.append({"type": "bot_command", "offset": 0, "length": utf16_len(m.group(0))})
    for m in re.finditer(r"(?<![\w/])@[A-Za-z][A-Za-z0-9_]{3,}", text):
        offset = utf16_len(text[: m.start()])
        found.append({"type": "mention", "offset": offset, "length": utf16_len(m.group(0))})
    return found
