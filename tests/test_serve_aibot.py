"""`bot serve --channel wecom_bot` end to end: the real process and the small model, against the loopback
fakes of WeCom's AI bot gateway (long connection) and of WeCom's side of the callbacks.

These prove the issue's "Done when": a private question streams growing frames and finishes with a cited
answer; a group message without a mention is ignored; a message delivered again after a forced reconnect
is answered once; a connection killed mid-answer loses nothing (the answer arrives as a new message, the
log says so); the callback transport answers the same question and refuses a forged signature.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.wecom_bot_callback import AES_KEY, TOKEN, FakeCallbacks
from tests.fakes.wecom_bot_gateway import BOT_ID, BOT_SECRET, FakeGateway
from tests.test_serve import ANSWER_TIMEOUT_S, QUESTION, READY_TIMEOUT_S, Serve, free_port, watched

pytestmark = pytest.mark.model

NAME = "知识助手"
SETTINGS = {"wecom_bot": {"names": [NAME], "stream_interval_s": 0.3, "reconnect_max_s": 2.0}}
SECOND = "讯飞星火认知大模型是哪家公司发布的？"


def growing(frames: list[dict[str, Any]]) -> bool:
    """Some frame's content is a strict prefix of a later one's: the answer grew in place."""
    texts = [f["content"] for f in frames]
    return any(b.startswith(a) and len(b) > len(a) for i, a in enumerate(texts) for b in texts[i + 1:])


async def test_serve_aibot_long_connection_streams_dedupes_and_survives_a_dropped_connection(
        tmp_path: Path, serve_data: Path) -> None:
    gw = FakeGateway()
    await gw.start()
    serve = Serve(tmp_path, serve_data, "wecom_bot", {"WECOM_BOT_ID": BOT_ID, "WECOM_BOT_SECRET": BOT_SECRET,
                                                       "WECOM_BOT_GATEWAY_URL": gw.url}, settings=SETTINGS)
    try:
        report = lambda: f"---- gateway frames: {[(f.conn, f.cmd, f.errcode) for f in gw.frames]}"  # noqa: E731
        with watched(lambda: serve, report):
            serve.start()
            await serve.wait_until(lambda: gw.subscriptions >= 1, READY_TIMEOUT_S, "the subscription")
            ignored = gw.message("lisi", QUESTION, chat_id="grp1")  # a group message without a mention
            asked = time.monotonic()
            req = gw.message("zhangsan", QUESTION)
            await serve.wait_until(lambda: any(s["finish"] for s in gw.streams(req)), ANSWER_TIMEOUT_S,
                                   "the finished stream")
            answer_s = time.monotonic() - asked
            first_s = min(f.at for f in gw.replies(req)) - asked
            frames = gw.streams(req)
            final = frames[-1]["content"]
            assert len(frames) >= 2 and growing(frames), frames
            answer, _, sources = final.partition("\n\n[1] ")
            assert "刘庆峰" in answer and "[1]" in answer and sources, final

            # The same message again after a forced reconnect: answered once.
            await gw.drop()
            await serve.wait_until(lambda: gw.subscriptions >= 2, 30, "the resubscription")
            again = gw.redeliver(gw.msgid_of(req))

            # A connection killed mid-answer: the answer arrives once, as a new message.
            second = gw.message("wangwu", SECOND)
            gw.drop_on[second] = 2  # the connection dies under the frame after "thinking", whatever comes next
            await serve.wait_until(lambda: gw.pushes("wangwu"), ANSWER_TIMEOUT_S, "the answer as a new message")
            await serve.wait_until(lambda: gw.subscriptions >= 3, 30, "the second resubscription")
            await asyncio.sleep(1.0)
            assert gw.replies(ignored) == [] and gw.replies(again) == [] and gw.pushes("grp1") == []
            (pushed,) = gw.pushes("wangwu")
            assert not any(s["finish"] for s in gw.streams(second))

            assert await serve.terminate() == 0
            assert serve.non_loopback() == []
            rows = serve.turns("wecom_bot")
            assert [(r["user_id"], r["delivery"], r["delivered_via"]) for r in rows] == [
                ("zhangsan", "delivered", "stream"), ("wangwu", "delivered", "message")], rows
            assert rows[1]["answer"].rstrip() in pushed["markdown"]["content"]
            assert json.loads(rows[0]["citations"]) and not gw.errors, gw.errors
            print(f"\naibot: first frame after {first_s * 1000:.0f} ms, answered in {answer_s:.1f} s over "
                  f"{len(frames)} frames: {final!r}; "
                  f"after the drop: {pushed['markdown']['content']!r}")
    finally:
        await gw.stop()


async def test_serve_aibot_callbacks_answer_a_question_and_refuse_a_forged_signature(
        tmp_path: Path, serve_data: Path) -> None:
    port = free_port()
    serve = Serve(tmp_path, serve_data, "wecom_bot", {"WECOM_BOT_TOKEN": TOKEN, "WECOM_BOT_AES_KEY": AES_KEY,
                                                       "WECOM_BOT_LISTEN": f"127.0.0.1:{port}"}, settings=SETTINGS)
    wecom = FakeCallbacks(f"http://127.0.0.1:{port}/wecom/aibot", poll_interval_s=0.5)
    await wecom.start()
    try:
        with watched(lambda: serve, lambda: f"---- violations: {wecom.violations}"):
            serve.start()
            await serve.wait_port(port)
            forged, nothing = await wecom.message("zhangsan", QUESTION, forge=True)
            assert forged.status_code == 403 and nothing is None
            resp, reply = await wecom.message("zhangsan", QUESTION)
            assert resp.status_code == 200 and reply is not None
            stream_id = reply["stream"]["id"]
            await serve.wait_until(lambda: wecom.finished(stream_id), ANSWER_TIMEOUT_S, "the finished stream")
            final = wecom.finished(stream_id)["content"]  # type: ignore[index]
            answer, _, sources = final.partition("\n\n[1] ")
            assert "刘庆峰" in answer and "[1]" in answer and sources, final
            assert wecom.violations == [] and len(wecom.snapshots(stream_id)) >= 2
            assert await serve.terminate() == 0
            assert serve.non_loopback() == []
            (row,) = serve.turns("wecom_bot")
            assert (row["question"], row["delivery"], row["delivered_via"]) == (QUESTION, "delivered", "stream")
    finally:
        await wecom.stop()
