"""WeCom (企业微信) callback crypto: SHA-1 message signatures and AES-256-CBC message encryption.

Algorithm (Tencent's WXBizMsgCrypt): msg_signature = sha1 of the sorted, concatenated
[token, timestamp, nonce, encrypt]; key = b64decode(EncodingAESKey + "="), IV = key[:16];
plaintext = 16 random bytes + 4-byte big-endian length + message + receive id, PKCS#7-padded to 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import struct
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import ElementTree

BLOCK = 32
_RANDOM_LEN = 16


class WecomCryptoError(Exception):
    """A callback failed a signature, decryption or receive-id check."""


class SignatureError(WecomCryptoError):
    """msg_signature does not match the token, timestamp, nonce and payload."""


class DecryptError(WecomCryptoError):
    """The payload is not valid base64 / AES / padding / framing for our key."""


class ReceiveIdError(WecomCryptoError):
    """The decrypted message is addressed to another corp (receive id mismatch)."""


class XmlError(WecomCryptoError):
    """The XML is malformed or uses forbidden constructs (entities, DTDs)."""


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The hex SHA-1 msg_signature over the sorted parts."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode("utf-8")).hexdigest()


def pkcs7_pad(data: bytes, block: int = BLOCK) -> bytes:
    """PKCS#7 padding to a multiple of `block` bytes (1..block bytes added)."""
    n = block - len(data) % block
    return data + bytes([n]) * n


def pkcs7_unpad(data: bytes, block: int = BLOCK) -> bytes:
    """Remove PKCS#7 padding; DecryptError when it is not valid."""
    if not data:
        raise DecryptError("empty plaintext")
    n = data[-1]
    if not 1 <= n <= block or n > len(data) or data[-n:] != bytes([n]) * n:
        raise DecryptError("bad padding")
    return data[:-n]


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key from the 43-character EncodingAESKey."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("WeCom EncodingAESKey is not valid base64") from exc
    if len(encoding_aes_key) != 43 or len(key) != 32:
        raise ValueError("WeCom EncodingAESKey must be 43 characters encoding 32 bytes")
    return key


def parse_xml(text: str | bytes) -> dict[str, str]:
    """Parse a flat WeCom XML document into {tag: text}; XmlError on malformed or entity-using input."""
    try:
        root = ElementTree.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except Exception as exc:  # ParseError and defusedxml's DefusedXmlException subclasses
        raise XmlError(f"bad XML: {type(exc).__name__}") from exc
    return {child.tag: (child.text or "") for child in root}


class WecomCrypto:
    """Signs, verifies, encrypts and decrypts WeCom callback payloads for one app."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        self._token = token
        self._key = decode_aes_key(encoding_aes_key)
        self._receive_id = receive_id

    def __repr__(self) -> str:
        return f"WecomCrypto(receive_id={self._receive_id!r})"

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """msg_signature for these parts under our token."""
        return signature(self._token, timestamp, nonce, encrypt)

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise SignatureError unless msg_signature is right (constant-time compare)."""
        expected = self.sign(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), (msg_signature or "").lower().encode()):
            raise SignatureError("msg_signature mismatch")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, plaintext: str, random_prefix: bytes | None = None) -> str:
        """Base64 ciphertext of the framed message (random prefix optional, for tests)."""
        rand = os.urandom(_RANDOM_LEN) if random_prefix is None else random_prefix
        if len(rand) != _RANDOM_LEN:
            raise ValueError("random prefix must be 16 bytes")
        msg = plaintext.encode("utf-8")
        framed = rand + struct.pack(">I", len(msg)) + msg + self._receive_id.encode("utf-8")
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(pkcs7_pad(framed)) + enc.finalize()).decode("ascii")

    def decrypt(self, encrypt: str) -> str:
        """The message inside a base64 ciphertext; DecryptError or ReceiveIdError when it is not ours."""
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecryptError("payload is not base64") from exc
        if not raw or len(raw) % 16:
            raise DecryptError("payload length is not a multiple of the AES block")
        dec = self._cipher().decryptor()
        framed = pkcs7_unpad(dec.update(raw) + dec.finalize())
        if len(framed) < _RANDOM_LEN + 4:
            raise DecryptError("payload too short")
        (length,) = struct.unpack(">I", framed[_RANDOM_LEN:_RANDOM_LEN + 4])
        body = framed[_RANDOM_LEN + 4:]
        if length > len(body):
            raise DecryptError("length field exceeds payload")
        receive_id = body[length:].decode("utf-8", errors="replace")
        if not hmac.compare_digest(receive_id.encode(), self._receive_id.encode()):
            raise ReceiveIdError("receive id does not match the configured corp id")
        try:
            return body[:length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecryptError("message is not UTF-8") from exc

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """URL verification (GET): check the signature over echostr and return its plaintext."""
        self.check_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_msg(self, msg_signature: str, timestamp: str, nonce: str, post_body: str | bytes) -> str:
        """A POSTed callback: parse the envelope, check the signature over <Encrypt>, return the inner XML."""
        encrypt = parse_xml(post_body).get("Encrypt", "")
        if not encrypt:
            raise XmlError("no <Encrypt> element")
        self.check_signature(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)

    def encrypt_msg(self, plaintext: str, nonce: str, timestamp: str,
                    random_prefix: bytes | None = None) -> tuple[str, str]:
        """(Encrypt, msg_signature) for a passive reply or a test callback."""
        encrypt = self.encrypt(plaintext, random_prefix)
        return encrypt, self.sign(timestamp, nonce, encrypt)


def decrypt_media(data: bytes, key: bytes) -> bytes:
    """A media file WeCom serves encrypted: AES-256-CBC under `key`, IV = key[:16], PKCS#7 to 32 bytes."""
    if len(key) != 32 or not data or len(data) % 16:
        raise DecryptError("the file is not AES-256-CBC ciphertext for this key")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return pkcs7_unpad(dec.update(data) + dec.finalize())


CALLBACK_QUERY = ("msg_signature", "timestamp", "nonce", "echostr")


def callback_query(argument: Callable[[str, str], str]) -> dict[str, str]:
    """A callback's query parameters, read with `argument(name, default)` (tornado's get_query_argument);
    base64 never has spaces, so a '+' decoded as ' ' from an unencoded query is put back."""
    return {n: argument(n, "").replace(" ", "+") for n in CALLBACK_QUERY}


def skew_s(timestamp: str) -> float:
    """How far a callback's timestamp is from now, in seconds (infinite when it is not a number)."""
    try:
        return abs(time.time() - int(timestamp))
    except ValueError:
        return math.inf


def replay_key(q: dict[str, str]) -> str:
    """What makes a callback unique: a second one with the same key is a replay."""
    return f"{q['timestamp']}:{q['nonce']}:{q['msg_signature'].lower()}"
