"""Reading the configuration: `config.yaml` validated into the sections' dataclasses, then the environment.

Precedence: `bot --config PATH`, else `$BOT_CONFIG`, else `./config.yaml`. Secrets (tokens, keys) are read
only from the environment and are never part of `repr()` or logs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from bot.config.checks import check
from bot.config.sections import Config
from bot.errors import ConfigError

# (env var, dotted key) for values that may also be set in the file.
_ENV_OVERRIDES = [
    ("BOT_DATABASE", "database"),
    ("BOT_DATABASE_URL", "log.database_url"),
    ("BOT_MODEL", "model.name"),
    ("BOT_OPENAI_BASE_URL", "model.base_url"),
    ("TELEGRAM_BASE_URL", "telegram.base_url"),
    ("WECOM_API_BASE_URL", "wecom.api_base_url"),
    ("WECOM_LISTEN", "wecom.listen"),
    ("WECOM_CORP_ID", "wecom.corp_id"),
    ("WECOM_AGENT_ID", "wecom.agent_id"),
    ("WECOM_BOT_ID", "wecom_bot.bot_id"),
    ("WECOM_BOT_GATEWAY_URL", "wecom_bot.gateway_url"),
    ("WECOM_BOT_LISTEN", "wecom_bot.listen"),
]
# Secrets: environment only, a value in the file is an error.
_SECRETS = [
    ("TELEGRAM_BOT_TOKEN", "telegram.token"),
    ("TELEGRAM_WEBHOOK_SECRET", "telegram.webhook_secret"),
    ("WECOM_CORP_SECRET", "wecom.corp_secret"),
    ("WECOM_TOKEN", "wecom.token"),
    ("WECOM_AES_KEY", "wecom.aes_key"),
    ("WECOM_BOT_SECRET", "wecom_bot.secret"),
    ("WECOM_BOT_TOKEN", "wecom_bot.token"),
    ("WECOM_BOT_AES_KEY", "wecom_bot.aes_key"),
    ("BOT_OPENAI_API_KEY", "model.api_key"),
]


def config_path(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Path:
    """Which config file to read: the flag, else $BOT_CONFIG, else ./config.yaml."""
    env = os.environ if env is None else env
    return Path(explicit or env.get("BOT_CONFIG") or "config.yaml")


def load_config(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read, validate and apply environment overrides; a missing default file means all defaults."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax at the line shown.") from exc
    elif explicit or env.get("BOT_CONFIG"):
        raise ConfigError(f"config file {path} not found; fix: pass an existing file to --config or BOT_CONFIG.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, e.g. 'model:'.")
    for _, key in _SECRETS:
        section, name = key.split(".")
        if isinstance(raw.get(section), dict) and raw[section].get(name):
            var = next(v for v, k in _SECRETS if k == key)
            raise ConfigError(f"{path}: {key} is a secret; remove it from the file and set ${var} instead.")
    cfg = _build(Config, raw, "", str(path))
    cfg.base_dir = str(path.parent.resolve()) if path.exists() else str(Path.cwd())
    for var, key in _ENV_OVERRIDES + _SECRETS:
        if env.get(var):
            _set(cfg, key, env[var])
    check(cfg, str(path))
    return cfg


def _set(cfg: Config, dotted: str, value: str) -> None:
    section, _, name = dotted.rpartition(".")
    target = getattr(cfg, section) if section else cfg
    setattr(target, name, value)


def _build(cls: type, data: dict[str, Any], prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(data) - names)
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(f"{src}: unknown key '{key}'; fix: remove it or check the spelling (known: "
                          f"{', '.join(sorted(names))}).")
    kwargs = {name: _coerce(hints[name], value, prefix + name, src) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, src: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: '{key}' must be a mapping of keys, got {value!r}.")
        return _build(tp, value, key + ".", src)
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in typing.get_args(tp):
            value = "on" if value else "off"  # YAML 1.1 reads a bare off / on as a boolean
        if value not in typing.get_args(tp):
            choices = " or ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{src}: '{key}' is {value!r}; fix: set it to {choices}.")
        return value
    if origin in (list, types.GenericAlias) or tp is list or origin is list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{src}: '{key}' must be a list, e.g. [123456789], got {value!r}.")
        return [str(v) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: '{key}' must be true or false, got {value!r}.")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (tp is int and value != int(value)):
            raise ConfigError(f"{src}: '{key}' must be a{'n integer' if tp is int else ' number'}, got {value!r}.")
        return tp(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{src}: '{key}' must be a string, got {value!r}.")
        return str(value)
    return value
