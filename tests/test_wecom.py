"""WeCom channel end to end over real loopback sockets: callback client -> bot -> fake WeCom API."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.channels import wecom
from bot.channels.wecom import WecomChannel, split_message
from bot.config import WecomConfig
from bot.core.gate import Gate, Policy
from bot.types import Incoming
from tests.fakes.backend import FakeBackend
from tests.fakes.wecom_server import (
    AES_KEY,
    AGENT_ID,
    CORP_ID,
    CORP_SECRET,
    TOKEN,
    CallbackClient,
    FakeWecomApi,
)
from tests.helpers import make_core

ANSWER = "科大讯飞董事长是刘庆峰。"
QUESTION = "科大讯飞董事长是谁？"
SEND = "/cgi-bin/message/send"
GETTOKEN = "/cgi-bin/gettoken"
FAST_RETRIES = (0.05, 0.05, 0.05)


@dataclass
class Bot:
    channel: WecomChannel
    api: FakeWecomApi
    client: CallbackClient
    backend: FakeBackend
    store: Any
    core: Any
    cfg: WecomConfig

    def restart(self) -> WecomChannel:
        """A new channel instance over the same core and store (a process restart)."""
        return WecomChannel(self.cfg, self.core, retry_delays=FAST_RETRIES)

    async def send_count_after_sentinel(self, user: str = "sentinel") -> int:
        """Post a /help from another user and wait for it, so earlier callbacks had every chance to answer."""
        before = len(self.api.sent)
        resp, _, _ = await self.client.post(self.client.text_xml(user, "/help"))
        assert resp.status_code == 200
        await self.api.wait_sent(before + 1)
        await asyncio.sleep(0.05)
        return len([m for m in self.api.sent if m["touser"] != user])


MakeBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def api() -> AsyncIterator[FakeWecomApi]:
    server = FakeWecomApi()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_bot(tmp_path: Path, api: FakeWecomApi) -> AsyncIterator[MakeBot]:
    started: list[Bot] = []

    async def factory(answer: str = ANSWER, *, delay: float = 0.0, max_chars: int = 800,
                      **overrides: Any) -> Bot:
        backend = FakeBackend(answer, delay=delay)
        core, store = await make_core(tmp_path, backend)
        settings: dict[str, Any] = dict(
            listen="127.0.0.1:0", api_base_url=api.base_url, admins=["boss"], corp_id=CORP_ID,
            agent_id=AGENT_ID, corp_secret=CORP_SECRET, token=TOKEN, aes_key=AES_KEY,
            rate_limit_per_minute=30)
        settings.update(overrides)
        cfg = WecomConfig(**settings)
        core.gate = Gate(max_chars, {"wecom": Policy.of(cfg)})  # as the composition root builds it
        channel = WecomChannel(cfg, core, retry_delays=FAST_RETRIES)
        await channel.start()
        url = f"http://127.0.0.1:{channel.port}{cfg.path}"
        bot = Bot(channel, api, CallbackClient(url), backend, store, core, cfg)
        started.append(bot)
        return bot

    yield factory
    for bot in started:
        await bot.channel.stop()
        await bot.store.close()


async def logged_turns(store: Any) -> list[dict[str, Any]]:
    """Every turn in the log, oldest first (read from the store's SQLite table)."""
    return await store.db.fetchall("SELECT channel, chat_id, user_id, message_id, question, status, answer "
                                   "FROM turns ORDER BY id")


def texts_to(api: FakeWecomApi, user: str) -> list[str]:
    return api.texts_to(user)


# ---- URL verification ----


async def test_url_verification_answers_plaintext_exactly(make_bot: MakeBot) -> None:
    bot = await make_bot()
    resp = await bot.client.verify_url("8452983284526733181")
    assert resp.status_code == 200
    assert resp.text == "8452983284526733181"
    bad = await bot.client.verify_url("8452983284526733181", bad_signature=True)
    assert bad.status_code == 403
    assert "8452983284526733181" not in bad.text


# ---- the happy path ----


async def test_question_gets_200_at_once_then_message_send_with_citation(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.03)  # the answer takes a few hundred ms to generate
    msg_id = bot.client.next_msg_id()
    t0 = time.monotonic()
    resp, _, _ = await bot.client.post(bot.client.text_xml("zhangsan", QUESTION, msg_id))
    elapsed = time.monotonic() - t0
    assert resp.status_code == 200 and resp.text in ("", "success")
    assert elapsed < 1.0
    assert bot.api.requests_to(SEND) == []  # acknowledged before the answer exists

    sent = await bot.api.wait_sent(1)
    assert len(sent) == 1
    payload = sent[0]
    assert payload["touser"] == "zhangsan"
    assert payload["agentid"] == int(AGENT_ID)
    assert payload["msgtype"] == "text"
    content = payload["text"]["content"]
    assert "刘庆峰" in content
    assert re.search(r"\[\d+\]", content), content
    assert bot.api.requests_to(SEND)[0].at - t0 > elapsed  # the send came after the HTTP answer

    rows = await logged_turns(bot.store)
    assert len(rows) == 1
    assert rows[0]["channel"] == "wecom" and rows[0]["user_id"] == "zhangsan"
    assert rows[0]["question"] == QUESTION
    assert rows[0]["message_id"] == msg_id
    assert "刘庆峰" in (rows[0]["answer"] or "")


async def test_markdown_reply_format(make_bot: MakeBot) -> None:
    bot = await make_bot(reply_format="markdown")
    await bot.client.post(bot.client.text_xml("zhangsan", QUESTION))
    payload = (await bot.api.wait_sent(1))[0]
    assert payload["msgtype"] == "markdown" and "刘庆峰" in payload["markdown"]["content"]


# ---- duplicates and restarts ----


async def test_same_msgid_answered_once_also_after_restart(make_bot: MakeBot) -> None:
    bot = await make_bot()
    inner = bot.client.text_xml("lisi", QUESTION, "1234567890123456789")
    first, _, _ = await bot.client.post(inner)
    assert first.status_code == 200
    await bot.api.wait_sent(1)
    retry, _, _ = await bot.client.post(inner)  # WeCom's retry: new envelope, same MsgId
    assert retry.status_code == 200

    await bot.channel.stop()
    bot.channel = bot.restart()
    await bot.channel.start()
    bot.client.url = f"http://127.0.0.1:{bot.channel.port}{bot.cfg.path}"
    again, _, _ = await bot.client.post(inner)
    assert again.status_code == 200

    assert await bot.send_count_after_sentinel() == 1
    assert len(bot.backend.calls) == 1
    assert len(await logged_turns(bot.store)) == 1


async def delivery_of(bot: Bot, want: str) -> tuple[str, str]:
    """(status, delivery) of the one logged turn once its delivery is `want` (waiting: with an error)."""
    row = None
    for _ in range(250):
        row = await bot.store.db.fetchone("SELECT status, delivery, delivery_error FROM turns")
        if row and row["delivery"] == want and (want != "waiting" or row["delivery_error"]):
            return row["status"], row["delivery"]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the turn's delivery never became {want}: {row and dict(row)}")


async def test_wecoms_repeat_of_an_undelivered_msgid_is_answered_from_the_log(make_bot: MakeBot) -> None:
    bot = await make_bot()
    bot.api.fail_next_sends(-1, times=len(FAST_RETRIES) + 1)  # WeCom busy past every retry
    inner = bot.client.text_xml("lisi", QUESTION, "2234567890123456789")
    await bot.client.post(inner)
    assert await delivery_of(bot, "waiting") == ("answered", "waiting")
    assert bot.api.sent == []
    retry, _, _ = await bot.client.post(inner)  # WeCom's repeat of the callback: new envelope, same MsgId
    assert retry.status_code == 200
    sent = await bot.api.wait_sent(1)
    assert "刘庆峰" in sent[0]["text"]["content"]
    assert len(bot.backend.calls) == 1  # sent from the log, not generated again
    assert await delivery_of(bot, "delivered") == ("answered", "delivered")
    await bot.client.post(inner)  # delivered now: a plain duplicate
    assert await bot.send_count_after_sentinel() == 1  # still the one answer


async def test_a_user_outside_the_apps_range_ends_the_delivery(make_bot: MakeBot) -> None:
    bot = await make_bot()
    bot.api.fail_next_sends(81013)  # user not in the app's visible range: sending again will not help
    inner = bot.client.text_xml("wangwu", QUESTION, "3234567890123456789")
    await bot.client.post(inner)
    assert await delivery_of(bot, "failed") == ("answered", "failed")
    await bot.client.post(inner)
    assert await bot.send_count_after_sentinel() == 0
    assert await bot.core.pending(["wecom"]) == []


# ---- hostile or broken callbacks: never a reply ----


async def assert_nothing_sent(bot: Bot) -> None:
    assert await bot.send_count_after_sentinel() == 0
    assert bot.backend.calls == []


async def test_malformed_xml_is_400(make_bot: MakeBot) -> None:
    bot = await make_bot()
    query, _ = bot.client.envelope(bot.client.text_xml("u1", QUESTION))
    resp = await bot.client.post_raw(query, "<xml><Encrypt>abc</Encrypt")
    assert resp.status_code == 400
    # Correctly encrypted and signed, but the inner XML is broken.
    resp, _, _ = await bot.client.post("<xml><FromUserName>u1</FromUserName><MsgType>text")
    assert resp.status_code == 400
    await assert_nothing_sent(bot)


BOMB = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        '<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">]>')


async def test_entity_expansion_bomb_is_400(make_bot: MakeBot) -> None:
    bot = await make_bot()
    query, body = bot.client.envelope(bot.client.text_xml("u1", QUESTION))
    resp = await bot.client.post_raw(query, BOMB + body.replace("<ToUserName>", "<ToUserName>&e;", 1))
    assert resp.status_code == 400
    inner = BOMB + bot.client.text_xml("u1", "&e;")  # inside the (valid, signed) ciphertext
    resp, _, _ = await bot.client.post(inner)
    assert resp.status_code == 400
    await assert_nothing_sent(bot)


async def test_wrong_signature_is_403_and_logged(make_bot: MakeBot, caplog: pytest.LogCaptureFixture) -> None:
    bot = await make_bot()
    query, body = bot.client.envelope(bot.client.text_xml("u1", QUESTION))
    query["msg_signature"] = "f" * 40
    with caplog.at_level(logging.WARNING, logger="bot.channels.wecom"):
        resp = await bot.client.post_raw(query, body)
    assert resp.status_code == 403
    assert "bad msg_signature" in caplog.text
    wrong_token = CallbackClient(bot.client.url, token="someone-elses-token")
    resp, _, _ = await wrong_token.post(wrong_token.text_xml("u1", QUESTION))
    assert resp.status_code == 403
    await assert_nothing_sent(bot)


async def test_wrong_aes_key_and_wrong_corp_id_rejected(make_bot: MakeBot) -> None:
    bot = await make_bot()
    other_key = CallbackClient(bot.client.url, aes_key="ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj")
    resp, _, _ = await other_key.post(other_key.text_xml("u1", QUESTION))
    assert resp.status_code in (400, 403)
    other_corp = CallbackClient(bot.client.url, corp_id="wwSomeOtherCorp00")
    resp, _, _ = await other_corp.post(other_corp.text_xml("u1", QUESTION))
    assert resp.status_code == 403
    await assert_nothing_sent(bot)


async def test_replay_and_stale_timestamps_rejected(make_bot: MakeBot) -> None:
    bot = await make_bot()
    resp, query, body = await bot.client.post(bot.client.text_xml("u1", QUESTION))
    assert resp.status_code == 200
    await bot.api.wait_sent(1)
    replay = await bot.client.post_raw(query, body)
    assert replay.status_code == 403
    # Correctly signed but outside the 300 s window, in the past and in the future (a margin of
    # seconds, so the second ticking over between signing and checking cannot bring it inside):
    for skew in (-305, +305):
        ts = str(int(time.time()) + skew)
        resp, _, _ = await bot.client.post(bot.client.text_xml("u2", QUESTION), timestamp=ts)
        assert resp.status_code == 403
    assert await bot.send_count_after_sentinel() == 1
    assert len(bot.backend.calls) == 1


async def test_event_is_acknowledged_and_ignored(make_bot: MakeBot) -> None:
    bot = await make_bot()
    resp, _, _ = await bot.client.post(bot.client.event_xml("u1"))
    assert resp.status_code == 200
    await assert_nothing_sent(bot)


async def test_non_text_message_gets_text_only_reply(make_bot: MakeBot) -> None:
    bot = await make_bot()
    resp, _, _ = await bot.client.post(bot.client.text_xml("u1", "", msg_type="image"))
    assert resp.status_code == 200
    await bot.api.wait_sent(1)
    assert texts_to(bot.api, "u1") == ["目前只能回答文字消息。"]
    assert bot.backend.calls == []


# ---- access token and API errors ----


async def test_token_cached_then_refreshed_on_42001(make_bot: MakeBot) -> None:
    bot = await make_bot()
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(1)
    await bot.client.post(bot.client.text_xml("u1", "/help"))
    await bot.api.wait_sent(2)
    assert len(bot.api.requests_to(GETTOKEN)) == 1  # cached

    bot.api.expire_tokens()
    await bot.client.post(bot.client.text_xml("u1", "/help"))
    await bot.api.wait_sent(3)
    assert len(bot.api.requests_to(GETTOKEN)) == 2
    sends = bot.api.requests_to(SEND)
    assert len(sends) == 4  # 2 ok, 1 rejected with 42001, its retry ok
    assert sends[2].query["access_token"] != sends[3].query["access_token"]
    gettoken = bot.api.requests_to(GETTOKEN)[0].query
    assert gettoken == {"corpid": CORP_ID, "corpsecret": CORP_SECRET}


async def test_token_refetched_shortly_before_expiry(make_bot: MakeBot) -> None:
    bot = await make_bot()
    await bot.channel.api.send("u1", "one")
    now = time.monotonic()
    bot.channel.api.clock = lambda: now + 7200 - 200  # inside the refresh margin before expires_in
    await bot.channel.api.send("u1", "two")
    assert len(bot.api.requests_to(GETTOKEN)) == 2
    first, second = bot.api.requests_to(SEND)
    assert first.query["access_token"] != second.query["access_token"]


async def test_wrong_corp_secret_fails_once_and_is_logged(make_bot: MakeBot) -> None:
    bot = await make_bot(corp_secret="not-the-secret")
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    for _ in range(100):
        if await bot.store.db.fetchall("SELECT kind FROM events WHERE kind='undelivered'"):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("no undelivered event was logged")
    assert len(bot.api.requests_to(GETTOKEN)) == 1  # 40001 from gettoken: no refresh loop
    assert bot.api.requests_to(SEND) == [] and bot.api.sent == []


async def test_45009_backs_off_and_retries(make_bot: MakeBot) -> None:
    bot = await make_bot()
    bot.api.fail_next_sends(45009, times=2)
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(1)
    sends = bot.api.requests_to(SEND)
    assert len(sends) == 3
    assert sends[1].at - sends[0].at >= FAST_RETRIES[0] * 0.9
    assert sends[2].at - sends[1].at >= FAST_RETRIES[1] * 0.9
    assert "刘庆峰" in texts_to(bot.api, "u1")[0]


async def test_a_token_expiring_between_the_parts_of_a_long_answer_is_refreshed(
        make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wecom, "split_message", lambda text: split_message(text, 40))  # many small parts
    bot = await make_bot()
    bot.api.expire_tokens_after(1)  # the first part goes out; the second meets an expired token
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    assert await delivery_of(bot, "delivered") == ("answered", "delivered")
    parts = texts_to(bot.api, "u1")
    assert len(parts) >= 3 and len(bot.api.requests_to(GETTOKEN)) == 2
    assert len(bot.api.requests_to(SEND)) == len(parts) + 1  # one rejected with 42001, then re-sent
    answer = (await bot.store.db.fetchone("SELECT answer FROM turns"))["answer"]
    squeezed = re.sub(r"\s", "", "".join(parts))
    assert squeezed.startswith(re.sub(r"\s", "", answer)) and "[1]" in squeezed  # every part once, in order


async def test_a_stalled_api_times_out_and_the_retry_delivers_once(make_bot: MakeBot) -> None:
    bot = await make_bot(api_timeout_s=0.3)
    bot.api.stall_next_sends(1.0, times=2)  # no reply within wecom.api_timeout_s, twice
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(1, timeout=10)
    assert len(bot.api.requests_to(SEND)) == 3 and len(texts_to(bot.api, "u1")) == 1
    assert await delivery_of(bot, "delivered") == ("answered", "delivered")


async def test_network_error_backs_off_and_retries(make_bot: MakeBot, api: FakeWecomApi) -> None:
    bot = await make_bot()
    port = api.port
    await api.stop()
    task = asyncio.create_task(bot.channel.api.send("u1", "hello"))
    await asyncio.sleep(0.02)
    restarted = FakeWecomApi()
    await restarted.start(port)
    try:
        await asyncio.wait_for(task, 2.0)
        assert [m["text"]["content"] for m in restarted.sent] == ["hello"]
    finally:
        await restarted.stop()


# ---- splitting ----


def test_split_message_respects_bytes_sentences_and_characters() -> None:
    sentence = "刘庆峰建议，国家重视认知智能大模型研发。"
    text = sentence * 200
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p.encode("utf-8")) <= 2048 for p in parts)
    assert all(p.endswith("。") for p in parts)
    assert "".join(parts) == text
    no_stops = "智" * 1500  # 4500 bytes, no boundary at all: cut between characters
    parts = split_message(no_stops)
    assert "".join(parts) == no_stops and all(len(p.encode()) <= 2048 for p in parts)
    assert split_message("short") == ["short"]
    marked = ("甲" * 600 + "。”[1]") * 3  # a closing quote and a citation marker stay with their sentence
    assert all(p.endswith("。”[1]") for p in split_message(marked))


async def test_long_reply_is_split_under_2048_bytes(make_bot: MakeBot) -> None:
    article = (Path(__file__).resolve().parent.parent / "content" / "article.txt").read_text(encoding="utf-8")
    quoted = [ln.strip() for ln in article.splitlines() if "刘庆峰" in ln and len(ln) > 60]
    long_answer = "".join(quoted)  # real statements from the article, > 2048 bytes
    assert len(long_answer.encode()) > 2048
    bot = await make_bot(long_answer)
    # A summary: an open question, answered by a free draft (a fact question gets one short copied span).
    await bot.client.post(bot.client.text_xml("u1", "概括一下刘庆峰提出的建议"))
    await bot.api.wait_sent(2)
    await asyncio.sleep(0.1)
    parts = texts_to(bot.api, "u1")
    assert len(parts) >= 2
    assert all(len(p.encode("utf-8")) <= 2048 for p in parts)  # the fake also rejects longer ones (45002)
    assert all(re.search(r"[。！？!?；;][”\"]?(\[\d+\])*$", p) for p in parts[:-1])  # cut at sentence ends
    (turn,) = await logged_turns(bot.store)
    sent = re.sub(r"\s", "", "".join(parts))
    assert sent.startswith(re.sub(r"\s", "", turn["answer"]))  # nothing lost or reordered
    assert re.search(r"\[1\] \S+", parts[-1])  # the citation lines come last


# ---- commands ----


async def test_admin_reload_and_stats(make_bot: MakeBot) -> None:
    bot = await make_bot()
    await bot.client.post(bot.client.text_xml("boss", "/reload"))
    await bot.api.wait_sent(1)
    await bot.client.post(bot.client.text_xml("boss", "/stats"))
    await bot.api.wait_sent(3)  # the chart as an image, then its numbers
    reload_text, stats_text = texts_to(bot.api, "boss")
    assert reload_text == f"内容没有变化（版本 {bot.core.content.version}，27 个段落）。"
    assert stats_text.startswith("最近 24 小时：0 位用户共 0 轮，拒答 0，出错 0。")


async def test_non_admin_reload_denied_and_logged(make_bot: MakeBot) -> None:
    bot = await make_bot()
    for cmd in ("/reload", "/stats"):
        await bot.client.post(bot.client.text_xml("mallory", cmd))
    await bot.api.wait_sent(2)
    assert texts_to(bot.api, "mallory") == ["抱歉，这个命令只对管理员开放。"] * 2
    rows = [tuple(r.values()) for r in await bot.store.db.fetchall(
        "SELECT kind, detail FROM events WHERE user_id='mallory' AND channel='wecom' ORDER BY id")]
    assert rows == [("admin_denied", "/reload"), ("admin_denied", "/stats")]


async def test_help_reset_sources(make_bot: MakeBot) -> None:
    bot = await make_bot()
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(1)
    for i, cmd in enumerate(("/sources", "/help", "/reset", "/nonsense"), start=2):
        await bot.client.post(bot.client.text_xml("u1", cmd))
        await bot.api.wait_sent(i)
    _, sources, help_text, reset, unknown = texts_to(bot.api, "u1")
    assert sources.startswith("[1] ")
    assert "/sources" in help_text and "/reload" not in help_text
    assert reset == "好的，已清空对话记录。"
    assert "/nonsense" in unknown
    await bot.client.post(bot.client.text_xml("boss", "/help"))
    await bot.api.wait_sent(6)
    assert "/reload" in texts_to(bot.api, "boss")[0]


# ---- limits ----


async def test_too_long_and_rate_limited(make_bot: MakeBot) -> None:
    bot = await make_bot(max_chars=20, rate_limit_per_minute=1)
    await bot.client.post(bot.client.text_xml("u1", "科大讯飞" * 10))
    await bot.api.wait_sent(1)
    assert "最多 20 个字符" in texts_to(bot.api, "u1")[0]
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(2)
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(3)
    first, second = texts_to(bot.api, "u1")[1:]
    assert "刘庆峰" in first
    assert "提问太频繁" in second
    assert len(bot.backend.calls) == 1


async def test_allow_list_admits_listed_users_and_admins_only(make_bot: MakeBot) -> None:
    bot = await make_bot(allow_users=["zhangsan"])
    for user in ("stranger", "zhangsan", "boss"):  # boss is an admin
        await bot.client.post(bot.client.text_xml(user, QUESTION))
    await bot.api.wait_sent(3)
    assert texts_to(bot.api, "stranger") == ["抱歉，此机器人未向你开放。"]
    assert "刘庆峰" in texts_to(bot.api, "zhangsan")[0] and "刘庆峰" in texts_to(bot.api, "boss")[0]
    events = await bot.store.db.fetchall("SELECT user_id, kind FROM events")
    assert [tuple(r.values()) for r in events] == [("stranger", "not_allowed")]
    assert len(bot.backend.calls) == 2


# ---- restart recovery, shutdown, secrets ----


async def test_resume_answers_pending_turn(make_bot: MakeBot) -> None:
    bot = await make_bot()
    await bot.store.start_turn(Incoming("wecom", "u9", "u9", QUESTION, "555"))
    (turn,) = await bot.core.pending(["wecom"])
    await bot.channel.resume(turn)
    assert "刘庆峰" in texts_to(bot.api, "u9")[0]
    rows = await logged_turns(bot.store)
    assert len(rows) == 1 and rows[0]["status"] == "answered" and rows[0]["message_id"] == "555"


async def test_stop_waits_for_inflight_reply(make_bot: MakeBot) -> None:
    bot = await make_bot(delay=0.02)
    resp, _, _ = await bot.client.post(bot.client.text_xml("u1", QUESTION))
    assert resp.status_code == 200 and bot.api.sent == []
    await bot.channel.stop()
    assert "刘庆峰" in texts_to(bot.api, "u1")[0]
    with pytest.raises(httpx.ConnectError):
        await bot.client.post(bot.client.text_xml("u1", QUESTION))


async def test_secrets_never_logged(make_bot: MakeBot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bot = await make_bot()
    bot.api.expire_tokens()
    await bot.client.post(bot.client.text_xml("u1", QUESTION))
    await bot.api.wait_sent(1)
    bot.api.expire_tokens()
    await bot.client.post(bot.client.text_xml("u1", "/help"))
    await bot.api.wait_sent(2)
    tokens = {r.query["access_token"] for r in bot.api.requests_to(SEND)}
    assert tokens and "HTTP Request" in caplog.text  # httpx did log its requests
    for secret in (CORP_SECRET, TOKEN, AES_KEY, *tokens):
        assert secret not in caplog.text
    assert CORP_SECRET not in repr(bot.cfg) and AES_KEY not in repr(bot.cfg)


def test_only_recipient_refusals_end_a_delivery() -> None:
    from bot.channels.wecom_api import WecomApiError

    assert WecomApiError(81013, "not in range").permanent and WecomApiError(60111, "no such user").permanent
    for code in (60020, 40013, 301002, 45009, 42001, -1, None):  # setup, limits, tokens, outages: re-sendable
        assert not WecomApiError(code, "").permanent


async def test_the_gaps_digest_goes_to_every_admin_and_an_unreachable_one_does_not_stop_it(make_bot: MakeBot) -> None:
    bot = await make_bot(admins=["boss", "gone", "deputy"])
    bot.api.out_of_range.add("gone")
    # Only the admins who opted in (and an admin id only: a reader who asked for it gets nothing).
    assert await bot.channel.notify_admins("本期内容缺口摘要（2026-W50）", {"boss", "gone", "deputy", "u1"}) == 2
    assert texts_to(bot.api, "boss") == texts_to(bot.api, "deputy") == ["本期内容缺口摘要（2026-W50）"]
    assert texts_to(bot.api, "gone") == texts_to(bot.api, "u1") == []
