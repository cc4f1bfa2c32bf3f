"""bot/app.py: open_app with a fake backend, reload checks and the SIGHUP to a running server, resuming turns."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import app as app_module
from bot.app import _resume_pending, check_reload, open_app, pid_path, serve, signal_server, write_snapshot
from bot.config import Config
from bot.content.knowledge import load
from bot.core.runtime import Turn
from bot.errors import ModelError
from bot.types import Incoming
from tests import helpers
from tests.fakes.backend import FakeBackend

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = load(ROOT / "content")

HUP_CHILD = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def on_hup(signum, frame):
    with out.open("a") as f:
        f.write("HUP\\n")
signal.signal(signal.SIGHUP, on_hup)
Path(sys.argv[2]).write_text("ready")
deadline = time.time() + 30
while time.time() < deadline:
    time.sleep(0.02)
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    content = tmp_path / "content"
    shutil.copytree(ROOT / "content", content)
    return helpers.make_config(tmp_path, content)


@pytest.fixture
def hup_child(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A child process that records every SIGHUP it gets into a file."""
    record, ready = tmp_path / "hups.txt", tmp_path / "ready"
    # "bot serve" on its command line, as the real server has.
    child = subprocess.Popen([sys.executable, "-c", HUP_CHILD, str(record), str(ready), "bot", "serve"])
    try:
        deadline = time.time() + 10
        while not ready.exists():
            assert time.time() < deadline, "child did not start"
            assert child.poll() is None, "child died"
            time.sleep(0.01)
        yield child, record
    finally:
        child.kill()
        child.wait(timeout=10)


def wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# ---- reload check and signalling -----------------------------------------------------------------


def test_signal_server_sends_sighup_to_the_pid_in_the_pid_file(cfg: Config, hup_child) -> None:
    child, record = hup_child
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    pid_path(cfg).write_text(f"{child.pid}\n")
    assert signal_server(cfg) is True
    assert wait_for(lambda: record.exists() and record.read_text().count("HUP") == 1)
    assert child.poll() is None  # SIGHUP was handled, not fatal


def test_signal_server_without_a_running_server(cfg: Config) -> None:
    assert signal_server(cfg) is False  # no pid file
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    pid_path(cfg).write_text("not a pid")
    assert signal_server(cfg) is False
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    pid_path(cfg).write_text(str(done.pid))  # a process that has exited
    assert signal_server(cfg) is False


def test_check_reload_diffs_against_the_snapshot_and_signals(cfg: Config, hup_child) -> None:
    child, record = hup_child
    write_snapshot(cfg, load(cfg.content_path))
    pid_path(cfg).write_text(str(child.pid))

    report, signalled = check_reload(cfg)
    assert report.ok and signalled
    assert report.version == report.previous_version == ARTICLE.version
    assert wait_for(lambda: record.exists() and record.read_text().count("HUP") == 1)

    article = cfg.content_path / "article.txt"
    article.write_text(article.read_text(encoding="utf-8").replace("在别人的院子里建大楼", "在别人的院子里盖大楼"),
                       encoding="utf-8")
    report, signalled = check_reload(cfg)
    assert report.ok and signalled
    assert (report.added, report.removed, report.changed) == (0, 0, 1)
    assert report.previous_version == ARTICLE.version != report.version
    assert wait_for(lambda: record.read_text().count("HUP") == 2)


def test_check_reload_of_broken_content_does_not_signal(cfg: Config, hup_child) -> None:
    child, record = hup_child
    write_snapshot(cfg, load(cfg.content_path))
    pid_path(cfg).write_text(str(child.pid))
    for f in cfg.content_path.iterdir():
        f.unlink()
    report, signalled = check_reload(cfg)
    assert not report.ok and not signalled
    assert report.previous_version == ARTICLE.version
    assert "no .txt or .md files" in (report.error or "")
    time.sleep(0.2)
    assert not record.exists()


def test_check_reload_without_a_snapshot_reports_everything_added(cfg: Config) -> None:
    report, signalled = check_reload(cfg)
    assert report.ok and not signalled
    assert report.added == report.passages == len(ARTICLE.passages)


# ---- open_app ------------------------------------------------------------------------------------


async def test_open_app_wires_a_given_backend_and_writes_the_snapshot(cfg: Config,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(cfg: Config) -> None:
        raise AssertionError("make_backend must not be called when a backend is given")

    monkeypatch.setattr(app_module, "make_backend", no_model)
    backend = FakeBackend("科大讯飞董事长是刘庆峰。")
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    backend.close = close  # type: ignore[method-assign]
    async with open_app(cfg, backend=backend, progress=False) as app:
        assert app.backend is backend and app.core.engine.backend is backend
        # Warmed once opened: the content's prefix and the extraction instructions.
        instructions = app.core.engine.extractor.instructions()
        assert len(backend.warmed) == 2 and backend.warmed.count(instructions) == 1
        [prefix] = [w for w in backend.warmed if w != instructions]
        assert ARTICLE.passages[0].text[:20] in prefix[0]["content"]
        snap = json.loads((cfg.data_path / "content.json").read_text(encoding="utf-8"))
        assert snap["version"] == ARTICLE.version
        assert [p[0] for p in snap["passages"]] == [p.id for p in ARTICLE.passages]
    assert closed == [True]
    with pytest.raises(ValueError):  # the store is closed afterwards
        await app.store.recent(1)


async def test_open_app_without_the_model_file_names_the_fix(cfg: Config) -> None:
    cfg.model.name = str(cfg.data_path / "missing.gguf")
    with pytest.raises(ModelError, match="fix"):
        async with open_app(cfg, progress=False):
            raise AssertionError("opened without a model")


async def test_serve_without_credentials_exits_2(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    async with open_app(cfg, backend=FakeBackend(""), progress=False) as app:
        assert await serve(app) == 2
    err = capsys.readouterr().err
    assert "TELEGRAM_BOT_TOKEN" in err and "WECOM_CORP_ID" in err
    assert not pid_path(cfg).exists()


# ---- resuming turns after a crash ----------------------------------------------------------------


class FakeChannel:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.started = False
        self.resumed: list[Turn] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None: ...

    async def resume(self, turn: Turn) -> None:
        self.resumed.append(turn)
        if self.fail:
            raise RuntimeError("channel broke while resuming")


async def test_resume_pending_answers_young_messenger_turns_and_abandons_old_ones(cfg: Config) -> None:
    core, store = await helpers.make_core(cfg.data_path, FakeBackend(""), cfg=cfg)
    try:
        young = await store.start_turn(Incoming("telegram", "42", "7", "科大讯飞董事长是谁？", message_id="m1",
                                                group=True))
        old = await store.start_turn(Incoming("telegram", "42", "7", "很早以前的问题"))
        cli = await store.start_turn(Incoming("cli", "me", "me", "命令行的问题"))
        cli_old = await store.start_turn(Incoming("cli", "me", "me", "很早以前的命令行问题"))
        wecom = await store.start_turn(Incoming("wecom", "zhang", "zhang", "企业微信的问题"))
        minute = await store.start_turn(Incoming("wecom", "li", "li", "九分钟前的问题"))
        await store.db.execute("UPDATE turns SET created_at = created_at - 11 * 60 WHERE id IN (?, ?)",
                               (old, cli_old))
        await store.db.execute("UPDATE turns SET created_at = created_at - 9 * 60 WHERE id = ?", (minute,))
        await store.db.commit()

        telegram, wecom_ch = FakeChannel("telegram", fail=True), FakeChannel("wecom")
        await _resume_pending(await core.pending(["telegram", "wecom"]), [telegram, wecom_ch])

        (resumed,) = telegram.resumed
        assert (resumed.turn_id, resumed.incoming.text, resumed.incoming.message_id) == (
            young, "科大讯飞董事长是谁？", "m1")
        # The resumed message keeps its group conversation (one per member).
        assert resumed.is_question and resumed.incoming.conversation_key == "telegram:42:7"
        # A failure on one channel does not stop the others.
        assert [t.turn_id for t in wecom_ch.resumed] == [wecom, minute]
    finally:
        await store.close()
    con = sqlite3.connect(cfg.database_path)
    try:
        status = dict(con.execute("SELECT id, status FROM turns").fetchall())
    finally:
        con.close()
    assert status[old] == "abandoned"
    assert status[cli] == "pending" and status[cli_old] == "pending"  # cli turns are not the server's
    assert status[young] == "pending" and status[wecom] == "pending"


async def test_resume_pending_only_touches_started_channels(cfg: Config) -> None:
    core, store = await helpers.make_core(cfg.data_path, FakeBackend(""), cfg=cfg)
    try:
        t = await store.start_turn(Incoming("wecom", "zhang", "zhang", "企业微信的问题"))
        old = await store.start_turn(Incoming("wecom", "zhang", "zhang", "旧问题"))
        await store.db.execute("UPDATE turns SET created_at = created_at - 3600 WHERE id = ?", (old,))
        await store.db.commit()
        telegram = FakeChannel("telegram")
        await _resume_pending(await core.pending(["telegram"]), [telegram])
        assert telegram.resumed == []
        rows = {r["id"]: r["status"] for r in await store.db.fetchall("SELECT id, status FROM turns")}
        assert rows == {t: "pending", old: "pending"}
    finally:
        await store.close()


async def test_serve_names_itself_in_the_pid_file_and_reloads_on_sighup(cfg: Config,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    channel = FakeChannel("telegram")
    monkeypatch.setattr(app_module, "build_channels", lambda app, only: [channel])
    async with open_app(cfg, backend=FakeBackend(""), progress=False) as app:
        served = asyncio.create_task(serve(app))
        await asyncio.sleep(0.2)
        assert channel.started and pid_path(cfg).read_text() == str(os.getpid())
        (cfg.content_path / "article.txt").write_text("# 新标题\n\n新的段落，只有一句话。\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)  # what `bot content reload` sends to the pid in the file
        for _ in range(100):
            if app.knowledge.current.title == "新标题":
                break
            await asyncio.sleep(0.05)
        assert app.knowledge.current.title == "新标题"
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(served, 10) == 0
    assert not pid_path(cfg).exists()
    snap = json.loads((cfg.data_path / "content.json").read_text(encoding="utf-8"))
    assert snap["version"] == app.knowledge.current.version != ARTICLE.version


def test_a_stale_pid_file_naming_another_program_is_not_signalled(cfg: Config) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        pid_path(cfg).write_text(str(other.pid))
        assert signal_server(cfg) is False
        time.sleep(0.1)
        assert other.poll() is None  # still alive: no SIGHUP was sent
    finally:
        other.kill()
        other.wait(timeout=10)


# ---- log housekeeping ----------------------------------------------------------------------------


async def test_serving_prunes_and_redacts_the_log_as_configured(cfg: Config) -> None:
    from bot.app import _housekeeping, redaction_key

    cfg.log.retention_days, cfg.log.redact_after_days = 30, 7
    async with open_app(cfg, backend=FakeBackend("刘庆峰。"), progress=False) as app:
        store = app.store
        ids = [await store.start_turn(Incoming("telegram", "42", "7", f"问题{i}")) for i in range(3)]
        await store.db.execute("UPDATE turns SET created_at = created_at - ? WHERE id = ?", (40 * 86400, ids[0]))
        await store.db.execute("UPDATE turns SET created_at = created_at - ? WHERE id = ?", (10 * 86400, ids[1]))
        await store.db.commit()
        task = asyncio.create_task(_housekeeping(app, every_s=3600))
        for _ in range(200):
            rows = [tuple(r.values()) for r in
                    await store.db.fetchall("SELECT id, question, user_id FROM turns ORDER BY id")]
            if len(rows) == 2 and rows[0][1] == "[redacted]":
                break
            await asyncio.sleep(0.01)
        task.cancel()
        assert [r[0] for r in rows] == ids[1:] and rows[1][1:] == ("问题2", "7")
        assert rows[0][2].startswith("r:")
    key = cfg.data_path / "redaction.key"
    assert key.stat().st_mode & 0o777 == 0o600 and redaction_key(cfg) == key.read_text().strip().encode()
