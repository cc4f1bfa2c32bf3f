"""SIGKILL of a real `bot serve` mid-answer, then a restart, through each messenger channel: every question
asked before the crash is answered after it exactly once, and the messenger's own repeats (Telegram's
unconfirmed updates, WeCom's callback retries of the same MsgId) do not answer anything twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.wecom_server import AES_KEY, AGENT_ID, CORP_ID, CORP_SECRET, TOKEN, CallbackClient, FakeWecomApi
from tests.test_serve import ANSWER_TIMEOUT_S, READY_TIMEOUT_S, SEND, Serve, free_port, port_open, shown_final, watched

pytestmark = pytest.mark.model

QUESTIONS = ["科大讯飞董事长是谁？", "周鸿祎认为ChatGPT是什么的拐点？", "江浩然建议构建什么样的准入机制？"]


def process(tmp_path: Path, name: str, data: Path, channel: str, env: dict[str, str], database: Path) -> Serve:
    (tmp_path / name).mkdir()
    return Serve(tmp_path / name, data, channel, env, database=database)


def all_delivered(serve: Serve, n: int) -> bool:
    rows = serve.turns(serve.channel)
    return len(rows) == n and all(r["delivery"] == "delivered" for r in rows)


async def test_sigkill_mid_answer_through_telegram(tmp_path: Path, serve_data: Path) -> None:
    fake = FakeTelegram()
    await fake.start()
    env = {"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_BASE_URL": fake.base_url}
    database = tmp_path / "bot.sqlite3"
    serve = process(tmp_path, "first", serve_data, "telegram", env, database)
    try:
        with watched(lambda: serve):
            serve.start()
            await serve.wait_until(lambda: fake.calls_of("getUpdates"), READY_TIMEOUT_S, "getUpdates (polling)")
            asked = {fake.private(9100 + i, q, language_code="zh"): 9100 + i for i, q in enumerate(QUESTIONS)}
            await serve.wait_until(lambda: len(serve.turns("telegram")) == len(asked), 60, "every question logged")
            await serve.wait_until(lambda: fake.calls_of("editMessageText"), ANSWER_TIMEOUT_S, "an answer streaming")
            serve.kill()  # SIGKILL: no drain, no flush, no goodbye
            unanswered = [r for r in serve.turns("telegram") if r["delivery"] != "delivered"]
            assert unanswered, "every answer was out before the kill: the test proves nothing"

            serve = process(tmp_path, "second", serve_data, "telegram", env, database)
            serve.start()
            await serve.wait_until(lambda: all_delivered(serve, len(asked)), ANSWER_TIMEOUT_S * 2,
                                   "every question answered after the restart")
            await asyncio.sleep(1.0)  # a duplicate would show up now
            assert await serve.terminate() == 0
            for row in serve.turns("telegram"):
                mid, user = int(row["message_id"]), int(row["user_id"])
                assert asked[mid] == user and row["status"] == "answered"
                finals = [m.text for m in fake.bot_messages(user) if m.text == shown_final(row)]
                assert len(finals) == 1, [m.text for m in fake.bot_messages(user)]
            assert serve.non_loopback() == []
            print(f"\ntelegram: SIGKILL with {len(unanswered)} of {len(asked)} answers not out; all answered once "
                  "after the restart")
    finally:
        await fake.stop()


async def _wecom_ready(serve: Serve, port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while not await port_open(port):
        serve.check_alive()
        assert loop.time() < deadline, f"the callback port {port} did not open"
        await asyncio.sleep(0.2)


async def test_sigkill_mid_answer_through_wecom(tmp_path: Path, serve_data: Path) -> None:
    api = FakeWecomApi()
    await api.start()
    port = free_port()
    env = {"WECOM_CORP_ID": CORP_ID, "WECOM_AGENT_ID": AGENT_ID, "WECOM_CORP_SECRET": CORP_SECRET,
           "WECOM_TOKEN": TOKEN, "WECOM_AES_KEY": AES_KEY, "WECOM_API_BASE_URL": api.base_url,
           "WECOM_LISTEN": f"127.0.0.1:{port}"}
    client = CallbackClient(f"http://127.0.0.1:{port}/wecom/callback")
    database = tmp_path / "bot.sqlite3"
    users = [f"user{i}" for i in range(len(QUESTIONS))]
    callbacks = [client.text_xml(u, q, client.next_msg_id()) for u, q in zip(users, QUESTIONS, strict=True)]

    def texts_to(who: str) -> list[str]:
        return api.texts_to(who)

    serve = process(tmp_path, "first", serve_data, "wecom", env, database)
    try:
        with watched(lambda: serve):
            serve.start()
            await _wecom_ready(serve, port)
            for inner in callbacks:
                assert (await client.post(inner))[0].status_code == 200
            await serve.wait_until(lambda: len(serve.turns("wecom")) == len(users), 60, "every question logged")
            serve.kill()
            unanswered = [r for r in serve.turns("wecom") if r["delivery"] != "delivered"]
            assert unanswered, "every answer was out before the kill: the test proves nothing"

            serve = process(tmp_path, "second", serve_data, "wecom", env, database)
            serve.start()
            await _wecom_ready(serve, port)
            for inner in callbacks:  # WeCom retries each callback it saw no reply to
                assert (await client.post(inner))[0].status_code == 200
            await serve.wait_until(lambda: all_delivered(serve, len(users)), ANSWER_TIMEOUT_S * 2,
                                   "every question answered after the restart")
            for inner in callbacks:  # and a late retry after the answers went out
                assert (await client.post(inner))[0].status_code == 200
            await asyncio.sleep(1.0)
            assert await serve.terminate() == 0
            for row in serve.turns("wecom"):
                assert row["status"] == "answered"
                assert texts_to(row["user_id"]) == [shown_final(row)], texts_to(row["user_id"])
            assert len(api.requests_to(SEND)) >= len(users)
            assert serve.non_loopback() == []
            print(f"\nwecom: SIGKILL with {len(unanswered)} of {len(users)} answers not out; all answered once after "
                  "the restart, the callback retries ignored")
    finally:
        await api.stop()
