"""Typed configuration: `config.yaml` validated into dataclasses, then environment overrides.

Precedence: `bot --config PATH`, else `$BOT_CONFIG`, else `./config.yaml`. Secrets (tokens, keys) are read
only from the environment and are never part of `repr()` or logs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bot.errors import ConfigError


@dataclass
class ModelConfig:
    # embedded: llama.cpp in this process; openai: any OpenAI-compatible server at base_url.
    backend: Literal["embedded", "openai"] = "embedded"
    base_url: str = ""  # e.g. http://127.0.0.1:8080/v1 ($BOT_OPENAI_BASE_URL overrides)
    api_key: str = field(default="", repr=False)  # $BOT_OPENAI_API_KEY only
    name: str = "qwen2.5-coder-1.5b"
    dir: str = "models"
    threads: int = 2
    n_ctx: int = 12288
    n_batch: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    repeat_penalty: float = 1.0
    max_tokens: int = 320
    seed: int = 0
    queue_limit: int = 32
    parallel: int = 4  # answers decoded together in one batch (README, Speed: measured)
    prefix_slots: int = 2  # content prefixes kept in the KV cache at once (more are restored from disk)
    flash_attn: bool = False
    answer_time_limit_s: float = 120.0  # an answer still decoding after this long is stopped (0: no limit)
    # Save the computed content prefix's KV state under data_dir so the next start restores it.
    prefix_cache: bool = True


@dataclass
class ContentConfig:
    dir: str = "content"
    # Content up to this many tokens goes into one cached prompt prefix; more is retrieved per question.
    max_prefix_tokens: int = 3500
    retrieve_top_k: int = 3
    # Content past one prefix is cut into groups, each its own cached prefix; a question goes to the group
    # holding at least this share of its top passages' retrieval score, else its passages are quoted.
    groups: bool = True
    route_min_share: float = 0.5
    max_mb: float = 5.0  # the content folder's .txt/.md files together; more is refused with the fix


@dataclass
class ConversationConfig:
    history_turns: int = 3
    history_tokens: int = 600
    max_question_chars: int = 800


# The named checks of bot/grounding/checks.py; every decline reason starts with one of these names.
GROUNDING_RULES = (
    "injection", "no_key_term", "model_declined", "language", "coverage", "topic", "verbatim", "pick", "no_candidate",
)


@dataclass
class GroundingConfig:
    # Check the question's key terms against the content before generating.
    evidence_check: bool = True
    # Check each draft against its passages; one they do not support is never shown (it is declined).
    support_check: bool = True
    min_support: float = 0.5
    # Share (weighted by rarity) of the question's terms the cited passages must contain.
    min_topic: float = 0.45
    # Checks switched off by name (see GROUNDING_RULES), to measure what each one buys.
    rules_off: list[str] = field(default_factory=list)
    # When the first draft is declined or unsupported but the question's terms are in the content,
    # ask once more with the best-matching passages quoted beside the question.
    retry_with_passages: bool = True
    # Quote the cited sentence that holds the answer under it, word for word (README, Grounding).
    quote_source: bool = True
    # Fact questions: pick the answering sentence among candidates (or none), copy the answer out of it,
    # answer when the calibrated score reaches answer_threshold (README, Grounding: the curve).
    extractive: bool = True
    candidates: int = 3  # best-matching sentences the model picks among
    # How the answering sentence is picked: "numbered" (one prompt, a label per candidate or 0) or "judged"
    # (each candidate alone, 是 or 否, side by side; the likeliest 是 copied from); "": as the weights were fitted.
    pick: Literal["", "numbered", "judged"] = ""
    max_answer_tokens: int = 48  # longest copied answer
    answer_threshold: float = 0.7  # the operating point on the curve: the fitted probability of being right
    weights: str = ""  # the decision's fitted weights (`bot calibrate`); empty: bot/data/decision/<model>.json


@dataclass
class TelegramConfig:
    mode: Literal["polling", "webhook"] = "polling"
    webhook_listen: str = "127.0.0.1:8443"
    webhook_url: str = ""
    webhook_path: str = "/telegram"
    admins: list[str] = field(default_factory=list)
    allow_users: list[str] = field(default_factory=list)
    allow_chats: list[str] = field(default_factory=list)
    rate_limit_per_minute: int = 6
    edit_interval_s: float = 1.0
    api_timeout_s: float = 10.0  # a Bot API call (send, edit) slower than this is retried, then given up
    # From the environment only.
    token: str = field(default="", repr=False)
    base_url: str = "https://api.telegram.org/bot"
    webhook_secret: str = field(default="", repr=False)


@dataclass
class WecomConfig:
    listen: str = "127.0.0.1:8081"
    path: str = "/wecom/callback"
    api_base_url: str = "https://qyapi.weixin.qq.com"
    admins: list[str] = field(default_factory=list)
    allow_users: list[str] = field(default_factory=list)
    reply_format: Literal["text", "markdown"] = "text"
    replay_window_s: int = 300
    api_timeout_s: float = 10.0  # a WeCom API call slower than this is retried with backoff, then given up
    rate_limit_per_minute: int = 6
    # From the environment only.
    corp_id: str = ""
    agent_id: str = ""
    corp_secret: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    aes_key: str = field(default="", repr=False)


@dataclass
class WecomBotConfig:
    """The WeCom AI bot: a long connection (WECOM_BOT_ID/SECRET) or callbacks (WECOM_BOT_TOKEN/AES_KEY)."""

    gateway_url: str = "wss://openws.work.weixin.qq.com"  # a private WeCom names its own in the admin console
    listen: str = "127.0.0.1:8082"  # the callback transport's HTTP server (behind the organisation's proxy)
    path: str = "/wecom/aibot"
    admins: list[str] = field(default_factory=list)
    allow_users: list[str] = field(default_factory=list)
    allow_chats: list[str] = field(default_factory=list)
    rate_limit_per_minute: int = 6
    # The names group members mention the bot by ("@知识助手"); empty: any leading @mention counts.
    names: list[str] = field(default_factory=list)
    welcome: str = ""  # said when a user opens the private chat (enter_chat); empty: the /help text
    stream_interval_s: float = 0.5  # at most one stream frame per interval (each waits for its ack)
    stream_deadline_s: float = 330.0  # WeCom stops taking a stream 6 min after it began: finish before
    heartbeat_s: float = 30.0
    ack_timeout_s: float = 5.0  # a frame unacknowledged this long counts as a lost connection
    reconnect_max_s: float = 30.0  # the reconnect backoff's cap (from 1 s, doubling, with jitter)
    offline_wait_s: float = 120.0  # how long an answer waits for a lost connection to come back
    replay_window_s: int = 300
    # From the environment only.
    bot_id: str = ""
    secret: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    aes_key: str = field(default="", repr=False)


@dataclass
class LogConfig:
    retention_days: float = 0.0  # turns and events older than this are deleted (0: kept for ever)
    redact_after_days: float = 0.0  # user ids and message texts older than this are replaced (0: never)


@dataclass
class Config:
    data_dir: str = "data"
    database: str = "data/bot.sqlite3"
    log_level: str = "INFO"
    shutdown_grace_s: float = 5.0
    model: ModelConfig = field(default_factory=ModelConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    log: LogConfig = field(default_factory=LogConfig)
    wecom: WecomConfig = field(default_factory=WecomConfig)
    wecom_bot: WecomBotConfig = field(default_factory=WecomBotConfig)
    # The folder relative paths are resolved against (the config file's folder).
    base_dir: str = field(default=".", repr=False)

    def path(self, value: str) -> Path:
        """Resolve a configured path against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def database_path(self) -> Path:
        return self.path(self.database)

    @property
    def content_path(self) -> Path:
        return self.path(self.content.dir)


# (env var, dotted key) for values that may also be set in the file.
_ENV_OVERRIDES = [
    ("BOT_DATABASE", "database"),
    ("BOT_MODEL", "model.name"),
    ("BOT_OPENAI_BASE_URL", "model.base_url"),
    ("TELEGRAM_BASE_URL", "telegram.base_url"),
    ("WECOM_API_BASE_URL", "wecom.api_base_url"),
    ("WECOM_LISTEN", "wecom.listen"),
    ("WECOM_CORP_ID", "wecom.corp_id"),
    ("WECOM_AGENT_ID", "wecom.agent_id"),
    ("WECOM_BOT_ID", "wecom_bot.bot_id"),
    ("WECOM_BOT_GATEWAY_URL", "wecom_bot.gateway_url"),
    ("WECOM_BOT_LISTEN", "wecom_bot.listen"),
]
# Secrets: environment only, a value in the file is an error.
_SECRETS = [
    ("TELEGRAM_BOT_TOKEN", "telegram.token"),
    ("TELEGRAM_WEBHOOK_SECRET", "telegram.webhook_secret"),
    ("WECOM_CORP_SECRET", "wecom.corp_secret"),
    ("WECOM_TOKEN", "wecom.token"),
    ("WECOM_AES_KEY", "wecom.aes_key"),
    ("WECOM_BOT_SECRET", "wecom_bot.secret"),
    ("WECOM_BOT_TOKEN", "wecom_bot.token"),
    ("WECOM_BOT_AES_KEY", "wecom_bot.aes_key"),
    ("BOT_OPENAI_API_KEY", "model.api_key"),
]


def config_path(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Path:
    """Which config file to read: the flag, else $BOT_CONFIG, else ./config.yaml."""
    env = os.environ if env is None else env
    return Path(explicit or env.get("BOT_CONFIG") or "config.yaml")


def load_config(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read, validate and apply environment overrides; a missing default file means all defaults."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax at the line shown.") from exc
    elif explicit or env.get("BOT_CONFIG"):
        raise ConfigError(f"config file {path} not found; fix: pass an existing file to --config or BOT_CONFIG.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, e.g. 'model:'.")
    for _, key in _SECRETS:
        section, name = key.split(".")
        if isinstance(raw.get(section), dict) and raw[section].get(name):
            var = next(v for v, k in _SECRETS if k == key)
            raise ConfigError(f"{path}: {key} is a secret; remove it from the file and set ${var} instead.")
    cfg = _build(Config, raw, "", str(path))
    cfg.base_dir = str(path.parent.resolve()) if path.exists() else str(Path.cwd())
    for var, key in _ENV_OVERRIDES + _SECRETS:
        if env.get(var):
            _set(cfg, key, env[var])
    _check(cfg, str(path))
    return cfg


def _set(cfg: Config, dotted: str, value: str) -> None:
    section, _, name = dotted.rpartition(".")
    target = getattr(cfg, section) if section else cfg
    setattr(target, name, value)


def _build(cls: type, data: dict[str, Any], prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(data) - names)
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(f"{src}: unknown key '{key}'; fix: remove it or check the spelling (known: "
                          f"{', '.join(sorted(names))}).")
    kwargs = {name: _coerce(hints[name], value, prefix + name, src) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, src: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: '{key}' must be a mapping of keys, got {value!r}.")
        return _build(tp, value, key + ".", src)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = " or ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{src}: '{key}' is {value!r}; fix: set it to {choices}.")
        return value
    if origin in (list, types.GenericAlias) or tp is list or origin is list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{src}: '{key}' must be a list, e.g. [123456789], got {value!r}.")
        return [str(v) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: '{key}' must be true or false, got {value!r}.")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (tp is int and value != int(value)):
            raise ConfigError(f"{src}: '{key}' must be a{'n integer' if tp is int else ' number'}, got {value!r}.")
        return tp(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{src}: '{key}' must be a string, got {value!r}.")
        return str(value)
    return value


_POSITIVE = (  # keys whose value must be greater than 0
    "model.threads", "model.n_ctx", "model.n_batch", "model.max_tokens", "model.queue_limit", "model.parallel",
    "model.prefix_slots", "content.max_prefix_tokens", "content.retrieve_top_k", "content.max_mb",
    "conversation.max_question_chars", "grounding.max_answer_tokens", "telegram.api_timeout_s",
    "wecom.api_timeout_s", "wecom_bot.stream_interval_s", "wecom_bot.stream_deadline_s", "wecom_bot.heartbeat_s",
    "wecom_bot.ack_timeout_s", "wecom_bot.reconnect_max_s", "wecom_bot.offline_wait_s", "wecom_bot.replay_window_s",
)


def _get(cfg: Config, dotted: str) -> Any:
    section, _, name = dotted.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def _check(cfg: Config, src: str) -> None:
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
    _check_wecom_bot(cfg.wecom_bot, src)
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
