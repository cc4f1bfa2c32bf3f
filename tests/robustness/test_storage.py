"""The log database failing while the bot serves, through the real Telegram channel: the disk fills (every
commit fails with SQLite's "database or disk is full"), or another process takes the write lock (a real
second connection; the store's busy timeout is shortened so the test waits less).

What the user sees: an answer in progress is still delivered; a new question is refused plainly (nothing
is answered without being logged); once the database takes writes again the kept answer, its delivery
mark and the refusal's event are written, and the next question is answered. No turn is lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.log.store import LogStore
from bot.text import phrases
from tests.fakes.backend import FakeBackend
from tests.fakes.telegram_server import FakeTelegram
from tests.helpers import make_core
from tests.test_telegram import ALICE, BOB, answered, marker, replies_to, rows, running

QUESTION = "科大讯飞董事长是谁？"


@contextmanager
def full_disk(store: LogStore) -> Iterator[None]:
    """Every commit fails as on a full disk (the statements before it are rolled back)."""
    commit = store.db.commit

    async def failing() -> None:
        raise sqlite3.OperationalError("database or disk is full")

    store.db.commit = failing  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.db.commit = commit  # type: ignore[method-assign]


@contextmanager
def write_lock(store: LogStore) -> Iterator[None]:
    """Another process holds the database's write lock."""
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO events (at, channel, chat_id, user_id, kind) VALUES (0, 'other', '', '', 'lock')")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def turn_rows(store: LogStore) -> list[tuple[Any, ...]]:
    return rows(store, "SELECT user_id, status, delivery FROM turns ORDER BY id")


@pytest.mark.parametrize("fault", [full_disk, write_lock], ids=["disk full", "write lock"])
async def test_a_failing_log_database_while_serving_loses_nothing(tmp_path: Path, fault: Any) -> None:
    backend = FakeBackend("", delay=0.05)
    core, store = await make_core(tmp_path, backend)
    backend.answer = f"科大讯飞董事长是刘庆峰。[{marker(core, '科大讯飞董事长刘庆峰')}]"
    store.writes.retry_s = 0.1
    await store.db.execute("PRAGMA busy_timeout=200")
    server = FakeTelegram()
    await server.start()
    try:
        async with running(server, core):
            first = server.private(ALICE, QUESTION, language_code="zh")
            # Logged, its placeholder too (the fault below blocks this thread: no write of ours may be open).
            await server.wait_for(lambda: rows(store, "SELECT 1 FROM turns WHERE placeholder IS NOT NULL"))
            with fault(store):
                await server.wait_for(lambda: answered(server, first))  # delivered all the same
                assert turn_rows(store) == [(str(ALICE), "pending", None)]  # not written yet: kept
                refused = server.private(BOB, QUESTION, language_code="zh")
                await server.wait_for(lambda: replies_to(server, refused))
                assert replies_to(server, refused) == [phrases.message("log_unavailable", "zh")]
                assert store.writes.kept >= 3  # the answer, its delivery, the refusal's event
            await server.wait_for(lambda: store.writes.kept == 0, timeout=10)
            assert turn_rows(store) == [(str(ALICE), "answered", "delivered")]
            assert rows(store, "SELECT user_id, kind FROM events WHERE kind='unlogged'") == [(str(BOB), "unlogged")]
            again = server.private(BOB, QUESTION, language_code="zh")
            await server.wait_for(lambda: answered(server, again))
        assert turn_rows(store) == [(str(ALICE), "answered", "delivered"), (str(BOB), "answered", "delivered")]
        assert len([t for t in replies_to(server, first) if "刘庆峰" in t]) == 1
    finally:
        await server.stop()
        await store.close()
