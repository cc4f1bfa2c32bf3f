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
    pinned: bool = False  # always resident (a few hundred tokens every extraction starts with)


@dataclass
class PrefixOps:
    """The llama.cpp side: restore a file into a sequence, evaluate tokens chunk by chunk, save, drop."""

    restore: Callable[[int, Path, list[int]], bool]
    evaluate: Callable[[int, list[int], int], None]  # (seq, chunk, position of its first token)
    save: Callable[[int, Path, list[int]], None]
    drop: Callable[[int], None]


class Prefixes:
    """Known prefixes and the sequences `seqs` reserved for them; `in_use()` names the prefix sequences that
    running answers started from (their cells are shared with those answers, so they are not evicted)."""

    def __init__(self, seqs: list[int], ops: PrefixOps, chunk: int, in_use: Callable[[], set[int]] = set,
                 room: Callable[[int], bool] = lambda n: True, pinned_seqs: tuple[int, ...] = ()) -> None:
        self.seqs, self.ops, self.chunk, self.in_use, self.room = seqs, ops, chunk, in_use, room
        self.pinned_seqs = pinned_seqs  # reserved for pinned prefixes: content prefixes never take them
        self.known: list[Prefix] = []
        self.later: list[Prefix] = []  # to compute between steps (evicted with no file on disk)
        self.restored = self.computed = 0

    def cells(self) -> int:
        """KV cells the resident prefixes hold."""
        return sum(len(p.tokens) for p in self.known if p.seq is not None)

    def warm(self, tokens: list[int], path: Path | None, progress: Callable[[int, int], None] | None = None, *,
             pin: bool = False) -> Iterator[str]:
        """Make `tokens` a resident prefix: restored from disk, or computed one chunk per step (the generator
        yields between chunks so running answers keep decoding). Its last value says which. A pinned
        prefix is never evicted."""
        entry = self._entry(tokens, path)
        entry.pinned = entry.pinned or pin
        if entry.seq is not None:
            yield "resident"
            return
        entry.busy = True
        try:
            while (seq := self._place(len(tokens), entry.pinned)) is None:
                if not self.in_use():
                    raise RuntimeError(f"a prefix of {len(tokens)} tokens does not fit; raise model.n_ctx")
                yield "waiting"  # the KV cells or every prefix sequence serve running answers: they end
            entry.seq = seq  # reserved while it fills: nothing else is put there
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

    def route(self, prompt: list[int]) -> tuple[int, int] | None:
        """(prefix sequence, tokens of the prompt it holds) for the known prefix the prompt shares most with,
        restored from disk first if need be; (-1, 0) when none shares anything; None when the answer must
        wait: its prefix is being computed, or there is no sequence or KV room for it yet. Other idle
        prefixes with a file on disk are then dropped: every resident prefix widens each answer's attention
        (measured: decode 23 % slower with a second 5k-token prefix resident)."""
        best, shared = None, 0
        for p in self.known:
            n = len(os.path.commonprefix([p.tokens, prompt]))
            if n > shared or (n == shared and best is not None and p.seq is not None and best.seq is None):
                best, shared = p, n
        if best is None or shared == 0:
            return -1, 0
        if best.busy:
            return None  # being computed: wait for it rather than read thousands of tokens inline
        if best.seq is None:
            if not (best.path and best.path.exists()):
                best.busy = True  # no file (caching off): computed again between steps
                self.later.append(best)
                return None
            if (seq := self._place(len(best.tokens))) is None:
                return None
            if not self.ops.restore(seq, best.path, best.tokens):
                best.path = None
                return None
            best.seq = seq
            self.restored += 1
        best.used = time.monotonic()
        self._trim(keep={best.seq})
        return best.seq, shared

    def retain(self, keep: list[list[int]]) -> None:
        """Make every idle prefix not in `keep` non-resident (after a reload, the old content's)."""
        self._trim({p.seq for p in self.known if p.tokens in keep}, require_file=False)

    def _entry(self, tokens: list[int], path: Path | None) -> Prefix:
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
        return entry

    def _idle(self, p: Prefix) -> bool:
        return p.seq is not None and not p.busy and not p.pinned and p.seq not in self.in_use()

    def _trim(self, keep: set[int | None], *, require_file: bool = True) -> None:
        for p in self.known:
            if self._idle(p) and p.seq not in keep and (not require_file or (p.path and p.path.exists())):
                self.ops.drop(p.seq)  # type: ignore[arg-type]
                p.seq = None

    def _place(self, n: int, pinned: bool = False) -> int | None:
        """A sequence for a prefix of n tokens, idle prefixes evicted (least recently used first) until the
        KV cache has room; None when running answers hold what it would need."""
        while not self.room(n):
            victims = sorted((p for p in self.known if self._idle(p)), key=lambda p: p.used)
            if not victims:
                return None
            self.ops.drop(victims[0].seq)  # type: ignore[arg-type]
            victims[0].seq = None
        return self._take_seq(pinned)

    def _take_seq(self, pinned: bool = False) -> int | None:
        """A free prefix sequence, evicting the least recently used idle prefix if need be; None if none."""
        taken = {p.seq for p in self.known if p.seq is not None}
        if free := [s for s in (self.pinned_seqs if pinned else self.seqs) if s not in taken]:
            return free[0]
        victims = sorted((p for p in self.known if self._idle(p)), key=lambda p: p.used)
        if not victims:
            return None
        victim = victims[0]
        seq, victim.seq = victim.seq, None
        assert seq is not None
        self.ops.drop(seq)
        log.info("prefix of %d tokens evicted from sequence %d (kept on disk)", len(victim.tokens), seq)
        return seq
