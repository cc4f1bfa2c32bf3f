"""`bot logs serve`: the log as web pages (Datasette over the SQLite file), read-only, with canned queries.

Datasette opens a file it may not change with `mode=ro`, so the page can never write to the log the bot
is writing. Bound to localhost by default; bound anywhere else it asks for a token (once, as `?token=`;
a cookie keeps it), because the log holds what users asked.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
COOKIE = "bot_logs_token"

_ASKED = "datetime(created_at, 'unixepoch') AS asked"
QUERIES: dict[str, dict[str, str]] = {
    "recent_turns": {
        "title": "Recent turns",
        "sql": f"SELECT id, {_ASKED}, channel, user_id, question, answer, status, refused, delivery, total_ms "
               "FROM turns ORDER BY id DESC LIMIT 200",
    },
    "declines": {
        "title": "Declined questions, with why",
        "sql": f"SELECT id, {_ASKED}, channel, question, decline_reason, answer FROM turns WHERE refused = 1 "
               "ORDER BY id DESC LIMIT 200",
    },
    "withdrawn_drafts": {
        "title": "Drafts the checks withdrew (never shown)",
        "sql": f"SELECT id, {_ASKED}, question, decline_reason, draft FROM turns WHERE retracted = 1 "
               "ORDER BY id DESC LIMIT 200",
    },
    "slowest_answers": {
        "title": "Slowest answers",
        "sql": f"SELECT id, {_ASKED}, channel, question, total_ms, ttft_ms, completion_tokens FROM turns "
               "WHERE total_ms IS NOT NULL ORDER BY total_ms DESC LIMIT 100",
    },
    "citations_per_passage": {
        "title": "Citations per passage",
        "sql": "SELECT json_extract(c.value, '$.id') AS passage, p.section, count(*) AS citations, "
               "substr(p.text, 1, 120) AS text FROM turns t, json_each(coalesce(t.citations, '[]')) c "
               "LEFT JOIN passages p ON p.id = json_extract(c.value, '$.id') GROUP BY passage "
               "ORDER BY citations DESC",
    },
    "gaps": {
        "title": "Gaps: questions declined or rated 👎 in the last 30 days, the most asked first (/gaps groups "
                 "wordings of one topic)",
        "sql": "SELECT t.question, count(DISTINCT t.id) AS asked, sum(t.refused) AS declined, "
               "count(r.turn_id) AS rated_down, max(r.reason) AS a_reason, max(t.closest) AS closest "
               "FROM turns t LEFT JOIN ratings r ON r.turn_id = t.id AND r.rating < 0 "
               "WHERE t.status = 'answered' AND t.question != '[redacted]' "
               "AND (t.refused = 1 OR r.turn_id IS NOT NULL) "
               "AND t.created_at > strftime('%s', 'now') - 30 * 86400 GROUP BY t.question "
               "ORDER BY asked DESC, max(t.id) DESC LIMIT 200",
    },
    "ratings": {
        "title": "Ratings of answers, newest first",
        "sql": "SELECT datetime(r.at, 'unixepoch') AS rated, r.channel, CASE WHEN r.rating > 0 THEN '👍' "
               "ELSE '👎' END AS rating, r.reason, t.question, t.answer FROM ratings r "
               "JOIN turns t ON t.id = r.turn_id ORDER BY r.at DESC LIMIT 200",
    },
    "undelivered": {
        "title": "Answers not delivered (waiting or failed)",
        "sql": f"SELECT id, {_ASKED}, channel, chat_id, question, delivery, delivery_error FROM turns "
               "WHERE delivery IN ('waiting', 'failed') ORDER BY id DESC",
    },
}


def is_local(host: str) -> bool:
    """Whether binding to `host` keeps the page on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def app(database: Path, token: str | None) -> ASGIApp:
    """The Datasette app over the log file (read-only, canned queries), behind the token when one is set."""
    from datasette.app import Datasette

    name = database.stem
    metadata = {"title": "Bot log", "description": "Every turn, event and passage the bot logged (read-only).",
                "databases": {name: {"queries": QUERIES}}}
    ds = Datasette([str(database)], metadata=metadata, settings={"sql_time_limit_ms": 3000})
    inner: ASGIApp = ds.app()
    return TokenGate(inner, token) if token else LocalHost(inner)


class LocalHost:
    """Serves only requests addressed to this machine by name (Host: 127.0.0.1, localhost, [::1]): a web
    page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) cannot read the log."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if scope["type"] == "http" and name not in ("127.0.0.1", "localhost", "[::1]"):
            await send({"type": "http.response.start", "status": 421,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"This log page answers only on localhost.\n"})
            return
        await self.inner(scope, receive, send)


class TokenGate:
    """Lets a request through when it carries the token (as `?token=` once, then as a cookie)."""

    def __init__(self, inner: ASGIApp, token: str) -> None:
        self.inner, self.token = inner, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        given = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
        cookie = SimpleCookie(dict(scope.get("headers", [])).get(b"cookie", b"").decode())
        kept = cookie[COOKIE].value if COOKIE in cookie else ""
        if hmac.compare_digest(given.encode(), self.token.encode()):
            await self.inner(scope, receive, self._setting_cookie(send))
        elif hmac.compare_digest(kept.encode(), self.token.encode()):
            await self.inner(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"This log page needs its token: open the URL "
                        b"`bot logs serve` printed (?token=...).\n"})

    def _setting_cookie(self, send: Send) -> Send:
        async def wrapped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                value = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", value.encode())]
            await send(message)

        return wrapped


async def serve(database: Path, host: str, port: int, token: str | None) -> None:
    """Run the page until interrupted."""
    import uvicorn

    config = uvicorn.Config(app(database, token), host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
