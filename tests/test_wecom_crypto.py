"""WeCom callback crypto against the published vectors; the test client's own crypto checked on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.channels.wecom_crypto import (
    DecryptError,
    ReceiveIdError,
    SignatureError,
    WecomCrypto,
    XmlError,
    decode_aes_key,
    parse_xml,
    pkcs7_pad,
    pkcs7_unpad,
    signature,
)
from tests.fakes.wecom_server import CallbackClient

# The shared protocol folder sits beside the repository (../shared/protocols); a copy in tests/data wins.
_CANDIDATES = [Path(__file__).parent / "data" / "wecom_vectors.json",
               Path(__file__).resolve().parents[2] / "shared" / "protocols" / "wecom_vectors.json"]
_VECTORS_FILE = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[-1])
VECTORS = json.loads(_VECTORS_FILE.read_text(encoding="utf-8"))
OFFICIAL = VECTORS["official_sample"]
WECHATPY = VECTORS["wechatpy_tests"]
FIXED = WECHATPY["encrypt_msg_with_fixed_random"]


def crypto(v: dict) -> WecomCrypto:
    return WecomCrypto(v["token"], v["encoding_aes_key"], v["corp_id"])


@pytest.mark.parametrize("vec", [OFFICIAL, WECHATPY], ids=["official", "wechatpy"])
def test_verify_url_vectors(vec: dict) -> None:
    v = vec["verify_url"]
    assert crypto(vec).verify_url(v["msg_signature"], v["timestamp"], v["nonce"], v["echostr"]) == \
        v["expected_plaintext"]


def test_verify_url_rejects_changed_nonce() -> None:
    v = WECHATPY["verify_url"]
    with pytest.raises(SignatureError):
        crypto(WECHATPY).verify_url(v["msg_signature"], v["timestamp"], v["must_fail_with_nonce"],
                                    v["echostr"])


def test_decrypt_msg_official_post_body() -> None:
    v = OFFICIAL["decrypt_msg"]
    plain = crypto(OFFICIAL).decrypt_msg(v["msg_signature"], v["timestamp"], v["nonce"], v["post_body"])
    assert plain == v["expected_plaintext"]
    assert parse_xml(plain)["Content"] == "你好"


def test_decrypt_msg_wechatpy() -> None:
    v = WECHATPY["decrypt_msg"]
    body = (f"<xml><ToUserName><![CDATA[{WECHATPY['corp_id']}]]></ToUserName>"
            f"<Encrypt><![CDATA[{v['encrypt']}]]></Encrypt></xml>")
    plain = crypto(WECHATPY).decrypt_msg(v["msg_signature"], v["timestamp"], v["nonce"], body)
    assert plain == v["expected_plaintext"]
    assert parse_xml(plain)["MsgId"] == "4363689963896700987"


def test_encrypt_with_fixed_random_matches_vector() -> None:
    enc, sig = crypto(WECHATPY).encrypt_msg(FIXED["plaintext"], FIXED["nonce"], FIXED["timestamp"],
                                            FIXED["random_prefix"].encode())
    assert enc == FIXED["expected_encrypt"]
    assert sig == FIXED["expected_msg_signature"]
    assert signature(WECHATPY["token"], FIXED["timestamp"], FIXED["nonce"], enc) == sig


def test_product_round_trip_random_prefix_differs() -> None:
    c = crypto(OFFICIAL)
    a, b = c.encrypt("科大讯飞董事长是谁？"), c.encrypt("科大讯飞董事长是谁？")
    assert a != b
    assert c.decrypt(a) == c.decrypt(b) == "科大讯飞董事长是谁？"


def test_wrong_key_and_wrong_corp_are_rejected() -> None:
    v = OFFICIAL["decrypt_msg"]
    other_key = WecomCrypto(OFFICIAL["token"], WECHATPY["encoding_aes_key"], OFFICIAL["corp_id"])
    with pytest.raises((DecryptError, ReceiveIdError)):
        other_key.decrypt_msg(v["msg_signature"], v["timestamp"], v["nonce"], v["post_body"])
    other_corp = WecomCrypto(OFFICIAL["token"], OFFICIAL["encoding_aes_key"], "wwSomeOtherCorp")
    with pytest.raises(ReceiveIdError):
        other_corp.decrypt_msg(v["msg_signature"], v["timestamp"], v["nonce"], v["post_body"])


def test_tampered_ciphertext_and_signature() -> None:
    c = crypto(OFFICIAL)
    v = OFFICIAL["decrypt_msg"]
    with pytest.raises(SignatureError):
        c.decrypt_msg("0" * 40, v["timestamp"], v["nonce"], v["post_body"])
    with pytest.raises(DecryptError):
        c.decrypt("not base64 !!")
    with pytest.raises(DecryptError):
        c.decrypt("QUJD")  # 3 bytes: not a whole AES block


def test_padding_is_to_32_bytes() -> None:
    for n in range(0, 70):
        padded = pkcs7_pad(b"x" * n)
        assert len(padded) % 32 == 0 and 1 <= len(padded) - n <= 32
        assert pkcs7_unpad(padded) == b"x" * n
    with pytest.raises(DecryptError):
        pkcs7_unpad(b"x" * 31 + bytes([33]))
    with pytest.raises(DecryptError):
        pkcs7_unpad(b"x" * 30 + bytes([1, 2]))


def test_bad_aes_key_rejected_at_construction() -> None:
    with pytest.raises(ValueError):
        decode_aes_key("short")


def test_xml_entities_and_dtd_rejected() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            "<xml><Encrypt>&b;</Encrypt></xml>")
    with pytest.raises(XmlError):
        parse_xml(bomb)
    with pytest.raises(XmlError):
        parse_xml("<xml><Encrypt>unclosed</xml>")


# ---- the test client's independent crypto, checked on its own ----


def test_client_crypto_matches_fixed_random_vector() -> None:
    client = CallbackClient("http://127.0.0.1:1/", token=WECHATPY["token"],
                            aes_key=WECHATPY["encoding_aes_key"], corp_id=WECHATPY["corp_id"])
    enc = client.encrypt(FIXED["plaintext"], FIXED["random_prefix"].encode())
    assert enc == FIXED["expected_encrypt"]
    assert client.sign(FIXED["timestamp"], FIXED["nonce"], enc) == FIXED["expected_msg_signature"]
    assert client.decrypt(enc) == (FIXED["plaintext"], WECHATPY["corp_id"])


def test_client_crypto_decrypts_published_vectors() -> None:
    client = CallbackClient("http://127.0.0.1:1/", token=OFFICIAL["token"],
                            aes_key=OFFICIAL["encoding_aes_key"], corp_id=OFFICIAL["corp_id"])
    v = OFFICIAL["verify_url"]
    assert client.sign(v["timestamp"], v["nonce"], v["echostr"]) == v["msg_signature"]
    assert client.decrypt(v["echostr"]) == (v["expected_plaintext"], OFFICIAL["corp_id"])
