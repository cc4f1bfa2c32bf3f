"""The configuration's sections as typed dataclasses, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


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


POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # a log database URL that names a PostgreSQL server


@dataclass
class LogConfig:
    retention_days: float = 0.0  # turns and events older than this are deleted (0: kept for ever)
    redact_after_days: float = 0.0  # user ids and message texts older than this are replaced (0: never)
    # A log shared by several instances: postgresql://user@host:5432/db ($BOT_DATABASE_URL overrides);
    # empty, a path or sqlite:///path: the embedded SQLite file (empty: `database`).
    database_url: str = ""
    lease_s: float = 30.0  # a turn whose instance died is taken over this long after its last sign of life


@dataclass
class GapsConfig:
    # Ratings: 👍 / 👎 under every answer (Telegram buttons, the WeCom AI bot's own feedback; /good, /bad).
    ratings: bool = True
    # Questions are one topic when their sentence vectors' average cosine reaches this (README, Ratings and
    # gaps: measured on held-out paraphrase sets).
    group_threshold: float = 0.5
    days: float = 7.0  # /gaps without a number: this many days back
    digest: Literal["off", "daily", "weekly"] = "off"  # the gaps sent to the admins who opted in, once a period
    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"  # a weekly digest's day
    hour: int = 9  # local time, 0-23
    language: Literal["zh", "en"] = "zh"  # the digest's language


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
    gaps: GapsConfig = field(default_factory=GapsConfig)
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
    def log_database(self) -> Path | str:
        """Where the log is: a SQLite file's path, or a PostgreSQL URL."""
        url = self.log.database_url
        if url.startswith(POSTGRES_SCHEMES):
            return url
        return self.path(url.removeprefix("sqlite:///")) if url else self.database_path  # sqlite:////abs/path

    @property
    def content_path(self) -> Path:
        return self.path(self.content.dir)
