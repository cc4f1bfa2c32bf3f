"""bot/core/gate.py: the rules, tested directly (tests/test_channels.py runs each through every channel)."""

from __future__ import annotations

import pytest

from bot.core.gate import Gate, Policy, SlidingWindow
from bot.types import Incoming

# ---- the rate-limit window ----


def test_sliding_window_counts_per_key_and_expires() -> None:
    win = SlidingWindow(2, window_s=60)
    assert win.hit("u", now=0) == 0 and win.hit("u", now=10) == 0
    assert win.hit("u", now=20) == pytest.approx(40)
    assert win.hit("v", now=20) == 0
    assert win.hit("u", now=60) == 0  # the hit at 0 has left the window
    assert win.hit("u", now=61) == pytest.approx(9)


def test_refused_hits_are_not_counted() -> None:
    win = SlidingWindow(1, window_s=10)
    assert win.hit("u", now=0) == 0
    assert win.hit("u", now=5) == pytest.approx(5) and win.hit("u", now=9) == pytest.approx(1)
    assert win.hit("u", now=10) == 0


def test_wait_seconds_uses_the_clock_and_rounds_up() -> None:
    now = [0.0]
    win = SlidingWindow(1, clock=lambda: now[0])
    assert win.wait_seconds("u") == 0
    now[0] = 19.5
    assert win.wait_seconds("u") == 41
    now[0] = 59.9
    assert win.wait_seconds("u") == 1  # never 0 while refused
    now[0] = 60.0
    assert win.wait_seconds("u") == 0


def test_no_limit() -> None:
    assert SlidingWindow(0).hit("u") == 0
    win = SlidingWindow(-1)
    assert all(win.wait_seconds("u") == 0 for _ in range(100))



# ---- the gate ----


def msg(text: str = "科大讯飞董事长是谁？", **kw: object) -> Incoming:
    kw.setdefault("channel", "telegram")
    kw.setdefault("chat_id", "c1")
    kw.setdefault("user_id", "u1")
    return Incoming(text=text, **kw)  # type: ignore[arg-type]


def test_empty_allow_lists_admit_everyone_and_a_listed_user_or_chat_passes() -> None:
    assert Gate(100).admit(msg()) is None
    gate = Gate(100, {"telegram": Policy(frozenset({"u1"}), frozenset({"c9"}))})
    assert gate.admit(msg()) is None
    assert gate.admit(msg(user_id="u2", chat_id="c9")) is None
    assert gate.admit(msg(user_id="u2")).message == "not_allowed"  # type: ignore[union-attr]
    assert gate.admit(msg(user_id="u2", is_admin=True)) is None
    assert gate.admit(msg(user_id="u2", channel="cli")) is None  # another channel's policy


def test_non_text_messages_are_refused_with_their_kind_logged() -> None:
    refusal = Gate(100).admit(msg("", kind="voice"))
    assert refusal is not None
    assert (refusal.message, refusal.event, refusal.detail) == ("text_only", "non_text", "voice")


def test_question_rules_in_order() -> None:
    gate = Gate(10, {"telegram": Policy(rate_limit_per_minute=1)})
    assert gate.question(msg("  ")).message == "empty"  # type: ignore[union-attr]
    too_long = gate.question(msg("长" * 11))
    assert too_long is not None and too_long.values == {"limit": 10} and too_long.detail == "11"
    assert gate.question(msg("问题")) is None
    limited = gate.question(msg("问题"))
    assert limited is not None and limited.message == "rate_limited" and int(limited.values["seconds"]) >= 59
    assert gate.question(msg("问题", user_id="u2")) is None  # per user
    assert gate.question(msg("问题", channel="cli")) is None  # no limit without a policy


@pytest.mark.parametrize("limit", [0, -1])
def test_a_zero_limit_means_none(limit: int) -> None:
    gate = Gate(10, {"wecom": Policy(rate_limit_per_minute=limit)})
    assert all(gate.question(msg("问题", channel="wecom")) is None for _ in range(50))


def test_logged_events_count_against_the_limit_until_they_age_out() -> None:
    now = [100.0]
    window = SlidingWindow(2, 60.0, clock=lambda: now[0])
    window.observe("u", [10.0, 50.0, 75.0])  # 75 s ago is outside the window: dropped
    assert window.hit("u") == pytest.approx(10.0)  # full: the one 50 s ago leaves in 10 s
    now[0] += 10.0
    assert window.hit("u") == 0.0


def test_the_count_is_this_process_or_the_log_whichever_is_higher_never_both() -> None:
    now = [100.0]
    window = SlidingWindow(3, 60.0, clock=lambda: now[0])
    assert window.hit("u") == 0.0 and window.hit("u") == 0.0  # two here, being logged
    window.observe("u", [0.5])  # the log has one of them so far: not counted twice
    assert window.hit("u") == 0.0
    assert window.hit("u") > 0  # three here
    other = SlidingWindow(3, 60.0, clock=lambda: now[0])
    other.observe("u", [1.0, 2.0, 3.0])  # another instance took three
    assert other.hit("u") == pytest.approx(57.0)
