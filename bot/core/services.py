"""What a command (and the app) may ask of the core besides a message: the content served and its reload,
a conversation's reset and sources, the admins' library, the log's numbers and its housekeeping."""

from __future__ import annotations

import asyncio
import logging

from bot.backends.base import ProgressFn
from bot.config import GapsConfig
from bot.content.knowledge import ContentSet, Knowledge
from bot.content.library import Library
from bot.core.answerer import Answerer
from bot.core.gaps import Topic, group
from bot.log.store import LogStore
from bot.log.usage import Usage
from bot.types import Citation, Incoming, ReloadReport, Reply, Stats

log = logging.getLogger(__name__)
CHANGED = "content_changed"  # the event a reload that changed the content leaves for the other instances


class Services:
    """The content and its reload, the library, and the log's read-outs (commands.Services is its shape)."""

    def __init__(self, knowledge: Knowledge, engine: Answerer, store: LogStore,
                 gaps: GapsConfig | None = None) -> None:
        self.knowledge, self.engine, self.store = knowledge, engine, store
        self.gaps_config = gaps or GapsConfig()
        self.library = Library(knowledge.directory, knowledge.max_mb)  # admins' changes to the content folder
        self.library.book = store.proposals  # a preview's Confirm may reach another instance sharing the log
        self._reload_lock = asyncio.Lock()
        self._followed: int | None = None  # the last content change event seen (follow); None: not looked yet

    @property
    def content(self) -> ContentSet:
        """The content served now."""
        return self.knowledge.current

    async def adopt(self, content: ContentSet, progress: ProgressFn | None = None) -> None:
        """Record the content's passages and have the model read it (or restore its saved state)."""
        await self.store.record_passages(content.passages, content.version)
        await self.engine.prepare(content, progress)

    def about(self, lang: str) -> str:
        """What the bot knows about, for /start and /help."""
        c = self.content
        if lang == "zh":
            return f"内容：《{c.title}》（{len(c.passages)} 个段落，版本 {c.version}）。"
        return f"Content: “{c.title}” ({len(c.passages)} passages, version {c.version})."

    async def reset(self, conversation: str) -> None:
        """Stop the conversation's queued or running answer and forget its history for follow-ups."""
        if stopped := self.engine.cancel(conversation):
            log.info("reset: stopped %d model requests of %s", stopped, conversation)
        await self.store.reset(conversation)

    async def sources(self, conversation: str) -> list[Citation]:
        """The passages cited by the conversation's last answer."""
        return await self.store.last_citations(conversation)

    async def stats(self, since_hours: float = 24.0, channel: str | None = None) -> Stats:
        """Turn statistics for the period."""
        return await self.store.stats(since_hours, channel)

    async def usage(self, since_hours: float = 24.0, channel: str | None = None) -> Usage:
        """Per-day questions, outcomes and answer times, and the most-cited passages (for /stats's chart)."""
        return await self.store.usage(since_hours, channel)

    async def rate(self, msg: Incoming, turn_id: int, rating: int, reason: str = "") -> bool:
        """A reader's 👍 (1) or 👎 (-1, with its reason if given) of an answer shown in their chat (changeable;
        0 withdraws it); False: no such answer."""
        return await self.store.ratings.rate(turn_id, msg.channel, msg.chat_id, msg.user_id, rating, reason)

    async def rating_reason(self, turn_id: int, msg: Incoming, reason: str) -> bool:
        """The reader's one-line reason for their 👎 of that answer."""
        return await self.store.ratings.reason(turn_id, msg.user_id, reason)

    async def last_answer(self, conversation: str) -> int | None:
        """The turn id of the conversation's last answer (what /good and /bad rate)."""
        return await self.store.ratings.last_answer(conversation)

    async def gaps(self, days: float) -> list[Topic]:
        """The questions declined or rated 👎 in the last `days` days, grouped into topics, most asked first."""
        found = await self.store.ratings.gaps(days * 86400)
        return await asyncio.to_thread(group, found, self.gaps_config.group_threshold)  # a second or two

    async def subscribe(self, msg: Incoming, on: bool) -> None:
        """The admin opts in to the gaps digest (or out)."""
        await self.store.ratings.subscribe(msg.channel, msg.user_id, on)

    async def subscribers(self, channel: str) -> set[str]:
        """The admins of a channel who opted in to the gaps digest."""
        return (await self.store.ratings.subscribers()).get(channel, set())

    async def reask(self, questions: list[str]) -> list[Reply | None]:
        """Ask questions again on the content served now, one after another (not logged as anyone's turns);
        a reply per question (None: the engine gave none)."""
        replies: list[Reply | None] = []
        for question in questions:
            msg = Incoming("gaps", "", "", question, conversation=f"gaps:{len(replies)}")
            final: Reply | None = None
            async for event in self.engine.run(msg, self.content, []):
                final = event if isinstance(event, Reply) else final
            replies.append(final)
        return replies

    async def prune(self, retention_days: float, redact_after_days: float = 0.0, key: bytes = b"") -> dict[str, int]:
        """Log housekeeping: rows past the retention deleted, old ids and texts redacted (see LogStore.prune)."""
        return await self.store.prune(retention_days, redact_after_days, key)

    async def reload(self, by: Incoming | None = None, progress: ProgressFn | None = None) -> ReloadReport:
        """Load the content again; a new version is served only after the model has read it, and a broken
        folder keeps the old one serving."""
        async with self._reload_lock:
            old = self.content
            report, new = await asyncio.to_thread(self.knowledge.prepare)
            if new is not None and new.version != old.version:
                try:
                    await self.adopt(new, progress)
                except Exception as exc:
                    log.exception("could not prepare content version %s", new.version)
                    report = ReloadReport(False, old.version, old.version, passages=len(old.passages),
                                          error=f"the new content could not be prepared: {exc}")
                    new = None
            if new is not None:
                self.knowledge.current = new
                if new.version != old.version:
                    await self.engine.retain(new)
            who = by or Incoming("signal", "", "", "")
            await self.store.log_event(who.channel, who.chat_id, who.user_id, "reload", report.summary())
            if report.ok and report.version != report.previous_version:  # the other instances follow (follow)
                await self.store.log_event("content", self.store.leases.owner, "", CHANGED, report.version)
            return report

    async def follow(self) -> ReloadReport | None:
        """Reload when another instance sharing the log served a new content version since the last look
        (the content folder is shared between them); the report, or None when there was nothing to follow."""
        last = await self.store.last_event(CHANGED)
        seen, before = (last["id"] if last else 0), self._followed
        self._followed = seen
        if last is None or before is None or seen <= before:
            return None  # the first look (at start, the folder was just read), or nothing new
        if last["chat_id"] == self.store.leases.owner or last["detail"] == self.content.version:
            return None  # this instance's own change, or one it has already
        report = await self.reload(Incoming("content", self.store.leases.owner, "", ""))
        if self.content.version != last["detail"]:
            log.warning("content version %s served by %s, %s here: the instances do not share one content folder",
                        last["detail"], last["chat_id"], self.content.version)
        return report
