"""A keep-alive HTTP/1.1 client: h11 on a trio stream, one request at a time per connection.

h11 does the protocol (framing, keep-alive, bodiless answers); this module only moves bytes
and turns failures into ``TransportError``. It costs far less CPU per request than the
servers it measures (``tools/bench.py`` prints the load generator's own CPU use); ``httpx``
costs several times more per request.
"""

from __future__ import annotations

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
        self._stream: trio.SocketStream | None = None
        self._http = h11.Connection(h11.CLIENT)
        self.connects = 0

    async def connect(self) -> None:
        try:
            stream = await trio.open_tcp_stream(self.endpoint.host, self.endpoint.port)
        except OSError as exc:
            raise TransportError(f"connect to {self.endpoint.authority}: {exc}") from exc
        self.close()
        self._stream = stream
        self._http = h11.Connection(h11.CLIENT)
        self.connects += 1

    def close(self) -> None:
        if self._stream is not None:
            self._stream.socket.close()
            self._stream = None

    async def request(self, method: str, target: str, body: bytes | None = None,
                      content_type: str = "application/x-ndjson") -> Response:
        """Send one request and read its response; on any failure the connection is closed.

        Without ``body`` a POST says ``Content-Length: 0`` (as curl does)."""
        if self._stream is None:
            await self.connect()
        assert self._stream is not None
        headers = [("Host", self.endpoint.authority)]
        if body is not None:
            headers.append(("Content-Type", content_type))
        if body is not None or method == "POST":
            headers.append(("Content-Length", str(len(body or b""))))
        http = self._http
        try:
            out = http.send(h11.Request(method=method, target=target, headers=headers)) or b""
            if body:
                out += http.send(h11.Data(data=body)) or b""
            await self._stream.send_all(out + (http.send(h11.EndOfMessage()) or b""))
            response = await self._receive(self._stream, http)
        except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
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
    async def _receive(stream: trio.SocketStream, http: h11.Connection) -> Response:
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await stream.receive_some(RECV_SIZE))
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
