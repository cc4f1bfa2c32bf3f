"""The gate: every rule that decides whether a message is answered, defined once for every channel.

Allow lists and the kind of message are checked for every message; emptiness, length and the per-user
rate limit for questions only (commands are cheap). A refusal names the user's message and the event
the core logs, so every channel tells users and operators the same thing.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.config import Config
from bot.types import Incoming


@dataclass(frozen=True)
class Policy:
    """Who may use the bot on one channel, and how often (empty allow lists admit everyone)."""

    allow_users: frozenset[str] = frozenset()
    allow_chats: frozenset[str] = frozenset()
    rate_limit_per_minute: int = 0

    @classmethod
    def of(cls, channel_cfg: Any) -> Policy:
        """The policy in a channel's config section (telegram, wecom)."""
        users, chats = getattr(channel_cfg, "allow_users", ()), getattr(channel_cfg, "allow_chats", ())
        return cls(frozenset(users), frozenset(chats), int(getattr(channel_cfg, "rate_limit_per_minute", 0)))


def policies(cfg: Config) -> dict[str, Policy]:
    """Every messenger channel's policy; a channel without one (the local CLI) is open and unlimited."""
    return {"telegram": Policy.of(cfg.telegram), "wecom": Policy.of(cfg.wecom), "wecom_bot": Policy.of(cfg.wecom_bot)}


@dataclass(frozen=True)
class Refusal:
    """Why a message is not answered: the fixed message (key in texts.MESSAGES, values) and the event logged."""

    message: str
    values: dict[str, object] = field(default_factory=dict)
    detail: str = ""

    @property
    def event(self) -> str:
        return "non_text" if self.message == "text_only" else self.message


RATE_WINDOW_S = 60.0  # the rate limits count questions per minute


class SlidingWindow:
    """A per-user rate limit: at most `limit` events per key in any `window_s` seconds (limit <= 0: none)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._logged: dict[str, list[float]] = {}  # the shared log's view of `key`'s events (observe)

    def hit(self, key: str, now: float | None = None) -> float:
        """Record an event and return 0, or return the seconds until one is allowed (not recorded). The count
        is this process's own or the log's (every instance's), whichever is higher: the log lacks questions
        still being logged here, this process lacks the other instances' questions."""
        if self.limit <= 0:
            return 0.0
        now = self.clock() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        logged = [t for t in self._logged.get(key, []) if t > now - self.window_s]
        counted = max(list(hits), logged, key=len)
        if len(counted) >= self.limit:
            return counted[0] + self.window_s - now
        hits.append(now)
        return 0.0

    def forget(self, key: str) -> None:
        """Take back the last event recorded for `key` (it was a repeat of one counted before)."""
        if hits := self._hits.get(key):
            hits.pop()

    def observe(self, key: str, ages_s: list[float]) -> None:
        """The events of `key` as the shared log has them (`ages_s` seconds ago, from every instance)."""
        now = self.clock()
        self._logged[key] = sorted(now - age for age in ages_s if 0 <= age < self.window_s)

    def wait_seconds(self, key: str) -> int:
        """Like `hit`, in whole seconds for telling the user: 0 when allowed, else at least 1."""
        wait = self.hit(key)
        return max(1, math.ceil(wait)) if wait else 0


class Gate:
    """The rules, with each channel's policy and one rate-limit window per channel."""

    def __init__(self, max_question_chars: int, channel_policies: dict[str, Policy] | None = None) -> None:
        self.max_question_chars = max_question_chars
        self.policies = channel_policies or {}
        self._windows = {name: SlidingWindow(p.rate_limit_per_minute) for name, p in self.policies.items()}

    def admit(self, msg: Incoming) -> Refusal | None:
        """Any message: the allow lists (admins always pass) and the kind of message."""
        policy = self.policies.get(msg.channel, Policy())
        listed = msg.user_id in policy.allow_users or msg.chat_id in policy.allow_chats
        if (policy.allow_users or policy.allow_chats) and not (listed or msg.is_admin):
            return Refusal("not_allowed")
        if msg.kind != "text" and msg.attachment is None:  # a document is content an admin may add
            return Refusal("text_only", detail=msg.kind)
        return None

    def limits(self, channel: str) -> bool:
        """Whether questions on `channel` are rate-limited."""
        window = self._windows.get(channel)
        return window is not None and window.limit > 0

    def recount(self, msg: Incoming, ages_s: list[float]) -> None:
        """The user's questions of the last minute as the log has them (from every instance sharing it)."""
        if window := self._windows.get(msg.channel):
            window.observe(msg.user_id, ages_s)

    def forget(self, msg: Incoming) -> None:
        """Take back the rate limit's count of a question that was a repeat of one received before."""
        if window := self._windows.get(msg.channel):
            window.forget(msg.user_id)

    def question(self, msg: Incoming) -> Refusal | None:
        """A question: not empty, not too long, not too fast for this user."""
        text = msg.text.strip()
        if not text:
            return Refusal("empty")
        if len(text) > self.max_question_chars:
            return Refusal("too_long", {"limit": self.max_question_chars}, str(len(text)))
        window = self._windows.get(msg.channel)
        wait = window.wait_seconds(msg.user_id) if window else 0
        return Refusal("rate_limited", {"seconds": wait}) if wait else None
