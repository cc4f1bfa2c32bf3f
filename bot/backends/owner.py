"""The one thread that touches llama.cpp (a `Llama` context is not thread-safe): between two decode steps it
runs the next chunk of the oldest job (computing a prefix, dropping others), so long work never stalls answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class Owner:
    """Runs `step()` while `busy()`, a job's chunk before each; sleeps on `cond` when there is nothing to do."""

    def __init__(self, cond: threading.Condition, busy: Callable[[], bool], step: Callable[[], None],
                 failed: Callable[[Exception], None]) -> None:
        self.cond, self._busy, self._step, self._failed = cond, busy, step, failed
        self.jobs: list[Iterator[Any]] = []  # owner work done a chunk per step
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llama-owner", daemon=True)
        self._thread.start()

    def add(self, job: Iterator[Any]) -> None:
        """Queue a job (the caller holds `cond`, or it is the owner thread itself)."""
        self.jobs.append(job)

    async def run(self, fn: Callable[[], Iterator[Any]]) -> None:
        """Run the generator `fn()` on the owner thread, one step between two decode steps, and wait for it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def job() -> Iterator[None]:
            try:
                for _ in fn():
                    yield
                loop.call_soon_threadsafe(done.set_result, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(done.set_exception, exc)

        with self.cond:
            self.jobs.append(job())
            self.cond.notify()
        await done

    async def stop(self, error: Exception) -> bool:
        """Stop after the current step (waiting up to 30 s); every job left learns of `error`. False when the
        thread is still busy (freeing the model under it would crash the process)."""
        with self.cond:
            self._stopping = True
            self.cond.notify()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30)
        if self._thread.is_alive():
            return False
        for job in self.jobs:
            with contextlib.suppress(Exception):
                job.throw(error)  # its waiter learns of it
        return True

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self._stopping or self.jobs or self._busy()):
                    self.cond.wait()
                if self._stopping:
                    return
                job = self.jobs[0] if self.jobs else None
            if job is not None and next(job, StopIteration) is StopIteration:
                with self.cond:
                    self.jobs.remove(job)
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - every running answer learns of it; the thread lives on
                log.exception("decoding failed")
                self._failed(exc)
