"""The WeCom server API client: gettoken with a cached access token, message/send with refresh and backoff.

Secrets never reach the log: a filter on httpx's and httpcore's loggers masks corpsecret and access_token
in request lines, and errors quoting a URL have them removed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from bot.config import WecomConfig

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid / invalid / expired access_token
# The recipient cannot get the app's messages (bad user id, outside the app's range, not active): sending
# again will not help. Setup errors (untrusted IP, wrong agent id) are not here: once fixed, a re-send works.
RECIPIENT_ERRORS = frozenset({40003, 60111, 81013, 82001})
RETRY_ERRORS = frozenset({45009, -1})  # API frequency limit, system busy
_SECRET_QUERY = re.compile(r"(corpsecret|access_token)=[^&\s\"']+")


class WecomApiError(Exception):
    """The WeCom API answered with a non-zero errcode (or could not be reached: errcode None)."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"WeCom API error {errcode}: {errmsg}")
        self.errcode = errcode

    @property
    def permanent(self) -> bool:
        """A refusal that sending again will not change (a user outside the app's range, a bad user id);
        not an outage, a rate limit, an expired token or a setup error the operator can fix."""
        return self.errcode in RECIPIENT_ERRORS


class _RedactSecrets(logging.Filter):
    """Masks corpsecret and access_token in httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _SECRET_QUERY.search(text):
            record.msg, record.args = _SECRET_QUERY.sub(r"\1=***", text), None
        return True


def _decoded(resp: httpx.Response) -> dict[str, Any]:
    """An API answer: WeCom's JSON (errcode and the rest), or a downloaded file (media/get) as
    {"content": bytes}. A file can be text/plain, so the body decides: WeCom's answers are objects with an
    errcode or a result; a non-JSON error page (a proxy's 4xx) is an error, not a file."""
    body = resp.content
    looks_json = body.lstrip()[:1] == b"{"
    if looks_json and ("json" in resp.headers.get("content-type", "") or b'"errcode"' in body[:300]):
        return dict(resp.json())
    if resp.status_code >= 400:
        raise httpx.TransportError(f"HTTP {resp.status_code}")
    return {"content": body}


def _install_redaction() -> None:
    """Put the filter on httpx's and httpcore's loggers, once."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactSecrets) for f in logger.filters):
            logger.addFilter(_RedactSecrets())


_install_redaction()


class WecomApi:
    """gettoken with a cached access token, and message/send with refresh and backoff."""

    def __init__(self, cfg: WecomConfig, retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)) -> None:
        self._cfg = cfg
        self._base = cfg.api_base_url.rstrip("/")
        self._delays = retry_delays
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.api_timeout_s))
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.clock = time.monotonic

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def _call(self, method: str, path: str, params: dict[str, str], body: Any = None,
                    files: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call; network errors, 5xx, 45009 and -1 are retried after the configured delays. A file
        download (not JSON: media/get) comes back as {"errcode": 0, "content": bytes}."""
        delays = iter(self._delays)
        while True:
            try:
                resp = await self._client.request(method, self._base + path, params=params, json=body, files=files)
                if resp.status_code >= 500:
                    raise httpx.TransportError(f"HTTP {resp.status_code}")
                data = _decoded(resp)
                code = int(data.get("errcode") or 0)
            except (httpx.TransportError, ValueError, AttributeError) as exc:
                code, data, why = None, {}, f"{type(exc).__name__}: {_SECRET_QUERY.sub('', str(exc))}"
            else:
                why = f"errcode {code}"
            if code == 0:
                return data
            if code is not None and code not in RETRY_ERRORS:
                raise WecomApiError(code, str(data.get("errmsg", "")))
            delay = next(delays, None)
            if delay is None:
                raise WecomApiError(code, f"giving up after retries ({why})")
            log.warning("wecom: %s %s failed (%s); retrying in %.1f s", method, path, why, delay)
            await asyncio.sleep(delay)

    async def token(self) -> str:
        """A valid access token, fetched with gettoken when missing or about to expire."""
        async with self._lock:
            if self._token and self.clock() < self._expires_at:
                return self._token
            data = await self._call("GET", "/cgi-bin/gettoken",
                                    {"corpid": self._cfg.corp_id, "corpsecret": self._cfg.corp_secret})
            ttl = float(data.get("expires_in") or 7200)
            self._token = str(data["access_token"])
            self._expires_at = self.clock() + ttl - min(300.0, ttl / 10)
            log.info("wecom: fetched an access token valid for %d s", ttl)
            return self._token

    def _invalidate(self, stale: str) -> None:
        if self._token == stale:
            self._token = None

    async def send(self, touser: str, content: str, fmt: str = "text") -> None:
        """message/send one text or markdown message."""
        await self._send(touser, fmt, {"content": content})

    async def send_image(self, touser: str, png: bytes) -> None:
        """An image message: the PNG uploaded as temporary media (media/upload), then sent by its media_id."""
        data = await self._with_token("POST", "/cgi-bin/media/upload", {"type": "image"},
                                      files={"media": ("chart.png", png, "image/png")})
        await self._send(touser, "image", {"media_id": str(data["media_id"])})

    async def media(self, media_id: str) -> bytes:
        """A file a user sent (media/get by its MediaId)."""
        data = await self._with_token("GET", "/cgi-bin/media/get", {"media_id": media_id})
        if "content" not in data:
            raise WecomApiError(None, "media/get answered without a file")
        return bytes(data["content"])

    async def _send(self, touser: str, msgtype: str, body: dict[str, str]) -> None:
        agent: int | str = int(self._cfg.agent_id) if self._cfg.agent_id.isdigit() else self._cfg.agent_id
        payload = {"touser": touser, "msgtype": msgtype, "agentid": agent, msgtype: body, "safe": 0}
        data = await self._with_token("POST", "/cgi-bin/message/send", {}, payload)
        if data.get("invaliduser"):  # WeCom says errcode 0 and names the users it did not send to
            raise WecomApiError(81013, "the user is not reachable by this app (invaliduser)")

    async def _with_token(self, method: str, path: str, params: dict[str, str], body: Any = None,
                          files: dict[str, Any] | None = None) -> dict[str, Any]:
        """A call with the access token; refreshed and tried once more when WeCom rejects it."""
        for attempt in (1, 2):
            token = await self.token()
            try:
                return await self._call(method, path, {**params, "access_token": token}, body, files)
            except WecomApiError as exc:
                if exc.errcode not in TOKEN_ERRORS or attempt == 2:
                    raise
                log.info("wecom: access token rejected (errcode %s); refreshing", exc.errcode)
                self._invalidate(token)
        raise AssertionError("unreachable")
