"""What has streamed so far for one turn, and the reply made of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bot.answering.prompts import Prompts
from bot.backends.base import Completion
from bot.content.knowledge import ContentSet
from bot.text.phrases import language
from bot.types import Delta, Incoming, Reply


@dataclass
class Draft:
    """What has streamed so far for one turn, and what it used."""

    started: float
    text: str = ""
    ttft_ms: int | None = None
    earlier: str = ""  # earlier drafts of this turn (failed, or the Chinese one of a translation), for the log
    completion: Completion = field(default_factory=Completion)  # tokens of every pass of this turn
    cut: bool = False  # the current pass stopped at model.max_tokens
    model: str = ""  # the model logged with the reply

    def restart(self) -> None:
        """Set the current draft aside before a new attempt."""
        self.earlier += self.text + "\n---\n"
        self.text, self.cut = "", False

    def cut_to(self, whole: str) -> None:
        """The pass stopped at max_tokens: only its whole sentences stand (the log keeps what was dropped)."""
        self.earlier += f"{self.text}\n[cut at model.max_tokens: kept up to the last whole sentence]\n---\n"
        self.text, self.cut = whole, True

    @property
    def logged(self) -> str:
        """Every draft of this turn, in order, as the log keeps it."""
        return self.earlier + self.text

    def shown(self, text: str) -> Delta:
        """A piece of checked text for the user; the first one sets the time to first words."""
        if self.ttft_ms is None:
            self.ttft_ms = int((time.perf_counter() - self.started) * 1000)
        return Delta(text)

    def reply(self, content: ContentSet, text: str, *, refused: bool, error: str | None = None) -> Reply:
        """The turn's Reply with this draft's times and log."""
        return Reply(text=text, refused=refused, ttft_ms=self.ttft_ms,
                     total_ms=int((time.perf_counter() - self.started) * 1000), model=self.model,
                     content_version=content.version, draft=self.logged, error=error)


def decline(prompts: Prompts, msg: Incoming, content: ContentSet, draft: Draft, kind: str, reason: str) -> Reply:
    """The fixed decline (`kind`: decline, offtopic) in the question's language, with its reason for the log."""
    reply = draft.reply(content, prompts.text(f"{kind}_{language(msg.text)}"), refused=True)
    reply.decline_reason = reason
    return reply
