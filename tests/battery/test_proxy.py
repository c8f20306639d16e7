"""The fault proxy itself, in front of the session's Redis: each fault does what it says.

Raw sockets speak Redis's inline protocol (``PING\\r\\n`` -> ``+PONG``), so what the
client sees is exactly what the proxy did: bytes, a timeout, EOF, a reset, a refusal.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.battery.conftest import wait_until
from tests.battery.proxy import FaultProxy

pytestmark = pytest.mark.battery

PONG = b"+PONG\r\n"


@pytest.fixture
def proxy(fault_proxy: Callable[[str], FaultProxy], redis_url: str) -> FaultProxy:
    return fault_proxy(redis_url)


@pytest.fixture
def connect(proxy: FaultProxy) -> Iterator[Callable[[], socket.socket]]:
    """Open raw connections through the proxy (closed after the test)."""
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def ping(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


class TestFaultProxy:
    """Forwards both ways; stalls, slows, drops, resets and refuses on command."""

    def test_forwards(self, proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
        sock = connect()

        reply = ping(sock)

        assert PONG == reply
        assert 1 == proxy.accepted
        assert [6, 7] == proxy.forwarded

    def test_stall_holds_bytes_then_resume_delivers_them(
        self, proxy: FaultProxy, connect: Callable[[], socket.socket]
    ) -> None:
        sock = connect()
        assert PONG == ping(sock)

        proxy.stall()
        with pytest.raises(TimeoutError):
            ping(sock, timeout=0.3)
        during = proxy.active
        late = connect()  # accepted while stalled, and stalled too
        late.sendall(b"PING\r\n")
        proxy.resume()
        sock.settimeout(5)
        late.settimeout(5)

        assert PONG == sock.recv(64)  # the held request went through on resume
        assert PONG == late.recv(64)
        assert 1 == during, "a stall keeps connections open"

    def test_slow_delays_each_chunk(self, proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
        sock = connect()
        assert PONG == ping(sock)

        proxy.slow(0.2)
        began = time.monotonic()
        reply = ping(sock)
        took = time.monotonic() - began
        proxy.slow(0)

        assert PONG == reply
        assert took >= 0.4, "the request and the reply are each held 0.2 s"

    def test_drop_closes_connections_and_accepts_new_ones(
        self, proxy: FaultProxy, connect: Callable[[], socket.socket]
    ) -> None:
        sock = connect()
        assert PONG == ping(sock)

        proxy.drop()
        sock.settimeout(5)
        eof = sock.recv(64)
        wait_until(lambda: proxy.active == 0, 5, "the proxy to forget the connection")

        assert b"" == eof
        assert PONG == ping(connect())

    def test_reset_sends_rst(self, proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
        sock = connect()
        assert PONG == ping(sock)

        proxy.reset()
        sock.settimeout(5)

        with pytest.raises(ConnectionResetError):
            sock.recv(64)
        assert PONG == ping(connect())

    def test_refuse_then_accept(self, proxy: FaultProxy, connect: Callable[[], socket.socket]) -> None:
        sock = connect()
        assert PONG == ping(sock)  # accepted (one still in the listen queue would go with the listener)

        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            connect()
        still = ping(sock)  # open connections carry on
        proxy.accept()

        assert PONG == still
        assert PONG == ping(connect())
