"""`bot serve` end to end: the real process, the real small model, loopback fake messenger servers.

These prove the "Done when" of the Telegram and WeCom issues: a `bot serve --channel ...` subprocess,
configured only through `$BOT_CONFIG` and the channel's environment variables, answers a question from
a loopback fake server (the same fakes the channel tests use) with a grounded, cited reply, logs the
turn in SQLite, and exits cleanly on SIGTERM. The subprocess gets a network guard of its own (a
`sitecustomize` on its PYTHONPATH) that records and refuses any connection to a non-loopback address.

Both tests share one data dir, so the content prefix the first computes (~35 s for the 0.5B model) is
restored from disk by the second. They need the models in models/ (`make setup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.wecom_server import (
    AES_KEY,
    AGENT_ID,
    CORP_ID,
    CORP_SECRET,
    TOKEN,
    CallbackClient,
    FakeWecomApi,
)
from tests.helpers import ROOT

pytestmark = pytest.mark.model

BOT = str(Path(sys.executable).parent / "bot")
SMALL = "qwen2.5-coder-0.5b"
QUESTION = "科大讯飞董事长是谁？"
READY_TIMEOUT_S = 240.0  # model load plus, on the first start, the content prefix (~35 s, more under load)
ANSWER_TIMEOUT_S = 180.0  # a draft, maybe a retry with passages, on 2 shared cores
EXIT_TIMEOUT_S = 60.0
SEND = "/cgi-bin/message/send"

# Installed in the subprocess through PYTHONPATH: the conftest's loopback-only rule (tests/netguard.py), for
# `bot serve` too. A violation is refused (OSError, as a network failure would be) and written to $BOT_TEST_NET_LOG.
NET_GUARD = f"""
import importlib.util, os
spec = importlib.util.spec_from_file_location("netguard", {str(ROOT / "tests" / "netguard.py")!r})
guard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guard)
guard.install(OSError, os.environ.get("BOT_TEST_NET_LOG", ""))
"""

_INHERITED_SETTINGS = ("BOT_MODEL", "BOT_DATABASE", "BOT_CONFIG", "TELEGRAM_", "WECOM_", "PYTHONPATH")


# ---- the `bot serve` subprocess --------------------------------------------------------------------


@pytest.fixture
def shared_data(serve_data: Path) -> Path:
    """One data dir for every `bot serve` test: later ones restore the prefix the first computed."""
    return serve_data


class Serve:
    """`bot serve --channel NAME` in a subprocess, stderr to a file, with a network guard of its own."""

    def __init__(self, tmp_path: Path, data_dir: Path, channel: str, extra_env: dict[str, str], *,
                 database: Path | None = None, content: Path | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.channel = channel
        self.database = database or tmp_path / "bot.sqlite3"
        self.stderr_path = tmp_path / "serve.stderr"
        self.net_log = tmp_path / "non-loopback.txt"
        config = {
            "data_dir": str(data_dir),
            "database": str(self.database),
            "model": {"name": SMALL, "dir": str(ROOT / "models")},
            "content": {"dir": str(content or ROOT / "content")},
            "telegram": {"edit_interval_s": 0.3},
            **(settings or {}),
        }
        self.config_path = tmp_path / "config.yaml"
        self.config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
        guard_dir = tmp_path / "netguard"
        guard_dir.mkdir()
        (guard_dir / "sitecustomize.py").write_text(NET_GUARD, encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(_INHERITED_SETTINGS) and "proxy" not in k.lower()}
        env.update({"BOT_CONFIG": str(self.config_path), "PYTHONPATH": str(guard_dir),
                    "BOT_TEST_NET_LOG": str(self.net_log), "NO_PROXY": "127.0.0.1,localhost",
                    "PYTHONUNBUFFERED": "1", **extra_env})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    def start(self) -> None:
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen([BOT, "serve", "--channel", self.channel], env=self.env,
                                     cwd=self.config_path.parent, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr)

    async def wait_port(self, port: int) -> None:
        """Until the process listens on `port` (model load and prefix first)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await port_open(port):
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"port {port} did not open within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.2)

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"bot serve exited early with code {code}")

    async def wait_until(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """Poll `predicate` (keeping this loop, and so the fake servers, running) while the process lives."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(0.1)

    async def terminate(self) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"bot serve did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGTERM")
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self._stderr is not None:
            self._stderr.close()

    def stderr_tail(self, lines: int = 60) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:])

    def non_loopback(self) -> list[str]:
        return self.net_log.read_text(encoding="utf-8").splitlines() if self.net_log.exists() else []

    def turns(self, channel: str) -> list[dict[str, Any]]:
        """Rows of the turns table for a channel, oldest first (read-only; the process may be running)."""
        if not self.database.exists():
            return []
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM turns WHERE channel=? ORDER BY id", (channel,)).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
        finally:
            conn.close()
        return [dict(r) for r in rows]

    def events(self, kind: str) -> list[str]:
        """Details of the logged events of one kind, oldest first."""
        if not self.database.exists():
            return []
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return [d for (d,) in conn.execute("SELECT detail FROM events WHERE kind=? ORDER BY id", (kind,))]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def cited_texts(self, row: dict[str, Any]) -> list[str]:
        """The passage texts a logged turn cites (the turn stores ids; the passages table the texts)."""
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return [t for c in json.loads(row["citations"] or "[]")
                    for (t,) in conn.execute("SELECT text FROM passages WHERE id=?", (c["id"],))]
        finally:
            conn.close()


@contextlib.contextmanager
def watched(current: Callable[[], Serve], report: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Around a test's `bot serve` process (`current()` is the one running now: a restart replaces it): on any
    failure its stderr's tail and `report()` (what the fake messenger saw) are printed; it is killed at the
    end whatever happened."""
    try:
        yield
    except BaseException:
        serve = current()
        print(f"\n---- bot serve --channel {serve.channel} stderr (tail) ----\n{serve.stderr_tail()}\n{report()}")
        raise
    finally:
        current().kill()


def shown_final(row: dict[str, Any]) -> str:
    """What a user should see for a logged answered turn: the answer, then `[n] section` per citation."""
    cites = json.loads(row["citations"] or "[]")
    if not cites:
        return str(row["answer"]).strip()
    return str(row["answer"]).rstrip() + "\n\n" + "\n".join(f"[{c['n']}] {c['section']}" for c in cites)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


# ---- Telegram ----------------------------------------------------------------------------------------


async def test_serve_telegram_answers_a_private_question_grounded_and_cited(
        tmp_path: Path, shared_data: Path) -> None:
    fake = FakeTelegram()
    await fake.start()
    serve = Serve(tmp_path, shared_data, "telegram",
                  {"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_BASE_URL": fake.base_url})
    user = 424242
    t0 = time.monotonic()
    try:
        calls = lambda: f"---- fake Bot API calls: {[(c.method, c.status) for c in fake.calls]}"  # noqa: E731
        with watched(lambda: serve, calls):
            serve.start()
            await serve.wait_until(lambda: fake.calls_of("getUpdates"), READY_TIMEOUT_S, "getUpdates (polling)")
            ready = time.monotonic() - t0
            assert fake.calls_of("getMe"), [c.method for c in fake.calls]

            asked = time.monotonic()
            mid = fake.private(user, QUESTION, language_code="zh")

            def reply_texts() -> list[str]:
                return [m.text for m in fake.bot_messages(user) if m.reply_to == mid]

            def answered() -> dict[str, Any] | None:
                rows = [r for r in serve.turns("telegram") if r["status"] == "answered"]
                return rows[-1] if rows else None

            def final_shown() -> bool:
                row = answered()
                return row is not None and reply_texts() == [shown_final(row)]

            await serve.wait_until(final_shown, ANSWER_TIMEOUT_S, "the final cited answer in the chat")
            answer_s = time.monotonic() - asked
            (shown,) = reply_texts()
            assert "刘庆峰" in shown, shown
            answer, _, sources = shown.partition("\n\n[1] ")
            assert sources, f"no '[1] section' line: {shown!r}"
            assert "[1]" in answer and "刘庆峰" in answer, shown

            # A placeholder at once, then streamed edits of that same message.
            (placeholder,) = fake.bot_messages(user)
            methods = [c.method for c in fake.calls if c.method in ("sendMessage", "editMessageText")]
            assert methods[0] == "sendMessage" and methods.count("sendMessage") == 1, methods
            edits = fake.calls_of("editMessageText")
            assert len(edits) >= 1 and placeholder.edits == len(edits), (len(edits), placeholder.edits)
            assert all(int(c.params["message_id"]) == placeholder.message_id for c in edits)
            first_send = fake.calls_of("sendMessage")[0]
            assert first_send.params.get("parse_mode") == "HTML"
            assert QUESTION not in str(first_send.params["text"]) and "刘庆峰" not in str(first_send.params["text"])
            bad = [(c.method, c.status, c.error) for c in fake.calls if c.status != 200]
            assert not bad, bad

            code = await serve.terminate()
            assert code == 0, f"exit code {code}"
            assert serve.non_loopback() == []

            (row,) = serve.turns("telegram")
            assert row["chat_id"] == str(user) and row["user_id"] == str(user)
            assert row["message_id"] == str(mid) and row["question"] == QUESTION
            assert row["status"] == "answered" and not row["refused"] and not row["retracted"]
            assert row["model"] == SMALL
            cites = json.loads(row["citations"])
            assert cites and cites[0]["n"] == 1 and sources.startswith(cites[0]["section"])
            assert any("刘庆峰" in t for t in serve.cited_texts(row)), cites
            print(f"\ntelegram: ready in {ready:.1f} s, answered in {answer_s:.1f} s, {len(edits)} edits; "
                  f"final: {shown!r}")
    finally:
        await fake.stop()


# ---- WeCom -------------------------------------------------------------------------------------------


async def test_serve_wecom_acknowledges_at_once_then_sends_a_cited_answer_once(
        tmp_path: Path, shared_data: Path) -> None:
    api = FakeWecomApi()
    await api.start()
    port = free_port()
    serve = Serve(tmp_path, shared_data, "wecom", {
        "WECOM_CORP_ID": CORP_ID, "WECOM_AGENT_ID": AGENT_ID, "WECOM_CORP_SECRET": CORP_SECRET,
        "WECOM_TOKEN": TOKEN, "WECOM_AES_KEY": AES_KEY, "WECOM_API_BASE_URL": api.base_url,
        "WECOM_LISTEN": f"127.0.0.1:{port}",
    })
    client = CallbackClient(f"http://127.0.0.1:{port}/wecom/callback")
    user = "zhangsan"
    t0 = time.monotonic()

    def texts_to(who: str) -> list[str]:
        return api.texts_to(who)

    try:
        calls = lambda: f"---- fake WeCom API: {[(r.method, r.path) for r in api.requests]}"  # noqa: E731
        with watched(lambda: serve, calls):
            serve.start()
            await serve.wait_port(port)
            ready = time.monotonic() - t0

            msg_id = client.next_msg_id()
            inner = client.text_xml(user, QUESTION, msg_id)
            sent_at = time.monotonic()
            resp, _, _ = await client.post(inner)
            acked = time.monotonic()
            assert resp.status_code == 200 and resp.text in ("", "success"), (resp.status_code, resp.text)
            assert acked - sent_at < 1.0, f"HTTP 200 took {acked - sent_at:.2f} s"
            assert api.requests_to(SEND) == []  # acknowledged before the answer exists

            retry, _, _ = await client.post(inner)  # WeCom's retry while the answer is being made
            assert retry.status_code == 200

            await serve.wait_until(lambda: texts_to(user), ANSWER_TIMEOUT_S, "message/send to the asker")
            answer_s = time.monotonic() - sent_at
            first_send = next(r for r in api.requests_to(SEND) if r.body and r.body.get("touser") == user)
            assert first_send.at > acked
            (payload,) = [m for m in api.sent if m["touser"] == user]
            assert payload["agentid"] == int(AGENT_ID) and payload["msgtype"] == "text"
            content = payload["text"]["content"]
            assert "刘庆峰" in content and "[1]" in content, content
            answer, _, sources = content.partition("\n\n[1] ")
            assert sources and "[1]" in answer and "刘庆峰" in answer, content

            late, _, _ = await client.post(inner)  # a retry after the answer went out
            assert late.status_code == 200
            # A sentinel from someone else, answered in order, gives the retries every chance to show up.
            sentinel, _, _ = await client.post(client.text_xml("sentinel", "/help"))
            assert sentinel.status_code == 200
            await serve.wait_until(lambda: texts_to("sentinel"), 60, "the sentinel's /help reply")
            await asyncio.sleep(1.0)
            assert texts_to(user) == [content], texts_to(user)

            code = await serve.terminate()
            assert code == 0, f"exit code {code}"
            assert serve.non_loopback() == []

            (row,) = serve.turns("wecom")
            assert row["chat_id"] == user and row["user_id"] == user and row["message_id"] == msg_id
            assert row["question"] == QUESTION and row["status"] == "answered" and not row["refused"]
            assert row["model"] == SMALL
            assert shown_final(row) == content
            cites = json.loads(row["citations"])
            assert cites and any("刘庆峰" in t for t in serve.cited_texts(row)), cites
            print(f"\nwecom: ready in {ready:.1f} s, 200 in {(acked - sent_at) * 1000:.0f} ms, "
                  f"answered in {answer_s:.1f} s; sent: {content!r}")
    finally:
        await api.stop()
