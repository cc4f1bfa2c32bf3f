"""The content folder as admins manage it from the chat: a document in, a preview with Confirm and Cancel,
then the file written and the content reloaded; removing a document goes through the same confirmation.

A proposal lives ten minutes and only its admin can confirm it, once: in memory, or in the log when the
library is given its book (instances sharing a log then confirm whichever one the press reaches).
Writing is atomic (a temp file renamed into place), and a reload that fails puts the folder back as it
was, so the content that answers is always one that loaded.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from bot.content.files import Extracted, extract
from bot.content.knowledge import SUFFIXES, ContentSet, split_passages
from bot.errors import ContentError
from bot.text import phrases
from bot.types import Choice, Notice

PROPOSAL_TTL_S = 600.0


@dataclass(frozen=True)
class Document:
    """One file of the content folder as /content lists it."""

    name: str
    title: str
    passages: int
    chars: int


@dataclass
class Proposal:
    """A change an admin was shown and has not confirmed yet."""

    token: str
    by: str  # the admin's conversation: only they can confirm it
    action: str  # "add" or "remove"
    name: str  # the file in the content folder
    markdown: str = ""
    at: float = 0.0
    questions: tuple[str, ...] = ()  # the gap questions it adds content for: asked again once it is in


class Book(Protocol):
    """Where proposals wait for their confirmation when several processes may receive it (the shared log)."""

    async def keep(self, proposal: Proposal) -> None:
        """Record a new proposal."""

    async def take(self, token: str, by: str, ttl_s: float) -> Proposal | None:
        """The proposal, once, for the admin it was made for, if younger than ttl_s."""


class _Memory:
    """The book of one process: proposals in a dict."""

    def __init__(self) -> None:
        self._proposals: dict[str, Proposal] = {}

    async def keep(self, proposal: Proposal) -> None:
        now = time.time()
        self._proposals = {t: p for t, p in self._proposals.items() if now - p.at < PROPOSAL_TTL_S}
        self._proposals[proposal.token] = proposal

    async def take(self, token: str, by: str, ttl_s: float) -> Proposal | None:
        p = self._proposals.get(token)
        if p is None or p.by != by or time.time() - p.at >= ttl_s:
            return None
        return self._proposals.pop(p.token)


def safe_name(name: str) -> str:
    """A file name for the content folder: no folders, no odd characters, a .md or .txt suffix."""
    stem, suffix = PurePosixPath(name.replace("\\", "/")).stem, PurePosixPath(name).suffix.lower()
    stem = re.sub(r"[^\w.\-]+", "_", stem).strip("._")[:80] or "document"
    while len(stem.encode("utf-8")) > 200:  # file systems count bytes (255 at most)
        stem = stem[:-1]
    return stem + (suffix if suffix in SUFFIXES else ".md")


class Library:
    """Proposals for the content folder, and applying them."""

    def __init__(self, folder: Path, max_mb: float) -> None:
        self.folder, self.max_bytes = folder, int(max_mb * 1_000_000)
        self.book: Book = _Memory()  # the composition root gives the log's book (LogStore.proposals)
        self.lock = asyncio.Lock()  # held while a confirmed change is applied and the content reloaded

    def documents(self, content: ContentSet) -> list[Document]:
        """Every document the served content came from, with its title and passage count."""
        counts: dict[str, list[int]] = {}
        for p in content.passages:
            counts.setdefault(p.source, []).append(len(p.text))
        return [Document(name, content.documents.get(name, name), len(sizes), sum(sizes))
                for name, sizes in sorted(counts.items())]

    async def propose_add(self, name: str, data: bytes, by: str, content: ContentSet, lang: str,
                          questions: tuple[str, ...] = ()) -> Notice:
        """Read a document (in a thread: parsers take seconds on a big PDF) and show what it would change."""
        if len(data) > self.max_bytes:
            raise ContentError(f"{name} is {len(data) / 1e6:.1f} MB, over content.max_mb "
                               f"({self.max_bytes / 1e6:g} MB); nothing was added.")
        found: Extracted = await asyncio.to_thread(extract, name, data)
        target = safe_name(name if PurePosixPath(name.lower()).suffix in (".txt", ".md") else f"{name}.md")
        markdown = found.markdown
        _, parts = split_passages(markdown, target)
        if not parts:
            raise ContentError(f"{name}: there is no text besides its title line.")
        old = [d for d in self.documents(content) if d.name == target]
        change = (phrases.message("preview_replaces", lang, name=target, old=old[0].passages) if old
                  else phrases.message("preview_adds", lang, name=target))
        text = phrases.message("preview", lang, title=found.title, name=target, chars=len(markdown),
                             passages=len(parts), change=change)
        return await self._ask(Proposal("", by, "add", target, markdown, questions=questions), text, lang)

    async def propose_remove(self, name: str, by: str, content: ContentSet, lang: str) -> Notice:
        """Show which document would go; the last one cannot (the bot would have nothing to answer from)."""
        docs = {d.name: d for d in self.documents(content)}
        if name not in docs:
            raise ContentError(phrases.message("no_such_document", lang, name=name, names=", ".join(docs) or "-"))
        if len(docs) == 1:
            raise ContentError(phrases.message("last_document", lang, name=name))
        d = docs[name]
        text = phrases.message("preview_remove", lang, name=name, title=d.title, passages=d.passages)
        return await self._ask(Proposal("", by, "remove", name), text, lang)

    async def _ask(self, proposal: Proposal, text: str, lang: str) -> Notice:
        proposal.token, proposal.at = secrets.token_hex(8), time.time()
        await self.book.keep(proposal)
        return Notice(text, choices=(Choice(phrases.message("confirm", lang), f"/confirm {proposal.token}"),
                                     Choice(phrases.message("cancel", lang), f"/cancel {proposal.token}")))

    async def take(self, token: str, by: str) -> Proposal | None:
        """The proposal behind a Confirm or Cancel, once, for the admin it was made for (None: unknown,
        expired, already answered, or someone else's)."""
        return await self.book.take(token.strip(), by, PROPOSAL_TTL_S)

    def apply(self, p: Proposal) -> Callable[[], None]:
        """Write or delete the proposal's file; returns how to put the folder back as it was."""
        path = self.folder / p.name
        before = path.read_bytes() if path.exists() else None
        if p.action == "add":
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(p.markdown, encoding="utf-8")
            os.replace(tmp, path)  # atomic: a reload never reads half a file
        else:
            path.unlink(missing_ok=True)

        def undo() -> None:
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)

        return undo
