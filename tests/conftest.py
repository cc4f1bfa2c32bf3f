"""Shared fixtures: a network guard (loopback only), logging as it was after each test, a temporary data dir,
the fake backend."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import netguard

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI configures process-wide logging (levels of root, httpx, telegram …): undo it after each test,
    so later tests that capture those loggers see them as they were."""
    names = ["", "httpx", "telegram", "apscheduler", "jieba", "tornado.access"]
    levels = {n: logging.getLogger(n).level for n in names}
    handlers = list(logging.root.handlers)
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    logging.root.handlers[:] = handlers


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a connection to a non-loopback address."""
    monkeypatch.setattr(socket.socket, "connect", netguard.guarded(netguard.REAL_CONNECT, AssertionError))
    monkeypatch.setattr(socket.socket, "connect_ex", netguard.guarded(netguard.REAL_CONNECT_EX, AssertionError))


@pytest.fixture
def article_text() -> str:
    return (ROOT / "content" / "article.txt").read_text(encoding="utf-8")


@pytest.fixture
async def engine_for(tmp_path: Path) -> AsyncIterator:
    """engine_for(backend, extractive=True, pick="") -> (core, store): a started core whose engine answers with
    `backend` (extractive=False: the free-draft path for every question, as for open questions; pick: the
    grounding.pick to use, "" as the shipped weights were fitted)."""
    from tests.helpers import make_core

    opened = []

    async def build(backend: object, *, extractive: bool = True, pick: str = "") -> tuple[object, object]:
        from tests.helpers import make_config

        cfg = make_config(tmp_path / f"e{len(opened)}")
        cfg.grounding.extractive = extractive  # off: every question takes the free draft and its checks
        cfg.grounding.pick = pick
        core, store = await make_core(tmp_path / f"e{len(opened)}", backend, cfg=cfg)
        opened.append(store)
        return core, store

    yield build
    for s in opened:
        await s.close()


@pytest.fixture(scope="session")
def serve_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir shared by the tests that run `bot serve`: the first computes the prefix, the rest restore it."""
    return tmp_path_factory.mktemp("serve-data")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A PostgreSQL server on loopback for the whole run (tests/postgres.py), started on first use."""
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def log_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's log lives, once on each engine: a new SQLite file, or a new PostgreSQL database
    (the test's id then says `postgres`)."""
    if request.param == "sqlite":
        return tmp_path / "db" / "bot.sqlite3"
    return request.getfixturevalue("postgres_server").new_database()
