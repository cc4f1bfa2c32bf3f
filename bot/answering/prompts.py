"""Prompt templates from the prompts/ folder, rendered with str.format; the folder is read once per load."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bot.errors import ConfigError

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "prompts"
REQUIRED = ("system", "passage", "question", "retrieved", "translate_zh", "translate_en", "decline_zh", "decline_en",
            "offtopic_zh", "offtopic_en", "model_declines")
# The fixed replies the bot itself gives; the model's declines must be recognisable in each of them.
FIXED_REPLIES = ("decline_zh", "decline_en", "offtopic_zh", "offtopic_en")
_QUOTED = re.compile(r"“([^”]+)”")


class Prompts:
    """The templates, by file stem; `digest` changes whenever any template does (prefix cache key).

    `declines` matches the phrases of model_declines.txt: the model saying the article does not cover it.
    """

    def __init__(self, directory: Path = DEFAULT_DIR) -> None:
        if not directory.is_dir():
            raise ConfigError(f"prompt folder {directory} not found; fix: restore prompts/ from the repository.")
        self.templates = {p.stem: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.txt"))}
        missing = [name for name in REQUIRED if name not in self.templates]
        if missing:
            raise ConfigError(f"prompt template {missing[0]}.txt missing in {directory}; fix: restore it.")
        self.digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in self.templates.items()).encode()).hexdigest()
        self.declines = self._declines(directory / "model_declines.txt")

    def render(self, name: str, **values: object) -> str:
        """Fill template `name`, without its trailing newline."""
        return self.templates[name].format(**values).rstrip("\n")

    def text(self, name: str) -> str:
        """A template with nothing to fill, stripped."""
        return self.templates[name].strip()

    def _declines(self, path: Path) -> re.Pattern[str]:
        """The listed decline phrases as one case-insensitive pattern, checked against every fixed reply."""
        phrases = [line.strip() for line in self.templates["model_declines"].splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
        if not phrases:
            raise ConfigError(f"{path} lists no phrase; fix: restore it from the repository.")
        pattern = re.compile("|".join(re.escape(p) for p in phrases), re.IGNORECASE)
        replies = [("system.txt", quoted) for quoted in _QUOTED.findall(self.templates["system"])]
        replies += [(f"{name}.txt", self.text(name)) for name in FIXED_REPLIES]
        for source, reply in replies:
            if not pattern.search(reply):
                raise ConfigError(f"{path}: none of its phrases occurs in the fixed reply “{reply}” ({source}), so "
                                  f"the bot would not notice the model giving it; fix: add a phrase of that reply "
                                  f"to {path.name}, one a line.")
        return pattern
