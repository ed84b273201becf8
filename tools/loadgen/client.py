"""A minimal keep-alive HTTP/1.1 client on trio sockets: one request at a time per connection.

Measured on the 2-core machine this project is built on, it spends far less CPU per request
than the servers it measures (see ``tools/bench.py``, which prints the load generator's own
CPU use), so it is not the bottleneck; ``httpx`` costs several times more per request.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from tools.loadgen.wire import ProtocolError, Response, ResponseParser, request_bytes

RECV_SIZE = 65536


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        return cls(parts.hostname, parts.port or 80)


class TransportError(Exception):
    """The connection failed or closed before a whole response arrived."""


class Connection:
    """One TCP connection; reconnects lazily after a close or an error."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._sock: trio.socket.SocketType | None = None
        self._parser = ResponseParser()
        self.connects = 0

    async def connect(self) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock.connect((self.endpoint.host, self.endpoint.port))
        except OSError as exc:
            sock.close()
            raise TransportError(f"connect to {self.endpoint.authority}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._parser = ResponseParser()
        self.connects += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def request(self, method: str, target: str, body: bytes | None = None) -> Response:
        """Send one request and read its response; on any failure the connection is closed."""
        if self._sock is None:
            await self.connect()
        assert self._sock is not None
        sock = self._sock
        head = method == "HEAD"
        try:
            out = memoryview(request_bytes(method, target, self.endpoint.authority, body))
            while out:  # a large body takes several sends
                sent = await sock.send(out)
                out = out[sent:]
            while True:
                data = await sock.recv(RECV_SIZE)
                if not data:
                    last = self._parser.eof()
                    self.close()
                    if last is None:
                        raise TransportError("server closed the connection")
                    return last
                responses = self._parser.feed(data, head_request=head)
                if responses:
                    if len(responses) > 1 or not self._parser.idle:
                        raise ProtocolError("server sent more than one response")
                    response = responses[0]
                    if not response.keep_alive:
                        self.close()
                    return response
        except (OSError, ProtocolError) as exc:
            self.close()
            raise TransportError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            # Cancelled (a timeout) mid-request: the connection's state is unknown.
            self.close()
            raise
