"""bot/log/backlog.py through the store, on real SQLite faults: a full database (max_page_count) and another
connection's write lock. Writes that can wait are kept in order and made on recovery; a new question's
write raises StoreUnavailable instead."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import StoreUnavailable
from bot.log.store import LogStore
from bot.types import Incoming, Reply

LONG = "刘庆峰认为应当加快推进认知智能大模型建设。" * 400  # ~25 KB: the row needs new pages


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LogStore]:
    s = await LogStore.open(tmp_path / "bot.sqlite3")
    s.writes.retry_s = 0.05
    yield s
    await s.close()


def rows(path: Path | None, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    """Read through a second, plain sqlite3 connection: what another process would see."""
    assert path is not None
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def question(n: int = 1) -> Incoming:
    return Incoming("telegram", "42", "7", f"问题{n}", message_id=str(n))


async def fill(store: LogStore) -> None:
    """The database may not grow by a page: as a full disk, for every write that needs room."""
    row = await store.db.fetchone("PRAGMA page_count")
    assert row is not None
    await store.db.execute(f"PRAGMA max_page_count={row['page_count']}")


async def recovered(store: LogStore, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while store.writes.kept:
        assert loop.time() < deadline, f"{store.writes.kept} writes still kept"
        await asyncio.sleep(0.02)


async def test_a_full_database_keeps_the_answer_and_its_delivery_and_writes_them_in_order_later(
        store: LogStore) -> None:
    turn = await store.start_turn(question())
    assert turn is not None
    await fill(store)
    await store.finish_turn(turn, Reply(LONG, refused=False))
    await store.delivered(turn)
    assert store.writes.kept == 2 and store.writes.holds(turn) and not store.writes.holds(turn + 1)
    (row,) = rows(store.path, "SELECT status, delivery FROM turns")
    assert (row["status"], row["delivery"]) == ("pending", None)  # nothing written yet
    with pytest.raises(StoreUnavailable):  # a new question is refused, not answered unlogged
        await store.start_turn(question(2), "42:2")
    assert rows(store.path, "SELECT count(*) FROM seen")[0][0] == 0  # nor is its message marked seen

    await store.db.execute("PRAGMA max_page_count=1073741823")
    await recovered(store)
    (row,) = rows(store.path, "SELECT status, answer, delivery FROM turns")
    # In order: the answer made the turn 'waiting', then the delivery mark made it 'delivered'.
    assert (row["status"], row["answer"], row["delivery"]) == ("answered", LONG, "delivered")
    assert await store.start_turn(question(2), "42:2") is not None


async def test_a_write_lock_held_by_another_process_is_waited_out(store: LogStore) -> None:
    await store.db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO events (at, channel, chat_id, user_id, kind) VALUES (0, 'x', '', '', 'lock')")
        await store.log_event("telegram", "42", "7", "refused", "rate")
        assert store.writes.kept == 1
        with pytest.raises(StoreUnavailable):
            await store.claim("wecom", "m1")
        assert await store.history("telegram:42", 3) == []  # reads go on meanwhile
        other.execute("COMMIT")
    finally:
        other.close()
    await recovered(store)
    assert [r["kind"] for r in rows(store.path, "SELECT kind FROM events ORDER BY id")] == ["lock", "refused"]


async def test_a_claimed_message_and_its_turn_are_one_transaction(store: LogStore) -> None:
    first = await store.start_turn(question(), "42:1")
    assert first is not None and await store.seen("telegram", "42:1")
    assert await store.start_turn(question(), "42:1") is None  # a repeat: no second turn
    assert rows(store.path, "SELECT count(*) FROM turns")[0][0] == 1


async def test_a_statement_that_can_never_succeed_is_dropped_alone(store: LogStore,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    await store.log_event("cli", "", "", "before")
    await fill(store)  # the next writes are kept, the wrong one among them
    await store.log_event("cli", "", "", "kept " + "x" * 20_000)
    await store.writes.later("UPDATE no_such_table SET x=1", ())
    await store.log_event("cli", "", "", "after")
    assert store.writes.kept == 3
    await store.db.execute("PRAGMA max_page_count=1073741823")
    await recovered(store)
    kinds = [r[0][:4] for r in rows(store.path, "SELECT kind FROM events ORDER BY id")]
    assert kinds == ["befo", "kept", "afte"] and "no such table" in caplog.text


async def test_a_cancelled_caller_leaves_no_half_transaction(store: LogStore) -> None:
    task = asyncio.create_task(store.start_turn(question(), "42:1"))
    await asyncio.sleep(0)  # inside the transaction, between the claim and the turn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.log_event("cli", "", "", "next")  # the next writer commits only its own statement
    await asyncio.sleep(0.2)
    claimed = rows(store.path, "SELECT count(*) FROM seen")[0][0]
    logged = rows(store.path, "SELECT count(*) FROM turns")[0][0]
    assert claimed == logged  # both (the transaction ran to its end) or neither, never a claim alone


async def test_close_with_writes_still_kept_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = await LogStore.open(tmp_path / "bot.sqlite3")
    turn = await s.start_turn(question())
    assert turn is not None
    await fill(s)
    await s.finish_turn(turn, Reply(LONG, refused=False))
    await s.close()
    assert "1 log writes could not be made" in caplog.text
    (row,) = rows(tmp_path / "bot.sqlite3", "SELECT status FROM turns")
    assert row[0] == "pending"  # so the restart answers it again


def test_outage_tells_a_full_or_locked_database_from_a_wrong_statement(store: LogStore) -> None:
    outage = store.db.outage
    assert outage(sqlite3.OperationalError("database or disk is full"))
    assert outage(sqlite3.OperationalError("database is locked"))
    assert outage(sqlite3.OperationalError("attempt to write a readonly database"))
    assert not outage(sqlite3.OperationalError("no such column: x"))
    assert not outage(sqlite3.IntegrityError("UNIQUE constraint failed: database is locked"))
