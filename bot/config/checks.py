"""The configuration's values checked together at start-up, each error naming the key and the fix."""

from __future__ import annotations

import urllib.parse
from typing import Any

from bot.config.sections import GROUNDING_RULES, POSTGRES_SCHEMES, Config, WecomBotConfig
from bot.errors import ConfigError

_POSITIVE = (  # keys whose value must be greater than 0
    "model.threads", "model.n_ctx", "model.n_batch", "model.max_tokens", "model.queue_limit", "model.parallel",
    "model.prefix_slots", "content.max_prefix_tokens", "content.retrieve_top_k", "content.max_mb",
    "conversation.max_question_chars", "grounding.max_answer_tokens", "telegram.api_timeout_s",
    "wecom.api_timeout_s", "wecom_bot.stream_interval_s", "wecom_bot.stream_deadline_s", "wecom_bot.heartbeat_s",
    "wecom_bot.ack_timeout_s", "wecom_bot.reconnect_max_s", "wecom_bot.offline_wait_s", "wecom_bot.replay_window_s",
    "log.lease_s", "gaps.days",
)


def _get(cfg: Config, dotted: str) -> Any:
    section, _, name = dotted.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def check(cfg: Config, src: str) -> None:
    """Raise ConfigError for the first value out of its range or inconsistent with another."""
    for key in _POSITIVE:
        if (value := _get(cfg, key)) <= 0:
            raise ConfigError(f"{src}: '{key}' must be greater than 0, got {value}.")
    for key in ("log.retention_days", "log.redact_after_days", "shutdown_grace_s"):
        if (value := _get(cfg, key)) < 0:
            raise ConfigError(f"{src}: '{key}' must be 0 or more, got {value}.")
        if key.startswith("log.") and 0 < value < 1:  # a shorter one would touch turns still being answered
            raise ConfigError(f"{src}: '{key}' must be 0 (off) or at least 1 day, got {value}.")
    if not 0.0 < cfg.content.route_min_share <= 1.0:
        raise ConfigError(f"{src}: 'content.route_min_share' must be in (0, 1], got {cfg.content.route_min_share}.")
    if not 0.0 <= cfg.grounding.answer_threshold <= 1.0:
        raise ConfigError(f"{src}: 'grounding.answer_threshold' must be between 0 and 1 (a probability), got "
                          f"{cfg.grounding.answer_threshold}; fix: pick a point on the curve of `bot eval --curve`.")
    if not 1 <= cfg.grounding.candidates <= 8:
        raise ConfigError(f"{src}: 'grounding.candidates' must be 1 to 8 (one label token each), got "
                          f"{cfg.grounding.candidates}.")
    if not 0.0 <= cfg.model.temperature <= 2.0:
        raise ConfigError(f"{src}: 'model.temperature' must be between 0 and 2, got {cfg.model.temperature}.")
    for key, value in (("wecom.listen", cfg.wecom.listen), ("telegram.webhook_listen", cfg.telegram.webhook_listen),
                       ("wecom_bot.listen", cfg.wecom_bot.listen)):
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{src}: '{key}' must be host:port, e.g. 127.0.0.1:8081, got {value!r}.")
    if unknown := [r for r in cfg.grounding.rules_off if r not in GROUNDING_RULES]:
        raise ConfigError(f"{src}: 'grounding.rules_off' names no rule {unknown[0]!r}; fix: use one of "
                          f"{', '.join(GROUNDING_RULES)}.")
    if cfg.model.backend == "openai" and not cfg.model.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{src}: model.backend is 'openai' but model.base_url is {cfg.model.base_url!r}; fix: set "
                          "the server's URL with its /v1, e.g. http://127.0.0.1:8080/v1, or $BOT_OPENAI_BASE_URL.")
    url = cfg.log.database_url
    if "://" in url and not url.startswith((*POSTGRES_SCHEMES, "sqlite:///")):
        raise ConfigError(f"{src}: 'log.database_url' must be postgresql://user@host:port/database, a path or "
                          f"sqlite:///path, got {url.split('://')[0]}://…; fix: correct it, or leave it empty for "
                          "the embedded log (`database`).")
    _check_wecom_bot(cfg.wecom_bot, src)
    if not 0.0 < cfg.gaps.group_threshold <= 1.0:
        raise ConfigError(f"{src}: 'gaps.group_threshold' must be in (0, 1] (the cosine at which questions are one "
                          f"topic), got {cfg.gaps.group_threshold}.")
    if cfg.gaps.digest != "off" and not (cfg.telegram.admins or cfg.wecom.admins or cfg.wecom_bot.admins):
        raise ConfigError(f"{src}: 'gaps.digest' is {cfg.gaps.digest!r} but no admins are set to receive it; fix: "
                          "add ids to telegram.admins, wecom.admins or wecom_bot.admins, or set gaps.digest: off.")
    if not 0 <= cfg.gaps.hour <= 23:
        raise ConfigError(f"{src}: 'gaps.hour' must be 0 to 23 (the local hour the digest is sent), got "
                          f"{cfg.gaps.hour}.")
    if cfg.telegram.mode == "webhook":
        _check_webhook_url(cfg.telegram.webhook_url, src)


def _check_wecom_bot(bot: WecomBotConfig, src: str) -> None:
    """The AI bot's gateway, callback path and stream timing (WeCom takes a stream for 6 minutes)."""
    if not bot.gateway_url.startswith(("wss://", "ws://")):
        raise ConfigError(f"{src}: 'wecom_bot.gateway_url' must be a WebSocket URL (wss://...), got "
                          f"{bot.gateway_url!r}; fix: copy it from the bot's API settings, or leave it out.")
    if not bot.path.startswith("/"):
        raise ConfigError(f"{src}: 'wecom_bot.path' must start with '/', got {bot.path!r}.")
    if not bot.stream_interval_s < bot.stream_deadline_s < 360:
        raise ConfigError(f"{src}: 'wecom_bot.stream_deadline_s' must be under WeCom's 360 s and above "
                          f"stream_interval_s, got {bot.stream_deadline_s:g}; fix: leave it at 330.")


TELEGRAM_WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports setWebhook accepts (Bot API docs)


def _check_webhook_url(url: str, src: str) -> None:
    """Telegram calls only https URLs on four ports; say so at start, not after setWebhook fails."""
    if not url:
        raise ConfigError(f"{src}: telegram.mode is 'webhook' but telegram.webhook_url is empty; "
                          "fix: set the public https URL Telegram should call.")
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        port = -1
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{src}: telegram.webhook_url {url!r} is not an https URL; fix: Telegram calls only "
                          "https, so put a TLS-terminating proxy (nginx, Caddy) in front of telegram.webhook_listen "
                          "and give its https URL.")
    if port not in TELEGRAM_WEBHOOK_PORTS:
        raise ConfigError(f"{src}: telegram.webhook_url uses port {port}; fix: Telegram calls only ports "
                          f"{', '.join(map(str, TELEGRAM_WEBHOOK_PORTS))}, so publish the proxy on one of them.")
