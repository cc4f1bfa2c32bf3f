"""Builders shared by tests: an engine over the shipped article with any backend, and a store in tmp."""

from __future__ import annotations

from pathlib import Path

from bot.config import Config
from bot.engine import Engine
from bot.knowledge import Knowledge
from bot.prompts import Prompts
from bot.store import LogStore

ROOT = Path(__file__).resolve().parent.parent


def make_config(tmp_path: Path, content_dir: Path | None = None) -> Config:
    """Defaults, with data in tmp_path and the shipped content (or `content_dir`)."""
    cfg = Config()
    cfg.base_dir = str(ROOT)
    cfg.data_dir = str(tmp_path / "data")
    cfg.database = str(tmp_path / "data" / "bot.sqlite3")
    cfg.content.dir = str(content_dir or ROOT / "content")
    return cfg


async def make_engine(tmp_path: Path, backend: object, content_dir: Path | None = None,
                      cfg: Config | None = None) -> tuple[Engine, LogStore]:
    """An Engine over the article (or content_dir) with `backend`; the caller closes the store."""
    cfg = cfg or make_config(tmp_path, content_dir)
    store = await LogStore.open(cfg.database_path)
    engine = Engine(cfg, Knowledge(cfg.content_path), backend, store, Prompts())  # type: ignore[arg-type]
    await engine.start()
    return engine, store
