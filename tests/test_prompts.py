"""bot/answering/prompts.py: the templates, and the model-decline phrases checked against every fixed reply."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.answering.prompts import DEFAULT_DIR, Prompts
from bot.errors import ConfigError


@pytest.fixture
def prompts_copy(tmp_path: Path) -> Path:
    d = tmp_path / "prompts"
    shutil.copytree(DEFAULT_DIR, d)
    return d


def test_every_fixed_reply_is_recognised_as_a_decline() -> None:
    p = Prompts()
    quoted = ("文章中没有提到。", "我只能回答与这篇文章内容有关的问题。")  # what system.txt tells the model to say
    for reply in (*quoted, p.text("decline_zh"), p.text("decline_en"), p.text("offtopic_zh"), p.text("offtopic_en")):
        assert p.declines.search(reply), reply
    assert p.declines.search("THE ARTICLE DOESN'T MENTION IT")  # any case
    assert not p.declines.search("刘庆峰是科大讯飞董事长[1]。")
    assert not p.declines.search("# Phrases meaning")  # comment lines are no phrases


def test_a_quoted_reply_in_the_system_prompt_without_a_listed_phrase_fails_at_load(prompts_copy: Path) -> None:
    system = prompts_copy / "system.txt"
    system.write_text(system.read_text(encoding="utf-8").replace("“文章中没有提到。”", "“这个我不知道。”"),
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="model_declines.txt") as err:
        Prompts(prompts_copy)
    assert "这个我不知道。" in str(err.value) and "system.txt" in str(err.value) and "fix:" in str(err.value)


def test_a_fixed_reply_without_a_listed_phrase_fails_at_load(prompts_copy: Path) -> None:
    (prompts_copy / "decline_en.txt").write_text("Sorry, no idea.\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model_declines\.txt.*Sorry, no idea\..*decline_en\.txt"):
        Prompts(prompts_copy)


def test_a_phrase_list_with_no_phrase_fails_at_load(prompts_copy: Path) -> None:
    (prompts_copy / "model_declines.txt").write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="lists no phrase"):
        Prompts(prompts_copy)
    (prompts_copy / "model_declines.txt").unlink()
    with pytest.raises(ConfigError, match="model_declines.txt missing"):
        Prompts(prompts_copy)
