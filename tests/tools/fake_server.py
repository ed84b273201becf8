"""A scripted keep-alive HTTP/1.1 server for the load generator's tests (127.0.0.1, port 0)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

# handler(head, body) -> the raw response; ``head`` is the request line and header lines.
Handler = Callable[[list[str], bytes], bytes]


def reply(status: int, body: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def serve_fake(handler: Handler, task_status: trio.TaskStatus[int]) -> None:
    """Serve until cancelled. A response that says ``Connection: close``, or whose body has
    no length (up to the close), closes the connection after it is sent."""

    async def connection(stream: trio.SocketStream) -> None:
        buffer = b""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                raw, _, buffer = buffer.partition(b"\r\n\r\n")
                head = raw.decode("latin-1").split("\r\n")
                length = next((int(line.partition(":")[2]) for line in head[1:]
                               if line.lower().startswith("content-length:")), 0)
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                body, buffer = buffer[:length], buffer[length:]
                response = handler(head, body)
                await stream.send_all(response)
                said = response.partition(b"\r\n\r\n")[0].lower()
                framed = any(x in said for x in (b"content-length", b"chunked", b" 204 "))
                if not framed or b"connection: close" in said:
                    await stream.aclose()
                    return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, connection, listeners)
        task_status.started(listeners[0].socket.getsockname()[1])
