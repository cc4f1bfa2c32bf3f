"""SIGTERM with a full queue, through a real `bot serve` and the loopback Telegram server: the process exits
within seconds, answers in progress are finished or left pending, and the restart answers every question
left, once. Nothing is lost and nothing is answered twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.text import phrases
from tests.fakes.telegram_server import FakeTelegram
from tests.test_serve import ANSWER_TIMEOUT_S, READY_TIMEOUT_S, Serve, shown_final, watched

pytestmark = pytest.mark.model

USERS = 12  # three times model.parallel: most are queued when the signal comes
QUESTIONS = ["科大讯飞董事长是谁？", "周鸿祎认为ChatGPT是什么的拐点？", "江浩然建议构建什么样的准入机制？"]
EXIT_LIMIT_S = 20.0  # model.shutdown grace (5 s) plus stopping the channel and freeing the model


def process(tmp_path: Path, name: str, data: Path, env: dict[str, str], database: Path) -> Serve:
    (tmp_path / name).mkdir()
    return Serve(tmp_path / name, data, "telegram", env, database=database)


async def test_sigterm_with_a_full_queue_exits_fast_and_the_restart_answers_the_rest(
        tmp_path: Path, serve_data: Path) -> None:
    fake = FakeTelegram()
    await fake.start()
    env = {"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_BASE_URL": fake.base_url}
    database = tmp_path / "bot.sqlite3"
    serve = process(tmp_path, "first", serve_data, env, database)
    try:
        with watched(lambda: serve):
            serve.start()
            await serve.wait_until(lambda: fake.calls_of("getUpdates"), READY_TIMEOUT_S, "getUpdates (polling)")
            asked = {fake.private(9000 + i, QUESTIONS[i % len(QUESTIONS)], language_code="zh"): 9000 + i
                     for i in range(USERS)}
            await serve.wait_until(lambda: len(serve.turns("telegram")) == USERS, 60, "every question logged")
            await serve.wait_until(lambda: fake.calls_of("editMessageText"), ANSWER_TIMEOUT_S, "the first answer")

            signalled = time.monotonic()
            assert await serve.terminate() == 0
            exit_s = time.monotonic() - signalled
            rows = serve.turns("telegram")
            assert len(rows) == USERS  # every question is in the log
            states = {(r["status"], r["delivery"]) for r in rows}
            assert states <= {("answered", "delivered"), ("pending", None)}, states
            left = [r for r in rows if r["status"] == "pending"]
            assert left, "the queue was empty when the signal came: the test proves nothing"
            assert exit_s < EXIT_LIMIT_S, f"bot serve took {exit_s:.1f} s to exit with {len(left)} questions queued"
            waiting = phrases.message("restarting", "zh")
            told = [m for m in fake.messages.values() if m.from_bot and m.text == waiting]
            assert len(told) == len(left)  # each one's placeholder says the answer follows the restart

            serve = process(tmp_path, "second", serve_data, env, database)
            serve.start()

            def all_delivered() -> bool:
                return all(r["delivery"] == "delivered" for r in serve.turns("telegram"))

            await serve.wait_until(all_delivered, ANSWER_TIMEOUT_S * 2, "every pending question answered after restart")
            assert await serve.terminate() == 0
            rows = serve.turns("telegram")
            assert len(rows) == USERS and {r["status"] for r in rows} == {"answered"}
            for row in rows:  # each question's answer is in its chat exactly once
                mid, user = int(row["message_id"]), int(row["user_id"])
                assert asked[mid] == user
                finals = [m.text for m in fake.bot_messages(user) if m.reply_to == mid and m.text == shown_final(row)]
                assert len(finals) == 1, [m.text for m in fake.bot_messages(user)]
            assert serve.non_loopback() == []
            print(f"\nSIGTERM with {len(left)} of {USERS} questions unanswered: exit in {exit_s:.1f} s; "
                  f"all answered once after the restart")
    finally:
        await fake.stop()
