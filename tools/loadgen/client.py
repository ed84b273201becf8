"""A keep-alive HTTP/1.1 client: h11 on a trio socket, one request at a time per connection.

h11 does the protocol (framing, keep-alive, bodiless answers); this module only moves bytes
and turns failures into ``TransportError``. It costs far less CPU per request than the
servers it measures (``tools/bench.py`` prints the load generator's own CPU use); ``httpx``
costs several times more per request.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

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


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[bytes, bytes]  # names in lower case


class TransportError(Exception):
    """The connection failed or closed before a whole response arrived, or the server sent
    something that is not HTTP/1.1."""


class Connection:
    """One TCP connection; reconnects lazily after a close or an error."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        # A bare trio socket rather than a trio.SocketStream: measurably less CPU per request.
        self._sock: trio.socket.SocketType | None = None
        self._http = h11.Connection(h11.CLIENT)
        self.connects = 0

    async def connect(self) -> None:
        self.close()
        sock = trio.socket.socket()
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
        self._http = h11.Connection(h11.CLIENT)
        self.connects += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def request(self, method: str, target: str, body: bytes | None = None,
                      content_type: str = "application/x-ndjson") -> Response:
        """Send one request and read its response; on any failure the connection is closed.

        Without ``body`` a POST says ``Content-Length: 0`` (as curl does)."""
        if self._sock is None:
            await self.connect()
        assert self._sock is not None
        headers = [("Host", self.endpoint.authority)]
        if body is not None:
            headers.append(("Content-Type", content_type))
        if body is not None or method == "POST":
            headers.append(("Content-Length", str(len(body or b""))))
        http = self._http
        try:
            for part in (http.send(h11.Request(method=method, target=target, headers=headers)),
                         http.send(h11.Data(data=body)) if body else None,
                         http.send(h11.EndOfMessage())):
                view = memoryview(part or b"")  # a body is sent as it is, not copied
                while view:  # a large body takes several sends
                    view = view[await self._sock.send(view):]
            response = await self._receive(self._sock, http)
        except (OSError, h11.RemoteProtocolError) as exc:
            self.close()
            raise TransportError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            # Cancelled (a timeout) mid-request: the connection's state is unknown.
            self.close()
            raise
        if http.our_state is http.their_state is h11.DONE and not http.trailing_data[1]:
            http.start_next_cycle()
        else:  # the server closes (Connection: close, HTTP/1.0) or closed (a body up to EOF)
            self.close()
        return response

    @staticmethod
    async def _receive(sock: trio.socket.SocketType, http: h11.Connection) -> Response:
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await sock.recv(RECV_SIZE))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Response(head.status_code, bytes(body), dict(head.headers))
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("server closed the connection")
            # h11.InformationalResponse (1xx): skipped; the final response follows.
