"""The composition root: config in; store, knowledge, backend, engine and channels built and run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.backends.base import Backend, ProgressFn
from bot.backends.models import resolve
from bot.config import Config
from bot.errors import StoreUnavailable
from bot.log.store import LogStore
from bot.types import ReloadReport

if TYPE_CHECKING:
    # The text stack (jieba, pypinyin: about a second of imports) is imported by `_read_content`, in a thread
    # while the model loads, so a restart does not pay for the two one after the other.
    from bot.content.knowledge import ContentSet, Knowledge
    from bot.core.runtime import Core, Turn

log = logging.getLogger(__name__)


class Channel(Protocol):
    """What `serve` needs of a messenger adapter."""

    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def resume(self, turn: Turn) -> None: ...
    async def notify_admins(self, text: str, only: set[str]) -> int: ...


@dataclass
class App:
    """Everything a command needs, built once per process."""

    cfg: Config
    store: LogStore
    knowledge: Knowledge
    backend: Backend
    core: Core
    startup: dict[str, Any] = field(default_factory=dict)  # seconds per start-up phase, for `bot ask --json`


def setup_logging(cfg: Config) -> None:
    """Logs go to stderr so `bot ask --json` keeps stdout for JSON lines."""
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "telegram", "apscheduler", "jieba", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_backend(cfg: Config) -> Backend:
    """The configured backend: an OpenAI-compatible server, or the embedded llama.cpp model (raises
    ModelError with the fix when its file is missing)."""
    if cfg.model.backend == "openai":
        from bot.backends.openai import OpenAIBackend

        return OpenAIBackend(cfg.model)
    from bot.backends.llamacpp import LlamaCppBackend, LlamaSettings

    model = resolve(cfg.model.name, cfg.path(cfg.model.dir))
    cache = cfg.data_path / "prefix-cache" if cfg.model.prefix_cache else None
    return LlamaCppBackend(LlamaSettings(model.path, model.name, model.sha256, cfg.model, cache))


def progress_bar(enabled: bool) -> tuple[ProgressFn | None, Any]:
    """A tqdm bar on stderr for the prefix computation, and a closer."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="tok", desc="Reading the content (first run only)", file=sys.stderr))
        bar[0].update(done - bar[0].n)

    return update, lambda: bar and bar[0].close()


@contextlib.asynccontextmanager
async def open_app(cfg: Config, *, backend: Backend | None = None, progress: bool = True) -> AsyncIterator[App]:
    """Build the app, compute or restore the content prefix, and tear everything down afterwards."""
    store = await LogStore.open(cfg.log_database)
    store.leases.lease_s = cfg.log.lease_s
    try:
        startup: dict[str, Any] = {}
        # The model loads while the content is read and indexed: the two take similar time on a restart.
        loading = asyncio.create_task(_timed(startup, "model_load_s", asyncio.to_thread(make_backend, cfg))
                                      if backend is None else _ready(backend))
        try:
            knowledge = await _timed(startup, "content_s", asyncio.to_thread(_read_content, cfg.content_path,
                                                                                  cfg.content.max_mb))
        except BaseException:
            with contextlib.suppress(Exception):
                await (await loading).close()
            raise
        backend = await loading
        try:
            core = _build_core(cfg, knowledge, backend, store)
            update, close_bar = progress_bar(progress and sys.stderr.isatty())
            try:
                await _timed(startup, "prefix_s", core.start(update))
            finally:
                close_bar()
            startup["prefix_source"] = backend.timings.get("prefix_source")
            write_snapshot(cfg, knowledge.current)
            yield App(cfg, store, knowledge, backend, core, startup)
        finally:
            await backend.close()
    finally:
        await store.close()


def _read_content(path: Path, max_mb: float) -> Knowledge:
    """Import the text stack and index the content (run in a thread beside the model load)."""
    import bot.core.runtime  # noqa: F401 - its imports (jieba's dictionaries, pypinyin) are most of a restart's wait
    from bot.content.knowledge import Knowledge

    return Knowledge(path, max_mb)


def _build_core(cfg: Config, knowledge: Knowledge, backend: Backend, store: LogStore) -> Core:
    """The core over its engine and gate (modules already imported by `_read_content`)."""
    from bot.core.runtime import wire

    return wire(cfg, knowledge, backend, store)


async def _timed(into: dict[str, Any], key: str, work: Any) -> Any:
    """Await `work`, recording its wall time in seconds under `key`."""
    started = time.perf_counter()
    try:
        return await work
    finally:
        into[key] = round(time.perf_counter() - started, 3)


async def _ready(backend: Backend) -> Backend:
    return backend


def write_snapshot(cfg: Config, content: ContentSet) -> None:
    """Record what a running bot serves, so `bot content reload` can diff against it."""
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    snap = {"version": content.version, "passages": [[p.id, p.source, p.section] for p in content.passages]}
    (cfg.data_path / "content.json").write_text(json.dumps(snap, ensure_ascii=False), encoding="utf-8")


def check_reload(cfg: Config) -> tuple[ReloadReport, bool]:
    """Validate the content folder and diff it against the running bot's snapshot; signal the server."""
    from bot.content.knowledge import ContentSet, diff, load
    from bot.types import Passage

    snap_path = cfg.data_path / "content.json"
    try:
        new = load(cfg.content_path, cfg.content.max_mb)
    except Exception as exc:  # noqa: BLE001 - reported, nothing replaced
        old_version = json.loads(snap_path.read_text())["version"] if snap_path.exists() else "-"
        return ReloadReport(False, old_version, old_version, error=str(exc)), False
    if snap_path.exists():
        snap = json.loads(snap_path.read_text(encoding="utf-8"))
        old_passages = tuple(Passage(pid, sec, "", src, i) for i, (pid, src, sec) in enumerate(snap["passages"]))
        old = ContentSet(snap["version"], "", old_passages, (), new.index)
        report = diff(old, new)
    else:
        report = ReloadReport(True, new.version, "-", added=len(new.passages), passages=len(new.passages))
    return report, signal_server(cfg)


def pid_path(cfg: Config) -> Path:
    return cfg.data_path / "bot.pid"


def signal_server(cfg: Config) -> bool:
    """Send SIGHUP to a running `bot serve` named in the pid file; False when none runs."""
    path = pid_path(cfg)
    try:
        pid = int(path.read_text().strip())
        # A stale pid file may name an unrelated process now; SIGHUP would end most programs.
        if b"bot" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        os.kill(pid, signal.SIGHUP)
        return True
    except (OSError, ValueError):
        return False


def build_channels(app: App, only: str | None) -> list[Channel]:
    """Every channel whose credentials are configured (or just `only`)."""
    cfg = app.cfg
    channels: list[Channel] = []
    if only in (None, "telegram") and cfg.telegram.token:
        from bot.channels.telegram import TelegramChannel

        channels.append(TelegramChannel(cfg.telegram, app.core))
    if only in (None, "wecom") and cfg.wecom.corp_id and cfg.wecom.token and cfg.wecom.aes_key:
        from bot.channels.wecom import WecomChannel

        channels.append(WecomChannel(cfg.wecom, app.core))
    bot = cfg.wecom_bot
    if only in (None, "wecom_bot") and (bot.bot_id or bot.secret or bot.token or bot.aes_key):
        from bot.channels.wecom_bot import WecomBotChannel

        channels.append(WecomBotChannel(bot, app.core))
    return channels


async def serve(app: App, only: str | None = None) -> int:
    """Run the enabled channels until SIGINT/SIGTERM; SIGHUP reloads the content."""
    channels = build_channels(app, only)
    if not channels:
        want = only or "any channel"
        print(f"bot serve: no credentials for {want}; fix: set TELEGRAM_BOT_TOKEN; or WECOM_CORP_ID, "
              "WECOM_AGENT_ID, WECOM_CORP_SECRET, WECOM_TOKEN and WECOM_AES_KEY (a WeCom app); or WECOM_BOT_ID and "
              "WECOM_BOT_SECRET (a WeCom AI bot).", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[Any]] = set()

    def on_hup() -> None:
        task = loop.create_task(_reload(app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    pid_path(app.cfg).write_text(str(os.getpid()))
    # Read before any channel starts, so a message arriving meanwhile is not also taken for a leftover.
    pending = await app.core.pending([ch.name for ch in channels])
    started: list[Channel] = []
    resuming: asyncio.Task[None] | None = None
    try:
        for ch in channels:
            await ch.start()
            started.append(ch)
            log.info("channel %s started", ch.name)
        resuming = asyncio.create_task(_resume_pending(pending, started))
        housekeeping = asyncio.create_task(_housekeeping(app))
        watching = asyncio.create_task(_watch_log(app, started))
        digests = asyncio.create_task(_digests(app, started))
        await stop.wait()
        for task in (housekeeping, watching, digests):
            task.cancel()
    finally:
        # Answers in progress (resumed ones too) get a few seconds; the rest stay pending for the restart.
        if left := await app.core.drain(app.cfg.shutdown_grace_s):
            log.info("shutdown: %d unfinished answers left pending for the restart", left)
        if resuming is not None:
            resuming.cancel()
        for ch in reversed(started):
            with contextlib.suppress(Exception):
                await ch.stop()
        pid_path(app.cfg).unlink(missing_ok=True)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


def redaction_key(cfg: Config) -> bytes:
    """The secret that turns user ids into stable pseudonyms (made once, kept in data_dir, owner-only)."""
    path = cfg.data_path / "redaction.key"
    if not path.exists() or not path.read_text().strip():  # an empty file: a crash between create and write
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


async def _housekeeping(app: App, every_s: float = 3600.0) -> None:
    """Log retention and redaction (config `log`) at start and every hour while serving."""
    log_cfg = app.cfg.log
    while True:
        try:
            key = redaction_key(app.cfg) if log_cfg.redact_after_days else b""
            done = await app.core.services.prune(log_cfg.retention_days, log_cfg.redact_after_days, key)
            if any(done.values()):
                log.info("log housekeeping: %s", ", ".join(f"{n} {kind}" for kind, n in done.items() if n))
        except Exception:
            log.exception("log housekeeping failed; retried in an hour")
        await asyncio.sleep(every_s)


async def _watch_log(app: App, channels: list[Channel]) -> None:
    """Every third of `log.lease_s` while serving: follow another instance's content change, renew this
    instance's leases, and answer the turns no live instance is on (another one sharing the log died; a
    delivery here failed and is tried again)."""
    names = [ch.name for ch in channels]
    resuming: set[asyncio.Task[None]] = set()
    try:
        while True:
            await asyncio.sleep(app.cfg.log.lease_s / 3)
            try:
                if (report := await app.core.follow()) is not None:
                    log.info("content changed by another instance: %s", report.summary())
                    if report.ok:
                        write_snapshot(app.cfg, app.knowledge.current)
                orphans = await app.core.orphans(names)
            except StoreUnavailable:
                continue  # the log is down: the leases lapse, and whoever looks once it is back takes the turns
            except Exception:
                log.exception("could not look for turns left by another instance")
                continue
            if orphans:
                task = asyncio.create_task(_resume_pending(orphans, channels))
                resuming.add(task)
                task.add_done_callback(resuming.discard)
    finally:
        for task in resuming:
            task.cancel()


async def _digests(app: App, channels: list[Channel], every_s: float = 60.0) -> None:
    """The gaps digest (config `gaps.digest`), looked for every minute and sent by the one instance that
    claims its period; when no admin could be reached, looked for again in an hour."""
    if app.cfg.gaps.digest == "off":
        return
    from bot.core import digest

    async def notify(readers: dict[str, set[str]], text: str) -> int:
        return sum([await ch.notify_admins(text, readers.get(ch.name, set())) for ch in channels])

    while True:
        wait = every_s
        try:
            if (sent := await digest.send(app.core.services, notify, datetime.now())) is not None:
                log.log(logging.INFO if sent[1] else logging.WARNING, "gaps digest %s sent to %d admins", *sent)
                wait = every_s if sent[1] else 3600.0
        except StoreUnavailable:
            pass  # the log is down: the period is claimed once it is back
        except Exception:
            log.exception("the gaps digest failed; tried again in a minute")
        await asyncio.sleep(wait)


async def _reload(app: App) -> None:
    try:
        report = await app.core.reload()
    except Exception:
        log.exception("content reload failed; still serving version %s", app.knowledge.current.version)
        return
    if report.ok:
        write_snapshot(app.cfg, app.knowledge.current)
    log.info("%s", report.summary())


async def _resume_pending(pending: list[Turn], channels: list[Channel]) -> None:
    """Answer messenger turns left unanswered by a crash (< 10 min old; older ones were marked abandoned)."""
    by_name = {ch.name: ch for ch in channels}
    for turn in pending:
        log.info("answering turn %s left unanswered on %s", turn.turn_id, turn.incoming.channel)
        try:
            await by_name[turn.incoming.channel].resume(turn)
        except Exception:
            log.exception("could not resume turn %s", turn.turn_id)
