"""Quick checks of the WeCom AI bot fakes themselves (no product code): crypto vectors, gateway rules, polling."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.fakes.wecom_bot_callback import AES_KEY, TOKEN, AibotCrypto, FakeCallbacks
from tests.fakes.wecom_bot_gateway import BOT_ID, BOT_SECRET, FakeGateway

Clients = list[WebSocketClientConnection]
VECTORS = Path("/work/shared/protocols/wecom_vectors.json")


@asynccontextmanager
async def running(gw: FakeGateway) -> AsyncIterator[FakeGateway]:
    """A started gateway, stopped afterwards."""
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    """Raw client connections a test opens; all closed at the end (tornado warns about unclosed ones)."""
    opened: Clients = []
    yield opened
    for ws in opened:
        ws.close()


async def connect(gw: FakeGateway, clients: Clients) -> WebSocketClientConnection:
    """A raw client connection to the gateway."""
    ws = await websocket_connect(gw.url)
    clients.append(ws)
    return ws


async def read(ws: WebSocketClientConnection) -> dict[str, Any] | None:
    """The next frame from the gateway (None once the connection is closed)."""
    raw = await asyncio.wait_for(ws.read_message(), 5.0)
    return None if raw is None else json.loads(raw)


async def call(ws: WebSocketClientConnection, cmd: str, body: dict[str, Any] | None = None,
               req_id: str = "") -> dict[str, Any]:
    """Send one frame and return the gateway's answer."""
    frame: dict[str, Any] = {"cmd": cmd, "headers": {"req_id": req_id or f"{cmd}_{uuid.uuid4().hex[:8]}"}}
    if body is not None:
        frame["body"] = body
    await ws.write_message(json.dumps(frame))
    answer = await read(ws)
    assert answer is not None
    return answer


async def subscribed(gw: FakeGateway, clients: Clients) -> WebSocketClientConnection:
    """A raw client connection that has subscribed successfully."""
    ws = await connect(gw, clients)
    assert (await call(ws, "aibot_subscribe", {"bot_id": BOT_ID, "secret": BOT_SECRET}))["errcode"] == 0
    return ws


def stream(content: str, finish: bool = False) -> dict[str, Any]:
    """An aibot_respond_msg stream body."""
    return {"msgtype": "stream", "stream": {"id": "s1", "finish": finish, "content": content}}


def test_aibot_callback_crypto_matches_published_vectors() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["wechatpy_tests"]
    v = vectors["encrypt_msg_with_fixed_random"]
    crypto = AibotCrypto(vectors["token"], vectors["encoding_aes_key"], receive_id=vectors["corp_id"])
    encrypt = crypto.encrypt(v["plaintext"], random_prefix=v["random_prefix"].encode())
    assert encrypt == v["expected_encrypt"]
    assert crypto.sign(v["timestamp"], v["nonce"], encrypt) == v["expected_msg_signature"]
    assert crypto.decrypt(encrypt) == (v["plaintext"], vectors["corp_id"])
    d = vectors["decrypt_msg"]
    assert crypto.sign(d["timestamp"], d["nonce"], d["encrypt"]) == d["msg_signature"]
    assert crypto.decrypt(d["encrypt"]) == (d["expected_plaintext"], vectors["corp_id"])
    empty = AibotCrypto(TOKEN, AES_KEY)  # the AI bot's receive id is ""
    assert empty.decrypt(empty.encrypt('{"a": "你好"}')) == ('{"a": "你好"}', "")


async def test_aibot_gateway_refuses_wrong_secret_and_keeps_the_socket(clients: Clients) -> None:
    async with running(FakeGateway()) as gw:
        ws = await connect(gw, clients)
        assert (await call(ws, "ping"))["errcode"] == 853001  # not subscribed yet
        answer = await call(ws, "aibot_subscribe", {"bot_id": BOT_ID, "secret": "wrong"}, req_id="sub-1")
        assert answer == {"headers": {"req_id": "sub-1"}, "errcode": 853000, "errmsg": "invalid bot_id or secret"}
        assert not gw.connected and gw.subscriptions == 0
        assert (await call(ws, "aibot_subscribe", {"bot_id": BOT_ID, "secret": BOT_SECRET}))["errcode"] == 0
        assert gw.connected and gw.subscriptions == 1
        assert (await call(ws, "ping"))["errcode"] == 0
        await ws.write_message("not json")
        assert (await read(ws) or {})["errcode"] == 40001
        assert [f.errcode for f in gw.errors] == [853001, 853000, 40001]


async def test_aibot_gateway_second_subscribe_kicks_the_first(clients: Clients) -> None:
    async with running(FakeGateway()) as gw:
        first = await subscribed(gw, clients)
        second = await subscribed(gw, clients)
        kicked = await read(first)
        assert kicked is not None and kicked["cmd"] == "aibot_event_callback"
        assert kicked["body"]["event"]["eventtype"] == "disconnected_event"
        assert await read(first) is None  # then closed
        assert gw.subscriptions == 2 and gw.connected and (1, "replaced") in gw.disconnects
        req_id = gw.message("u1", "hi")
        assert (await read(second) or {})["headers"]["req_id"] == req_id


async def test_aibot_gateway_req_id_dies_with_its_connection(clients: Clients) -> None:
    async with running(FakeGateway()) as gw:
        ws = await subscribed(gw, clients)
        req_id = gw.message("u1", "hello")
        callback = await read(ws)
        assert callback is not None and callback["body"]["text"]["content"] == "hello"
        assert (await call(ws, "aibot_respond_msg", stream("thinking"), req_id))["errcode"] == 0
        await gw.drop()
        assert await read(ws) is None and not gw.connected
        ws2 = await subscribed(gw, clients)
        assert (await call(ws2, "aibot_respond_msg", stream("late", True), req_id))["errcode"] == 846605
        event_req = gw.event("u1", "enter_chat")
        await read(ws2)
        assert (await call(ws2, "aibot_respond_msg", stream("no"), event_req))["errcode"] == 846605
        welcome = {"msgtype": "text", "text": {"content": "您好"}}
        assert (await call(ws2, "aibot_respond_welcome_msg", welcome, event_req))["errcode"] == 0
        assert (await call(ws2, "aibot_respond_welcome_msg", welcome, event_req))["errcode"] == 846605
        assert gw.streams(req_id) == [stream("thinking")["stream"]]
        assert [f.conn for f in gw.errors] == [2, 2, 2]


async def test_aibot_gateway_stream_expires_and_finish_closes_req_id(clients: Clients) -> None:
    async with running(FakeGateway(stream_expiry_s=0.2)) as gw:
        ws = await subscribed(gw, clients)
        req_id = gw.message("u1", "q", chat_id="g1")
        await read(ws)
        assert (await call(ws, "aibot_respond_msg", stream("a"), req_id))["errcode"] == 0
        await asyncio.sleep(0.3)
        answer = await call(ws, "aibot_respond_msg", stream("ab", True), req_id)
        assert (answer["errcode"], answer["errmsg"]) == (846608, "stream message update expired")
        other = gw.message("u1", "q2", chat_id="g1")
        await read(ws)
        assert (await call(ws, "aibot_respond_msg", stream("x" * 20481), other))["errcode"] == 40058
        assert (await call(ws, "aibot_respond_msg", stream("done", True), other))["errcode"] == 0
        assert (await call(ws, "aibot_respond_msg", stream("again", True), other))["errcode"] == 846605


async def test_aibot_gateway_upload_push_and_user_file(clients: Clients) -> None:
    async with running(FakeGateway()) as gw:
        ws = await subscribed(gw, clients)
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3000
        half = len(data) // 2
        init = {"type": "image", "filename": "a.png", "total_size": len(data), "total_chunks": 2,
                "md5": hashlib.md5(data).hexdigest()}
        upload_id = (await call(ws, "aibot_upload_media_init", init))["body"]["upload_id"]
        for index, part in ((2, data[half:]), (1, data[:half]), (2, data[half:])):
            chunk = {"upload_id": upload_id, "chunk_index": index, "base64_data": base64.b64encode(part).decode()}
            assert (await call(ws, "aibot_upload_media_chunk", chunk))["errcode"] == 0
        done = await call(ws, "aibot_upload_media_finish", {"upload_id": upload_id})
        media_id = done["body"]["media_id"]
        assert done["body"]["type"] == "image" and gw.media[media_id] == ("image", data)
        push = {"chatid": "u9", "msgtype": "image", "image": {"media_id": media_id}}
        assert (await call(ws, "aibot_send_msg", push))["errcode"] == 40061  # u9 never wrote
        gw.file("u9", "notes.txt", b"secret notes")
        callback = await read(ws)
        assert callback is not None
        assert (await call(ws, "aibot_send_msg", push))["errcode"] == 0 and gw.pushes("u9") == [push]
        part = callback["body"]["file"]
        async with httpx.AsyncClient() as client:
            cipher = (await client.get(part["url"])).content
        key = base64.b64decode(part["aeskey"])
        dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        unpadder = padding.PKCS7(256).unpadder()
        assert unpadder.update(dec.update(cipher) + dec.finalize()) + unpadder.finalize() == b"secret notes"
        assert part["filename"] == "notes.txt"


async def test_aibot_gateway_cards_clicks_and_heartbeat(clients: Clients) -> None:
    async with running(FakeGateway(event_deadline_s=0.2, heartbeat_timeout_s=0.4)) as gw:
        ws = await subscribed(gw, clients)
        req_id = gw.message("u1", "menu")
        await read(ws)
        card = {"card_type": "button_interaction", "task_id": "t-1", "main_title": {"title": "选"},
                "button_list": [{"text": "好", "style": 1, "key": "ok"}]}
        bad = {**card, "button_list": [{"text": "a", "key": "k"}, {"text": "b", "key": "k"}]}
        assert (await call(ws, "aibot_respond_msg", {"msgtype": "template_card", "template_card": bad}, req_id)
                )["errcode"] == 40040
        body = {"msgtype": "template_card", "template_card": card}
        assert (await call(ws, "aibot_respond_msg", body, req_id))["errcode"] == 0
        assert (await call(ws, "aibot_send_msg", {"chatid": "u1", **body}))["errcode"] == 40041  # task_id reused
        click = gw.click("u1", "t-1", "ok")
        await read(ws)
        update = {"response_type": "update_template_card", "template_card": {**card, "task_id": "t-2"}}
        assert (await call(ws, "aibot_respond_update_msg", update, click))["errcode"] == 40040
        update["template_card"] = card
        assert (await call(ws, "aibot_respond_update_msg", update, click))["errcode"] == 0
        assert (await call(ws, "ping"))["errcode"] == 0  # the heartbeat keeps the connection for 0.4 s more
        late = gw.click("u1", "t-1", "ok")
        await read(ws)
        await asyncio.sleep(0.25)
        assert (await call(ws, "aibot_respond_update_msg", update, late))["errcode"] == 846609
        assert [f.cmd for f in gw.replies(click)] == ["aibot_respond_update_msg"]
        assert await read(ws) is None  # no ping for 0.4 s: closed
        assert gw.disconnects == [(1, "heartbeat")] and not gw.connected


class _StandInBot(tornado.web.RequestHandler):
    """A minimal callback-mode bot: answers 'thinking', then finishes on the second refresh."""

    crypto = AibotCrypto(TOKEN, AES_KEY)
    refreshes = 0

    def get(self) -> None:
        self.finish(self.crypto.decrypt(self.get_query_argument("echostr"))[0])

    def post(self) -> None:
        q = {k: self.get_query_argument(k) for k in ("msg_signature", "timestamp", "nonce")}
        encrypt = json.loads(self.request.body)["encrypt"]
        if self.crypto.sign(q["timestamp"], q["nonce"], encrypt) != q["msg_signature"]:
            self.set_status(403)
            return
        body = json.loads(self.crypto.decrypt(encrypt)[0])
        if body["msgtype"] == "stream":
            type(self).refreshes += 1
        done = type(self).refreshes >= 2
        reply = {"msgtype": "stream", "stream": {"id": "st-1", "finish": done, "content": "答" if done else "…"}}
        enc = self.crypto.encrypt(json.dumps(reply))
        ts = int(q["timestamp"])
        self.finish({"encrypt": enc, "msgsignature": self.crypto.sign(str(ts), q["nonce"], enc), "timestamp": ts,
                     "nonce": q["nonce"]})


async def test_aibot_callbacks_poll_streams_and_response_url_is_single_use() -> None:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/cb", _StandInBot)]))
    server.add_sockets(sockets)
    fake = FakeCallbacks(f"http://127.0.0.1:{sockets[0].getsockname()[1]}/cb", poll_interval_s=0.05)
    await fake.start()
    try:
        assert (await fake.verify("echo-9")).text == "echo-9"
        resp, reply = await fake.message("u1", "hello", forge=True)
        assert resp.status_code == 403 and reply is None
        resp, reply = await fake.message("u1", "hello", msgid="m-1")
        assert reply is not None and reply["stream"]["finish"] is False
        final = await fake.wait_finished("st-1", timeout=5.0)
        assert final["content"] == "答" and len(fake.snapshots("st-1")) == 3 and not fake.violations
        url = fake.bodies["m-1"]["response_url"]
        async with httpx.AsyncClient() as client:
            md = {"msgtype": "markdown", "markdown": {"content": "late answer"}}
            assert (await client.post(url, json=md)).json() == {"errcode": 0, "errmsg": "ok"}
            assert (await client.post(url, json=md)).json()["errcode"] == 60140
        assert fake.responses == [md] and fake.response_of["m-1"] == md
    finally:
        await fake.stop()
        server.stop()
