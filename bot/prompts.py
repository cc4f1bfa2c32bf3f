"""Prompt templates from the prompts/ folder, rendered with str.format; the folder is read once per load."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bot.errors import ConfigError

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "prompts"
REQUIRED = ("system", "passage", "question", "retrieved", "translate_zh", "translate_en", "decline_zh", "decline_en",
            "offtopic_zh", "offtopic_en", "kind")


class Prompts:
    """The templates, by file stem; `digest` changes whenever any template does (prefix cache key)."""

    def __init__(self, directory: Path = DEFAULT_DIR) -> None:
        if not directory.is_dir():
            raise ConfigError(f"prompt folder {directory} not found; fix: restore prompts/ from the repository.")
        self.templates = {p.stem: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.txt"))}
        missing = [name for name in REQUIRED if name not in self.templates]
        if missing:
            raise ConfigError(f"prompt template {missing[0]}.txt missing in {directory}; fix: restore it.")
        self.digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in self.templates.items()).encode()).hexdigest()

    def render(self, name: str, **values: object) -> str:
        """Fill template `name`, without its trailing newline."""
        return self.templates[name].format(**values).rstrip("\n")

    def text(self, name: str) -> str:
        """A template with nothing to fill, stripped."""
        return self.templates[name].strip()
