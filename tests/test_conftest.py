import socket

import pytest


def test_guard_rejects_public_address() -> None:
    s = socket.socket()
    try:
        with pytest.raises(AssertionError, match="non-loopback"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()


def test_guard_allows_loopback() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.socket()
    try:
        c.connect(srv.getsockname())
    finally:
        c.close()
        srv.close()
