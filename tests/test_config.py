"""bot/config.py: defaults, file precedence, environment overrides, secrets, and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config, config_path, load_config
from bot.errors import ConfigError
from tests.helpers import ROOT


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run with an empty working directory, so no ./config.yaml is found by accident."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_without_a_file(in_tmp: Path) -> None:
    cfg = load_config(None, env={})
    defaults = Config()
    assert cfg.model == defaults.model
    assert cfg.content == defaults.content
    assert cfg.database == "data/bot.sqlite3"
    assert cfg.model.name == "qwen2.5-coder-1.5b"
    assert cfg.telegram.base_url == "https://api.telegram.org/bot"
    assert cfg.wecom.api_base_url == "https://qyapi.weixin.qq.com"
    # Relative paths resolve against the working directory when there is no file.
    assert cfg.database_path == in_tmp / "data" / "bot.sqlite3"


def test_shipped_config_yaml_is_valid_and_equals_the_defaults() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config.yaml"
    cfg = load_config(str(shipped), env={})
    defaults = Config()
    for section in ("model", "content", "conversation", "grounding", "telegram", "wecom"):
        assert getattr(cfg, section) == getattr(defaults, section), section
    assert cfg.base_dir == str(shipped.parent)


def test_precedence_flag_then_env_then_cwd(in_tmp: Path) -> None:
    write(in_tmp / "config.yaml", "log_level: DEBUG\n")
    env_file = write(in_tmp / "env" / "bot.yaml", "log_level: WARNING\n")
    flag_file = write(in_tmp / "flag" / "bot.yaml", "log_level: ERROR\n")

    assert load_config(None, env={}).log_level == "DEBUG"
    assert load_config(None, env={"BOT_CONFIG": str(env_file)}).log_level == "WARNING"
    assert load_config(str(flag_file), env={"BOT_CONFIG": str(env_file)}).log_level == "ERROR"
    assert config_path(None, {"BOT_CONFIG": str(env_file)}) == env_file
    assert config_path(str(flag_file), {"BOT_CONFIG": str(env_file)}) == flag_file


def test_relative_paths_resolve_against_the_config_files_folder(in_tmp: Path) -> None:
    f = write(in_tmp / "deploy" / "bot.yaml", "data_dir: state\ndatabase: state/log.db\ncontent:\n  dir: docs\n")
    cfg = load_config(str(f), env={})
    assert cfg.data_path == in_tmp / "deploy" / "state"
    assert cfg.database_path == in_tmp / "deploy" / "state" / "log.db"
    assert cfg.content_path == in_tmp / "deploy" / "docs"


@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_named_file_that_does_not_exist_is_an_error(in_tmp: Path, via: str) -> None:
    missing = str(in_tmp / "nope.yaml")
    with pytest.raises(ConfigError) as err:
        if via == "flag":
            load_config(missing, env={})
        else:
            load_config(None, env={"BOT_CONFIG": missing})
    assert "nope.yaml" in str(err.value) and "not found" in str(err.value)
    assert "--config" in str(err.value)


def test_environment_overrides_the_file(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "database: file.db\nmodel:\n  name: qwen2.5-coder-1.5b\n"
                                      "wecom:\n  listen: 127.0.0.1:9000\n")
    env = {
        "BOT_DATABASE": "/srv/bot/log.sqlite3",
        "BOT_MODEL": "qwen2.5-coder-0.5b",
        "TELEGRAM_BASE_URL": "http://127.0.0.1:8999/bot",
        "WECOM_LISTEN": "0.0.0.0:8088",
        "WECOM_API_BASE_URL": "http://127.0.0.1:9001",
        "WECOM_CORP_ID": "ww123",
        "WECOM_AGENT_ID": "1000002",
    }
    cfg = load_config(str(f), env=env)
    assert cfg.database == "/srv/bot/log.sqlite3"
    assert cfg.database_path == Path("/srv/bot/log.sqlite3")
    assert cfg.model.name == "qwen2.5-coder-0.5b"
    assert cfg.telegram.base_url == "http://127.0.0.1:8999/bot"
    assert cfg.wecom.listen == "0.0.0.0:8088"
    assert cfg.wecom.api_base_url == "http://127.0.0.1:9001"
    assert cfg.wecom.corp_id == "ww123"
    assert cfg.wecom.agent_id == "1000002"


def test_an_empty_environment_variable_does_not_override(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "database: file.db\n")
    assert load_config(str(f), env={"BOT_DATABASE": ""}).database == "file.db"


def test_model_may_be_a_gguf_path_from_the_environment(in_tmp: Path) -> None:
    cfg = load_config(None, env={"BOT_MODEL": "/models/custom.gguf"})
    assert cfg.model.name == "/models/custom.gguf"


def test_secrets_come_from_the_environment(in_tmp: Path) -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": "123456:AAAA-telegram-secret",
        "TELEGRAM_WEBHOOK_SECRET": "hook-secret-value",
        "WECOM_CORP_SECRET": "corp-secret-value",
        "WECOM_TOKEN": "wecom-token-value",
        "WECOM_AES_KEY": "aes-key-value-43-chars-aaaaaaaaaaaaaaaaaaaaa",
    }
    cfg = load_config(None, env=env)
    assert cfg.telegram.token == env["TELEGRAM_BOT_TOKEN"]
    assert cfg.telegram.webhook_secret == env["TELEGRAM_WEBHOOK_SECRET"]
    assert cfg.wecom.corp_secret == env["WECOM_CORP_SECRET"]
    assert cfg.wecom.token == env["WECOM_TOKEN"]
    assert cfg.wecom.aes_key == env["WECOM_AES_KEY"]
    shown = repr(cfg) + repr(cfg.telegram) + repr(cfg.wecom) + str(cfg)
    for value in env.values():
        assert value not in shown


@pytest.mark.parametrize(
    ("section", "key", "var"),
    [
        ("telegram", "token", "TELEGRAM_BOT_TOKEN"),
        ("telegram", "webhook_secret", "TELEGRAM_WEBHOOK_SECRET"),
        ("wecom", "corp_secret", "WECOM_CORP_SECRET"),
        ("wecom", "token", "WECOM_TOKEN"),
        ("wecom", "aes_key", "WECOM_AES_KEY"),
    ],
)
def test_a_secret_in_the_file_is_rejected_naming_the_env_var(in_tmp: Path, section: str, key: str,
                                                             var: str) -> None:
    f = write(in_tmp / "config.yaml", f"{section}:\n  {key}: do-not-put-me-here\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(f), env={})
    msg = str(err.value)
    assert var in msg
    assert f"{section}.{key}" in msg
    assert "do-not-put-me-here" not in msg


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("databse: x.db\n", "databse"),
        ("model:\n  thread: 2\n", "model.thread"),
        ("telegram:\n  allow_user: [1]\n", "telegram.allow_user"),
    ],
)
def test_an_unknown_key_is_named(in_tmp: Path, text: str, key: str) -> None:
    f = write(in_tmp / "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(str(f), env={})
    assert f"'{key}'" in str(err.value)
    assert "spelling" in str(err.value)


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ("model:\n  threads: two\n", "model.threads", "integer"),
        ("model:\n  threads: 2.5\n", "model.threads", "integer"),
        ("model:\n  threads: 0\n", "model.threads", "greater than 0"),
        ("model:\n  temperature: 5\n", "model.temperature", "between 0 and 2"),
        ("model:\n  temperature: hot\n", "model.temperature", "number"),
        ("model:\n  prefix_cache: maybe\n", "model.prefix_cache", "true or false"),
        ("telegram:\n  mode: push\n", "telegram.mode", "'polling' or 'webhook'"),
        ("telegram:\n  admins: 12345\n", "telegram.admins", "list"),
        ("telegram:\n  mode: webhook\n", "telegram.webhook_url", "https"),
        ("telegram:\n  mode: webhook\n  webhook_url: http://bot.example.org/hook\n", "telegram.webhook_url",
         "TLS-terminating proxy"),
        ("telegram:\n  mode: webhook\n  webhook_url: https://bot.example.org:8080/hook\n", "telegram.webhook_url",
         "443, 80, 88, 8443"),
        ("wecom:\n  listen: nohost\n", "wecom.listen", "host:port"),
        ("wecom:\n  reply_format: html\n", "wecom.reply_format", "'text' or 'markdown'"),
        ("model: qwen\n", "model", "mapping"),
        ("gaps:\n  digest: monthly\n", "gaps.digest", "'off' or 'daily' or 'weekly'"),
        ("gaps:\n  digest: weekly\n  day: monday\n", "gaps.day", "'mon'"),
        ("gaps:\n  hour: 24\n", "gaps.hour", "0 to 23"),
        ("gaps:\n  digest: weekly\n", "gaps.digest", "telegram.admins"),
        ("gaps:\n  group_threshold: 0\n", "gaps.group_threshold", "(0, 1]"),
    ],
)
def test_wrong_values_name_the_key_and_the_fix(in_tmp: Path, text: str, key: str, fix: str) -> None:
    f = write(in_tmp / "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(str(f), env={})
    msg = str(err.value)
    assert key in msg, msg
    assert fix in msg, msg
    assert "config.yaml" in msg  # which file to fix


def test_webhook_urls_telegram_calls_are_accepted(in_tmp: Path) -> None:
    for url in ("https://bot.example.org/hook", "https://bot.example.org:8443/hook", "https://10.0.0.5:88/t"):
        f = write(in_tmp / "config.yaml", f"telegram:\n  mode: webhook\n  webhook_url: {url}\n")
        assert load_config(str(f), env={}).telegram.webhook_url == url


def test_a_bad_listen_address_from_the_environment_is_an_error(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"WECOM_LISTEN": "nohost"})
    assert "wecom.listen" in str(err.value) and "host:port" in str(err.value)


def test_invalid_yaml_and_a_non_mapping_top_level(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "model:\n  threads: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(f), env={})
    write(f, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(f), env={})


def test_valid_values_are_typed(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "model:\n  threads: 4\n  temperature: 1\n  prefix_cache: false\n"
                                      "telegram:\n  admins: [1001, '2002']\n  mode: webhook\n"
                                      "  webhook_url: https://example.org/hook\n")
    cfg = load_config(str(f), env={})
    assert cfg.model.threads == 4 and isinstance(cfg.model.threads, int)
    assert cfg.model.temperature == 1.0 and isinstance(cfg.model.temperature, float)
    assert cfg.model.prefix_cache is False
    assert cfg.telegram.admins == ["1001", "2002"]
    assert cfg.telegram.mode == "webhook"


def test_a_bare_off_in_yaml_is_the_word_not_a_boolean(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "gaps:\n  digest: off\n")  # YAML 1.1 reads it as false
    assert load_config(str(f), env={}).gaps.digest == "off"


def test_a_rule_switched_off_must_be_a_known_rule(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "grounding:\n  rules_off: [topic, topik]\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(f), env={})
    assert "'grounding.rules_off'" in str(err.value) and "'topik'" in str(err.value)
    assert "verbatim" in str(err.value)  # the fix lists the known names
    ok = write(in_tmp / "config.yaml", "grounding:\n  rules_off: [topic]\n")
    assert load_config(str(ok), env={}).grounding.rules_off == ["topic"]


def test_every_rule_grounding_can_name_is_a_known_rule() -> None:
    import re

    from bot.config import GROUNDING_RULES
    files = [ROOT / "bot" / "grounding" / "checks.py", *(ROOT / "bot" / "answering").glob("*.py")]
    source = "".join(f.read_text(encoding="utf-8") for f in files)
    reasons = set(re.findall(r'f?"([a-z_]+): ', source))  # every decline reason opens with its rule's name
    assert len(reasons) >= 8 and reasons <= set(GROUNDING_RULES), reasons - set(GROUNDING_RULES)


def test_the_log_is_a_sqlite_file_unless_a_postgresql_url_is_given(in_tmp: Path) -> None:
    f = write(in_tmp / "config.yaml", "database: state/log.db\n")
    assert load_config(str(f), env={}).log_database == in_tmp / "state" / "log.db"
    url = "postgresql://bot@db:5432/bot"
    assert load_config(str(f), env={"BOT_DATABASE_URL": url}).log_database == url
    assert load_config(str(f), env={"BOT_DATABASE_URL": "sqlite:///other.db"}).log_database == in_tmp / "other.db"
    assert load_config(str(f), env={"BOT_DATABASE_URL": "sqlite:////abs/x.db"}).log_database == Path("/abs/x.db")
    with pytest.raises(ConfigError, match=r"log.database_url.*mysql://…"):
        load_config(str(f), env={"BOT_DATABASE_URL": "mysql://root:hunter2@db/bot"})
    try:
        load_config(str(f), env={"BOT_DATABASE_URL": "mysql://root:hunter2@db/bot"})
    except ConfigError as exc:
        assert "hunter2" not in str(exc)  # a password in the URL is never repeated
