"""Which requests decode together: free slots, fair order across conversations, KV room, cancel and time limits.

Pure bookkeeping, no model: the owner thread asks it each step which requests join the running batch and
which tokens each one feeds, then reports what was sampled. Requests are submitted from the event loop.
"""

from __future__ import annotations

import codecs
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.backends.base import Completion, ahead, in_turn, of_conversation
from bot.errors import AnswerStopped, BackendBusy, BackendError

Sink = Callable[[Any], None]  # hands an item to the waiting coroutine (thread-safe)
_order = itertools.count()


@dataclass(eq=False)
class Request:
    """One answer to decode: its prompt tokens, limits and where its pieces go."""

    prompt: list[int]
    max_tokens: int
    conversation: str
    sink: Sink
    priority: float = field(default_factory=time.perf_counter)
    time_limit_s: float = 0.0  # 0: none
    ignore_eos: bool = False  # decode exactly max_tokens (`bot bench` measures throughput so)
    completion: Completion | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    order: int = field(default_factory=lambda: next(_order))
    # set while running
    seq: int = -1
    source: int = -1  # the prefix sequence its first `pos` cells are copied from
    pos: int = 0  # the next token's position
    todo: list[int] = field(default_factory=list)  # tokens to feed at the next steps
    generated: int = 0
    started: float = 0.0
    reserved: int = 0  # KV cells it may still need
    sampler: Any = None
    copying: Any = None  # an extraction's state (constraint.Copying): read labels, then copy; else sampled
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def key(self) -> tuple[float, int]:
        """Earlier turns first; among equal priorities, first come first served."""
        return (self.priority, self.order)


class Scheduler:
    """Slots for `slots` sequences sharing `n_ctx` KV cells; at most `n_batch` tokens a step."""

    def __init__(self, *, slots: int, n_ctx: int, n_batch: int, queue_limit: int,
                 prefix_cells: Callable[[], int] = lambda: 0) -> None:
        self.slots, self.n_ctx, self.n_batch, self.queue_limit = slots, n_ctx, n_batch, queue_limit
        self.prefix_cells = prefix_cells  # cells the resident prefixes hold, asked when they matter
        self.waiting: list[Request] = []
        self.running: dict[int, Request] = {}
        self.cond = threading.Condition()

    # -- from the event loop --

    def submit(self, req: Request) -> int:
        """Queue a request; how many are ahead of it when no slot is free now (0: it starts at once)."""
        with self.cond:
            if len(self.waiting) >= self.queue_limit:
                raise BackendBusy(f"{len(self.waiting)} requests queued (model.queue_limit)")
            self.waiting.append(req)
            self.cond.notify()
            busy = {r.conversation for r in self.running.values()}
            if len(self.running) < self.slots and req.conversation not in busy and len(self.waiting) == 1:
                return 0
            return ahead((r.key for r in self.waiting), req.key, len(self.running))

    def cancel(self, conversation: str) -> int:
        """Stop the conversation's queued and running requests; how many there were."""
        with self.cond:
            hit = [r for r in [*self.waiting, *self.running.values()] if of_conversation(r.conversation, conversation)]
            for r in hit:
                r.cancel.set()
            self.cond.notify()
        return len(hit)

    def cancel_request(self, req: Request) -> None:
        """Stop one request (its consumer has gone)."""
        with self.cond:
            req.cancel.set()
            self.cond.notify()

    # -- on the owner thread --

    def admit(self, shared: Callable[[list[int]], tuple[int, int] | None],
              free_seq: Callable[[], int]) -> list[Request]:
        """Move waiting requests into free slots: earliest key first, one per conversation key (a turn's parts
        have their own), if the KV has room.

        `shared(prompt)` is (the prefix sequence to start from, how many prompt tokens it holds), or None
        when its prefix cannot be made ready now; `free_seq()` a free sequence id.
        """
        joined: list[Request] = []
        with self.cond:
            self.waiting = [r for r in self.waiting if not self._dropped_waiting(r)]
            candidates = list(self.waiting)
        busy = {r.conversation for r in self.running.values()}  # `running` changes on this thread only
        for req in in_turn(candidates, lambda r: r.key, lambda r: r.conversation, busy):
            if len(self.running) >= self.slots:
                break
            if req.cancel.is_set():
                continue
            # Outside the lock: making a prefix ready may read a file; the event loop must not wait on it.
            if (routed := shared(req.prompt)) is None:
                continue
            source, n = routed
            n = min(n, len(req.prompt) - 1)  # the last token is fed to get logits
            need = len(req.prompt) - n + req.max_tokens
            if need + n > self.n_ctx:
                self._fail(req, f"the prompt needs {need + n} KV cells; model.n_ctx is too small")
                continue
            if self.prefix_cells() + self.reserved() + need > self.n_ctx:
                break  # wait for a running answer to free its cells
            req.seq, req.source, req.pos, req.todo, req.reserved = free_seq(), source, n, req.prompt[n:], need
            req.started = time.monotonic()
            with self.cond:
                self.waiting.remove(req)
                self.running[req.seq] = req
            busy.add(req.conversation)
            joined.append(req)
        return joined

    def plan(self) -> list[tuple[Request, list[int]]]:
        """The tokens each running request feeds this step: its next sampled token, or a prefill chunk."""
        room = self.n_batch
        steps: list[tuple[Request, list[int]]] = []
        decoding = [r for r in self.running.values() if len(r.todo) == 1]
        prefilling = sorted((r for r in self.running.values() if len(r.todo) > 1), key=lambda r: r.key)
        for req in decoding + prefilling:  # a token for every decoding answer first: nobody stalls
            if room <= 0:
                break
            take = req.todo[:room]
            room -= len(take)
            steps.append((req, take))
        return steps

    def expired(self) -> list[Request]:
        """Running requests cancelled or past their time limit; they are removed."""
        now = time.monotonic()
        gone = [r for r in self.running.values()
                if r.cancel.is_set() or (r.time_limit_s and now - r.started > r.time_limit_s)]
        for r in gone:
            with self.cond:
                del self.running[r.seq]
            r.sink(AnswerStopped("stopped (/reset)") if r.cancel.is_set() else
                   AnswerStopped(f"no answer within {r.time_limit_s:g} s (model.answer_time_limit_s)"))
        return gone

    def finish(self, req: Request) -> None:
        """A request is done: free its slot."""
        with self.cond:
            self.running.pop(req.seq, None)

    def idle(self) -> bool:
        """Nothing running and nothing waiting."""
        with self.cond:
            return not self.running and not self.waiting

    def reserved(self) -> int:
        """KV cells the running answers may still need."""
        return sum(r.reserved for r in self.running.values())

    def _dropped_waiting(self, req: Request) -> bool:
        if req.cancel.is_set():
            req.sink(AnswerStopped("stopped before it started (/reset)"))
            return True
        return False

    def _fail(self, req: Request, why: str) -> None:
        with self.cond:
            self.waiting.remove(req)
        req.sink(BackendError(why))
