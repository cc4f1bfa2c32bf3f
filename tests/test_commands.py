"""bot/core/commands.py: parsing and formatting, tested directly (tests/test_channels.py runs each command
through every channel)."""

from __future__ import annotations

from bot.core.commands import format_sources, parse, stats_arguments
from bot.types import Citation


def test_parse_commands_and_not_questions() -> None:
    assert parse("/Help") == ("/help", "")
    assert parse("  /stats 48 telegram ") == ("/stats", "48 telegram")
    assert parse("/ask 刘庆峰是谁？\n第二行") == ("/ask", "刘庆峰是谁？\n第二行")
    assert parse("/ask刘庆峰是谁？") == ("/ask", "刘庆峰是谁？")  # Telegram's names are Latin letters, digits, _
    assert parse("科大讯飞董事长是谁？") is None
    assert parse("1/2 是多少") is None and parse("/") is None and parse("/ 董事长") is None
    assert parse("/5G是什么？") is None


def test_stats_arguments_in_either_order() -> None:
    assert stats_arguments("") == (24.0, None)
    assert stats_arguments("48") == (48.0, None)
    assert stats_arguments("WeCom 1.5") == (1.5, "wecom")


# ---- sources ----


def test_format_sources() -> None:
    cites = [Citation("p1", "第一节", "刘庆峰说。", 1), Citation("p7", "第二节", "科大讯飞。", 2)]
    assert format_sources(cites) == "[1] 第一节\n刘庆峰说。\n\n[2] 第二节\n科大讯飞。"
    assert format_sources([]) == ""
