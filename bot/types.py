"""Plain data passed between the channels, the engine, the knowledge base and the store. No I/O here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Passage:
    """One retrievable piece of content with its section label; `id` is stable while the text is unchanged."""

    id: str
    section: str
    text: str
    source: str
    order: int


@dataclass(frozen=True)
class Citation:
    """A passage that supports an answer; `n` is its display number, the `[n]` in the answer text."""

    id: str
    section: str
    text: str
    n: int

    def as_dict(self) -> dict[str, object]:
        """The JSON form used by `bot ask --json` and the channels."""
        return {"id": self.id, "n": self.n, "section": self.section, "text": self.text}


def conversation_key(channel: str, chat_id: str, user_id: str, group: bool) -> str:
    """The one format of a conversation key: per chat in private chats, per member in group chats."""
    return f"{channel}:{chat_id}:{user_id}" if group else f"{channel}:{chat_id}"


@dataclass(frozen=True)
class Attachment:
    """A file a user sent: its name and size as the platform reports them, and how to download it."""

    name: str
    size: int | None
    fetch: Callable[[], Awaitable[bytes]] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Incoming:
    """A user's message as every channel hands it to the core: the adapter decides only what the platform
    says (who, where, whether it is meant for the bot, whether the sender is an admin); the core decides the rest."""

    channel: str
    chat_id: str
    user_id: str
    text: str
    message_id: str | None = None
    # A group chat: every member has a conversation of their own.
    group: bool = False
    # Meant for the bot: always in a private chat; in a group a mention, a reply to the bot, or a command.
    addressed: bool = True
    is_admin: bool = False
    # The user's interface language when the platform tells it (Telegram's language_code), else "".
    lang: str = ""
    # "text", or the platform's name of another kind of message (image, voice, sticker ...).
    kind: str = "text"
    # An explicit conversation key (one-shot `bot ask`, eval follow-ups, a resumed turn keeps its own).
    conversation: str = ""
    # A document the user sent (kind "document"): admins add content this way.
    attachment: Attachment | None = None
    # The bot's message this one replies to (its id, as the platform names it), if any; `replies`: the
    # platform tells that (Telegram), so a notice may ask for a reply to itself.
    reply_to: str | None = None
    replies: bool = False
    # What that bot message asked for, filled in by the core: (kind, data), e.g. ("reason", turn id).
    regarding: tuple[str, Any] | None = None

    @property
    def conversation_key(self) -> str:
        """The key under which follow-ups, /reset and /sources are kept."""
        return self.conversation or conversation_key(self.channel, self.chat_id, self.user_id, self.group)


@dataclass(frozen=True)
class HistoryTurn:
    """A past question and its shown answer, for follow-up context."""

    question: str
    answer: str
    refused: bool


@dataclass
class Reply:
    """The engine's finished answer to one `Incoming`."""

    text: str
    refused: bool
    citations: list[Citation] = field(default_factory=list)
    turn_id: int | None = None
    ttft_ms: int | None = None  # to the first checked words shown (None when nothing of a draft was shown)
    total_ms: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    content_version: str = ""
    # True when a draft failed the checks against its passages (it was never shown; the log keeps it).
    retracted: bool = False
    draft: str = ""
    decline_reason: str = ""
    error: str | None = None
    # How it was answered: "extract" (a sentence picked, the answer copied out of it), "draft" (written
    # freely, then checked), "" (declined before the model ran); the extraction's score and its signals.
    path: str = ""
    score: float | None = None
    signals: dict[str, float] = field(default_factory=dict)
    copied: str = ""  # the extraction's short answer (before any translation)
    sentence: str = ""  # the sentence it was copied out of, or the closest one quoted in a decline
    choices: tuple[Choice, ...] = ()  # buttons under the answer (👍 / 👎), added by the core

    def sources(self) -> str:
        """One line per citation, `[n] section` ("" for none)."""
        return "\n".join(f"[{c.n}] {c.section}" for c in self.citations)

    def text_with_sources(self) -> str:
        """What every channel shows at the end: the answer with its sources under it; a retracted draft's
        decline shows none (they were the withdrawn draft's)."""
        if not self.citations or self.retracted:
            return self.text
        return self.text.rstrip() + "\n\n" + self.sources()


@dataclass(frozen=True)
class Delta:
    """A piece of checked answer text; channels append it to what they show (nothing shown is withdrawn)."""

    text: str


@dataclass(frozen=True)
class Queued:
    """The request waits behind `position` others for the model."""

    position: int


@dataclass(frozen=True)
class Choice:
    """A button under a notice; pressing it sends `command` (a channel without buttons shows the command)."""

    label: str
    command: str


@dataclass(frozen=True)
class Notice:
    """A fixed reply that is not a model answer: a command's output, or why a message is not answered;
    optionally a picture (PNG bytes, the text its caption) and buttons."""

    text: str
    image: bytes | None = field(default=None, repr=False)
    choices: tuple[Choice, ...] = ()
    # A reply to this message means something (kind, data): the channel reports where it showed it
    # (Turn.shown), so that the core knows the reply (a 👎's reason; content for the gaps listed).
    expects: tuple[str, Any] | None = None


@dataclass(frozen=True)
class Progress:
    """A step the user cannot see yet is running (translating, checking again); channels may say so."""

    step: str  # translating_question | answering | rechecking | translating_answer | extracting | reading_content
    fraction: float | None = None  # how far along, when known (0..1)


Event = Delta | Queued | Progress | Notice | Reply


@dataclass(frozen=True)
class ReloadReport:
    """What a content reload changed, or why it kept the old content."""

    ok: bool
    version: str
    previous_version: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    passages: int = 0
    error: str | None = None

    def summary(self, lang: str = "en") -> str:
        """One line for a person, in Chinese or English (the log keeps the English one)."""
        zh = lang == "zh"
        if not self.ok:
            return (f"重新加载失败，仍在使用版本 {self.previous_version}：{self.error}" if zh
                    else f"Reload failed, still serving {self.previous_version}: {self.error}")
        if self.version == self.previous_version:
            return (f"内容没有变化（版本 {self.version}，{self.passages} 个段落）。" if zh
                    else f"Content unchanged (version {self.version}, {self.passages} passages).")
        if zh:
            return (f"内容已重新加载：版本 {self.previous_version} → {self.version}；新增 {self.added}，删除 "
                    f"{self.removed}，修改 {self.changed}（共 {self.passages} 个段落）。")
        return (
            f"Content reloaded: version {self.previous_version} -> {self.version}; "
            f"{self.added} added, {self.removed} removed, {self.changed} changed ({self.passages} passages)."
        )


@dataclass(frozen=True)
class Stats:
    """Turn statistics for a period, for /stats."""

    turns: int
    users: int
    refusals: int
    errors: int
    ttft_p50_ms: int | None
    ttft_p95_ms: int | None
    total_p50_ms: int | None
    total_p95_ms: int | None
    since_hours: float

    def summary(self, lang: str = "en") -> str:
        """A few lines for a person, in Chinese or English."""

        def ms(v: int | None) -> str:
            return "-" if v is None else f"{v} ms"

        if lang == "zh":
            return (
                f"最近 {self.since_hours:g} 小时：{self.users} 位用户共 {self.turns} 轮，拒答 {self.refusals}，"
                f"出错 {self.errors}。\n"
                f"首字 p50 {ms(self.ttft_p50_ms)}，p95 {ms(self.ttft_p95_ms)}；"
                f"完整回答 p50 {ms(self.total_p50_ms)}，p95 {ms(self.total_p95_ms)}。"
            )
        return (
            f"Last {self.since_hours:g} h: {self.turns} turns from {self.users} users, "
            f"{self.refusals} declined, {self.errors} errors.\n"
            f"First words shown p50 {ms(self.ttft_p50_ms)}, p95 {ms(self.ttft_p95_ms)}; "
            f"full answer p50 {ms(self.total_p50_ms)}, p95 {ms(self.total_p95_ms)}."
        )


@dataclass(frozen=True)
class PendingTurn:
    """A logged user message that never got its answer to the user (the process stopped mid-turn, or the
    messenger did not take the answer)."""

    turn_id: int
    channel: str
    chat_id: str
    user_id: str
    text: str
    created_at: float
    message_id: str | None = None
    conversation: str = ""
    status: str = "pending"  # pending: no answer yet; answered or error: one is logged
    delivery: str | None = None  # waiting, delivered or failed once an answer is logged
    placeholder: str | None = None  # the message showing its answer in progress, if one was sent

    @property
    def answered(self) -> bool:
        """An answer is logged: deliver it, do not generate another."""
        return self.status != "pending"
