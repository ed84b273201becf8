"""HTTP/1.1 on the wire, without I/O: request bytes and an incremental response parser.

Only what a load generator needs from a server it is measuring: keep-alive, ``Content-Length``
and ``chunked`` bodies, bodiless statuses (1xx, 204, 304) and ``Connection: close``. The parser
is fed whatever ``recv`` returned and hands back complete responses; it never blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The server sent something that is not an HTTP/1.1 response we can read."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[bytes, bytes] = field(default_factory=dict)
    keep_alive: bool = True


def request_bytes(method: str, target: str, host: str, body: bytes | None = None,
                  content_type: str = "application/x-ndjson") -> bytes:
    """An HTTP/1.1 request. Without ``body``: bodiless (``Content-Length: 0`` on POST, as
    curl sends it); with one: ``Content-Type`` and ``Content-Length``, then the body."""
    if body is None:
        length = "Content-Length: 0\r\n" if method == "POST" else ""
        return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{length}\r\n".encode("ascii")
    head = (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
    return head + body


class ResponseParser:
    """Feed bytes, get ``Response`` objects; one parser per connection, responses in order."""

    __slots__ = ("_body_left", "_buffer", "_chunked", "_head", "_until_close")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, dict[bytes, bytes], bool] | None = None
        self._body_left = 0
        self._chunked = False
        self._until_close = False

    def feed(self, data: bytes, *, head_request: bool = False) -> list[Response]:
        """Add received bytes; return every response they complete (often zero or one)."""
        self._buffer += data
        done: list[Response] = []
        while True:
            response = self._step(head_request)
            if response is None:
                return done
            done.append(response)

    def eof(self) -> Response | None:
        """The peer closed: a body delimited by the close is complete now."""
        if self._head is not None and self._until_close:
            status, headers, _ = self._head
            body = bytes(self._buffer)
            self._reset()
            return Response(status, body, headers, keep_alive=False)
        if self._head is not None or self._buffer:
            raise ProtocolError("connection closed in the middle of a response")
        return None

    @property
    def idle(self) -> bool:
        return self._head is None and not self._buffer

    def _reset(self) -> None:
        self._buffer.clear()
        self._head = None
        self._body_left = 0
        self._chunked = False
        self._until_close = False

    def _step(self, head_request: bool) -> Response | None:
        if self._head is None and not self._parse_head(head_request):
            return None
        assert self._head is not None
        status, headers, keep_alive = self._head
        if self._until_close:
            return None
        if self._chunked:
            body = self._take_chunked()
            if body is None:
                return None
        else:
            if len(self._buffer) < self._body_left:
                return None
            body = bytes(self._buffer[: self._body_left])
            del self._buffer[: self._body_left]
        self._head = None
        self._chunked = False
        self._body_left = 0
        return Response(status, body, headers, keep_alive)

    def _parse_head(self, head_request: bool) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ProtocolError("response head too long")
            return False
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        del self._buffer[: end + 4]
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            raise ProtocolError(f"bad status line {status_line[:80]!r}")
        try:
            status = int(status_line[9:12])
        except ValueError:
            raise ProtocolError(f"bad status line {status_line[:80]!r}") from None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get(b"connection", b"").lower()
        keep_alive = b"close" not in connection and not status_line.startswith(b"HTTP/1.0")
        self._head = (status, headers, keep_alive)
        self._chunked = False
        self._until_close = False
        self._body_left = 0
        if head_request or status < 200 or status in (204, 304):
            return True
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._chunked = True
        elif b"content-length" in headers:
            try:
                self._body_left = int(headers[b"content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            if self._body_left < 0:
                raise ProtocolError("bad Content-Length")
        else:
            self._until_close = True
            self._head = (status, headers, False)
        return True

    def _take_chunked(self) -> bytes | None:
        """Parse a whole chunked body from the buffer, or leave it untouched and say so."""
        pos = 0
        body = bytearray()
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            pos = line_end + 2
            if size == 0:
                # Trailers (usually none) end with an empty line.
                while True:
                    line_end = buffer.find(b"\r\n", pos)
                    if line_end < 0:
                        return None
                    empty = line_end == pos
                    pos = line_end + 2
                    if empty:
                        del buffer[:pos]
                        return bytes(body)
            if len(buffer) < pos + size + 2:
                return None
            body += buffer[pos : pos + size]
            pos += size + 2
