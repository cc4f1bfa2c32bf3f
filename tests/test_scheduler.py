"""The scheduler alone: fair order, one answer per conversation, KV room, batch budget, cancel, time limit."""

from __future__ import annotations

import time

import pytest

from bot.backends.base import part
from bot.backends.scheduler import Request, Scheduler
from bot.errors import AnswerStopped, BackendBusy, BackendError

PREFIX = list(range(100))


def make(sched: Scheduler | None = None, **kw: int) -> Scheduler:
    s = sched or Scheduler(slots=kw.get("slots", 2), n_ctx=kw.get("n_ctx", 1000), n_batch=kw.get("n_batch", 64),
                           queue_limit=kw.get("queue_limit", 8), prefix_cells=lambda: len(PREFIX))
    return s


def req(conversation: str, priority: float, *, suffix: int = 10, max_tokens: int = 20) -> tuple[Request, list]:
    got: list = []
    r = Request(PREFIX + [1000 + i for i in range(suffix)], max_tokens, conversation, got.append, priority=priority)
    return r, got


def admit(s: Scheduler) -> list[Request]:
    seqs = iter(range(1, 100))
    return s.admit(lambda p: (0, len(PREFIX) if p[: len(PREFIX)] == PREFIX else 0),
                   lambda: next(n for n in seqs if n not in s.running))


def test_earlier_turns_first_and_one_answer_per_conversation() -> None:
    s = make(slots=2)
    late, _ = req("a", 3.0)
    early, _ = req("b", 1.0)
    same_conv, _ = req("b", 2.0)
    for r in (late, early, same_conv):
        s.submit(r)
    joined = admit(s)
    # b's second request waits for b's first even though it is earlier than a's.
    assert joined == [early, late]
    s.finish(early)
    assert admit(s) == [same_conv]


def test_a_turns_second_pass_goes_ahead_of_later_turns() -> None:
    s = make(slots=1)
    first, _ = req("a", 1.0)
    s.submit(first)
    admit(s)
    later = [req(f"u{i}", 2.0 + i)[0] for i in range(3)]
    for r in later:
        s.submit(r)
    retry, _ = req("a", 1.0)  # the same turn's retry carries the turn's start as its priority
    assert s.submit(retry) == 1  # only the running answer is ahead of it
    s.finish(first)
    assert admit(s) == [retry]


def test_shared_prefix_is_not_fed_again() -> None:
    s = make()
    r, _ = req("a", 1.0, suffix=7)
    s.submit(r)
    admit(s)
    assert r.pos == len(PREFIX) and r.todo == r.prompt[len(PREFIX):]


def test_decoding_answers_get_their_token_before_prefills_and_the_batch_budget_holds() -> None:
    s = make(slots=3, n_batch=16)
    a, _ = req("a", 1.0, suffix=30)
    s.submit(a)
    admit(s)
    a.todo = [5]  # a is decoding now
    b, _ = req("b", 2.0, suffix=30)
    c, _ = req("c", 3.0, suffix=30)
    s.submit(b)
    s.submit(c)
    admit(s)
    steps = s.plan()
    assert steps[0] == (a, [5])
    assert sum(len(t) for _, t in steps) == 16
    assert steps[1][0] is b and len(steps[1][1]) == 15


def test_waits_for_kv_room_and_fails_what_can_never_fit() -> None:
    s = make(slots=4, n_ctx=100 + 2 * 30)
    rs = [req(f"c{i}", float(i), suffix=10, max_tokens=20)[0] for i in range(3)]
    for r in rs:
        s.submit(r)
    assert admit(s) == rs[:2]  # each needs 30 cells beyond the prefix; the third waits
    s.finish(rs[0])
    assert admit(s) == [rs[2]]
    huge, got = req("h", 9.0, suffix=10, max_tokens=500)
    s.submit(huge)
    admit(s)
    assert isinstance(got[-1], BackendError) and "n_ctx" in str(got[-1])


def test_full_queue_says_busy_and_position_counts_what_is_ahead() -> None:
    s = make(slots=1, queue_limit=2)
    a, _ = req("a", 1.0)
    assert s.submit(a) == 0
    admit(s)
    b, _ = req("b", 2.0)
    assert s.submit(b) == 1
    c, _ = req("c", 3.0)
    assert s.submit(c) == 2
    with pytest.raises(BackendBusy):
        s.submit(req("d", 4.0)[0])


def test_cancel_stops_queued_and_running_answers_of_one_conversation() -> None:
    s = make(slots=1)
    running, got_running = req("a", 1.0)
    waiting, got_waiting = req("a", 2.0)
    other, _ = req("b", 3.0)
    for r in (running, waiting, other):
        s.submit(r)
    admit(s)
    assert s.cancel("a") == 2
    assert s.expired() == [running]
    assert isinstance(got_running[-1], AnswerStopped)
    assert admit(s) == [other]  # the cancelled waiting one never starts
    assert isinstance(got_waiting[-1], AnswerStopped)


def test_time_limit_stops_a_running_answer() -> None:
    s = make()
    r, got = req("a", 1.0)
    r.time_limit_s = 0.01
    s.submit(r)
    admit(s)
    assert s.expired() == []
    time.sleep(0.02)
    assert s.expired() == [r]
    assert isinstance(got[-1], AnswerStopped) and "answer_time_limit_s" in str(got[-1])


def test_a_turns_parts_run_side_by_side_and_stop_with_its_conversation() -> None:
    s = make(slots=3)
    parts = [req(part("a", i), 1.0)[0] for i in range(2)]
    other, _ = req("ab", 1.5)  # a conversation whose key starts like it is not one of its parts
    for r in (*parts, other):
        s.submit(r)
    assert admit(s) == [*parts, other]  # one request per key: a turn's parts are not queued behind each other
    assert s.cancel("a") == 2
    assert s.expired() == parts
