"""The loopback-only rule, written once: conftest installs it around every test, and a `bot serve` under test
loads this file through a sitecustomize on its PYTHONPATH (tests/test_serve.py). Standard library only."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

REAL_CONNECT, REAL_CONNECT_EX = socket.socket.connect, socket.socket.connect_ex


def violation(address: object) -> str | None:
    """Why connecting to `address` is refused, or None for a loopback address (or a unix socket)."""
    if isinstance(address, str | bytes):  # unix socket path
        return None
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return None
    try:
        ok = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        ok = False
    return None if ok else f"non-loopback address {address!r} refused by the test network guard"


def guarded(real: Callable[..., Any], error: type[Exception], log: str = "") -> Callable[..., Any]:
    """`real` (socket.connect or connect_ex) refusing non-loopback addresses with `error`, each one written
    to the file `log` too when given."""

    def connect(self: socket.socket, address: object) -> Any:
        if reason := violation(address):
            if log:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(f"{address!r}\n")
            raise error(reason)
        return real(self, address)

    return connect


def install(error: type[Exception], log: str = "") -> None:
    """Guard this whole process (a `bot serve` under test)."""
    socket.socket.connect = guarded(REAL_CONNECT, error, log)  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded(REAL_CONNECT_EX, error, log)  # type: ignore[method-assign]
