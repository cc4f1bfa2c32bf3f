"""The content prefixes the embedded backend keeps: which are resident in a KV sequence, which only on disk.

Content past one prompt is served as several groups, each its own prefix (system prompt with that group's
passages). A few prefix sequences hold the most recently used ones; a prompt is routed to the known prefix
it starts with, restored from disk into a free (or the least recently used) sequence when it is not resident.
Owner-thread code only: the backend hands in the llama.cpp operations.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
KEEP_KNOWN = 32


@dataclass(eq=False)
class Prefix:
    """A prefix's tokens, its file on disk (if caching), and the sequence holding it (if resident)."""

    tokens: list[int]
    path: Path | None
    seq: int | None = None
    used: float = field(default_factory=time.monotonic)
    busy: bool = False  # being computed: not to be evicted


@dataclass
class PrefixOps:
    """The llama.cpp side: restore a file into a sequence, evaluate tokens chunk by chunk, save, drop."""

    restore: Callable[[int, Path, list[int]], bool]
    evaluate: Callable[[int, list[int], int], None]  # (seq, chunk, position of its first token)
    save: Callable[[int, Path, list[int]], None]
    drop: Callable[[int], None]


class Prefixes:
    """Known prefixes and the sequences `seqs` reserved for them."""

    def __init__(self, seqs: list[int], ops: PrefixOps, chunk: int) -> None:
        self.seqs, self.ops, self.chunk = seqs, ops, chunk
        self.known: list[Prefix] = []
        self.restored = self.computed = 0

    def cells(self) -> int:
        """KV cells the resident prefixes hold."""
        return sum(len(p.tokens) for p in self.known if p.seq is not None)

    def warm(self, tokens: list[int], path: Path | None,
             progress: Callable[[int, int], None] | None = None) -> Iterator[str]:
        """Make `tokens` a resident prefix: restored from disk, or computed one chunk per step (the generator
        yields between chunks so running answers keep decoding). Its last value says which."""
        entry = next((p for p in self.known if p.tokens == tokens), None)
        if entry is None:
            entry = Prefix(tokens, path)
            self.known.append(entry)
            # Forget the oldest prefixes that are only on disk (earlier content versions).
            idle = sorted((p for p in self.known if p.seq is None and not p.busy and p is not entry),
                          key=lambda p: p.used)
            for p in idle[: max(0, len(self.known) - KEEP_KNOWN)]:
                self.known.remove(p)
        entry.used = time.monotonic()
        if entry.seq is not None:
            yield "resident"
            return
        entry.busy = True
        try:
            seq = entry.seq = self._free_seq()  # reserved while it fills: nothing else is put there
            if path and path.exists() and self.ops.restore(seq, path, tokens):
                self.restored += 1
                yield "restored"
                return
            self.ops.drop(seq)
            for i in range(0, len(tokens), self.chunk):
                self.ops.evaluate(seq, tokens[i : i + self.chunk], i)
                if progress:
                    progress(min(i + self.chunk, len(tokens)), len(tokens))
                if i + self.chunk < len(tokens):
                    yield "computing"
            self.computed += 1
            if path:
                self.ops.save(seq, path, tokens)
            yield "computed"
        except BaseException:
            if entry.seq is not None:
                self.ops.drop(entry.seq)
            entry.seq = None
            raise
        finally:
            entry.busy = False

    def route(self, prompt: list[int]) -> tuple[int, int]:
        """(prefix sequence, tokens of the prompt it holds) for the known prefix the prompt shares most with;
        a prefix only on disk is restored first. (-1, 0) when no prefix is known."""
        best, shared = None, 0
        for p in self.known:
            if p.busy:
                continue  # still being computed: answers start from what is ready
            n = len(os.path.commonprefix([p.tokens, prompt]))
            if n > shared or (n == shared and best is not None and p.seq is not None and best.seq is None):
                best, shared = p, n
        if best is None or shared == 0:
            return -1, 0
        if best.seq is None:
            if not self._can_take_seq():
                return -1, 0  # every prefix sequence is being filled: this answer reads its prompt whole
            for _ in self.warm(best.tokens, best.path):
                pass  # restoring is one step; computing again (no cache file) blocks, but only then
        best.used = time.monotonic()
        return best.seq if best.seq is not None else -1, shared

    def retain(self, keep: list[list[int]]) -> None:
        """Make every prefix not in `keep` non-resident (a resident prefix widens every answer's attention)."""
        for p in self.known:
            if p.seq is not None and not p.busy and p.tokens not in keep:
                self.ops.drop(p.seq)
                p.seq = None

    def _can_take_seq(self) -> bool:
        """A sequence is free, or one holds a prefix that may be evicted."""
        taken = {p.seq for p in self.known if p.seq is not None}
        return len(taken) < len(self.seqs) or any(p.seq is not None and not p.busy for p in self.known)

    def _free_seq(self) -> int:
        taken = {p.seq for p in self.known if p.seq is not None}
        free = [s for s in self.seqs if s not in taken]
        if free:
            return free[0]
        victims = sorted((p for p in self.known if p.seq is not None and not p.busy), key=lambda p: p.used)
        if not victims:
            raise RuntimeError("every prefix sequence is being computed; raise model.prefix_slots")
        victim = victims[0]
        seq, victim.seq = victim.seq, None
        assert seq is not None
        self.ops.drop(seq)  # answers that copied its cells keep them until they finish
        log.info("prefix of %d tokens evicted from sequence %d (kept on disk)", len(victim.tokens), seq)
        return seq
