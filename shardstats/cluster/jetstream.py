"""``JetStreamLog``: the ``EventLog`` on a NATS JetStream stream, for trio callers.

nats-py runs on one asyncio loop in a dedicated thread (``aiothread.AsyncioThread``); every
method here is a trio coroutine that hops to that loop for the NATS call and back.

The stream (created by the first node that finds it missing):
- name ``JetStreamConfig.stream`` (default ``shardstats``); subject ``<stream>.events`` only
  (what is published and consumed: a record on another subject would raise the stream's last
  seq, the read barrier's target, past anything a node applies; partitions will add their
  subjects together with consumers for them);
- file storage, ``replicas`` copies (RAFT: a PubAck means stored on a quorum), a duplicate
  window of ``duplicate_window`` seconds for ``Nats-Msg-Id``, ``max_age`` = retention
  (0: keep everything). An existing stream is used as it is; a replica count other than the
  configured one is logged as a warning, never changed behind the operator's back.

Publishing: one JetStream publish with the ``Nats-Msg-Id`` header and ``publish_timeout``.
While the client is disconnected (reconnecting), publish fails at once with
``LogUnavailable`` instead of letting nats-py buffer the message for later: a buffered
message would be sent with nobody waiting for its ack. No responders / an API error reply =
nothing stored = ``LogUnavailable``; a timeout = ``LogOutcomeUnknown``.

Consuming: an ordered push consumer (ephemeral, memory, acks off, flow control and idle
heartbeats; its description names the node) starting at ``after_seq + 1``. nats-py re-creates
it from the last stream sequence it saw when heartbeats stop or a gap appears, which covers a
nats-server restart and a reconnect to another server. The iterator also drops any record
whose sequence is not above the last one it gave (Rule 4); when the next record is not the
next sequence, it re-creates the consumer from the last one it gave once (a message lost on
the way, e.g. to a cancellation inside nats-py) and accepts a gap that remains (retention).
It raises ``LogUnavailable`` if the connection is closed for good, so the caller can reopen
from its own last applied seq.

Without a quorum (R=3, two servers down) the stream leader left alone keeps taking publishes
it cannot commit until it notices (measured here: up to ~20 s); those publishes time out
(``LogOutcomeUnknown``), after which publishes fail at once with ``LogUnavailable``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import nats
import nats.errors
import nats.js.errors
import trio
from nats.js import api

from shardstats.cluster.aiothread import AsyncioThread, BridgeClosed
from shardstats.cluster.log import AsyncClosing, LogCounters, LogRecord, LogStatistics
from shardstats.errors import LogOutcomeUnknown, LogUnavailable

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from shardstats.config import Settings

log = logging.getLogger("shardstats.cluster")

MSG_ID_HEADER = "Nats-Msg-Id"
FETCH_BATCH = 256  # records taken from the subscription per hop to the asyncio thread
IDLE_POLL_SECONDS = 1.0  # how long one wait for records lasts before the iterator rechecks
STREAM_ATTEMPTS = 4  # finding or creating the stream at start: with timeouts, ~4x request_timeout


@dataclass(frozen=True)
class JetStreamConfig:
    urls: tuple[str, ...]
    stream: str = "shardstats"
    replicas: int = 3
    node_name: str = ""
    publish_timeout: float = 5.0
    request_timeout: float = 2.0  # stream info (last_seq), stream and consumer creation
    connect_timeout: float = 2.0
    duplicate_window: float = 120.0
    max_age: float = 0.0  # seconds; 0 keeps records forever
    heartbeat: float = 1.0  # consumer idle heartbeat; a lost consumer is re-created after ~2x

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("JetStreamConfig needs at least one NATS URL")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")

    @property
    def subject(self) -> str:
        return f"{self.stream}.events"

    @classmethod
    def from_settings(cls, settings: Settings) -> JetStreamConfig:
        return cls(
            urls=settings.cluster_nats_url_list,
            stream=settings.cluster_stream,
            replicas=settings.cluster_replicas,
            node_name=settings.node_name or default_node_name(settings.bind),
            publish_timeout=settings.cluster_publish_timeout_seconds,
            request_timeout=settings.cluster_read_barrier_timeout_seconds,
            duplicate_window=settings.cluster_duplicate_window_seconds,
            max_age=settings.cluster_retention_days * 86400.0,
        )


def default_node_name(bind: str) -> str:
    """``<hostname>:<port>``: unique per server process on a machine, stable across restarts."""
    port = bind.rpartition(":")[2]
    return f"{socket.gethostname()}:{port}"


class JetStreamLog(AsyncClosing):
    """Open with ``async with await JetStreamLog.connect(config) as log:``."""

    def __init__(
        self, config: JetStreamConfig, bridge: AsyncioThread, nc: NatsClient,
        js: JetStreamContext,
    ) -> None:
        self.config = config
        self._bridge = bridge
        self._nc = nc
        self._js = js
        self._closed = False
        self._counts = LogCounters()

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, config: JetStreamConfig) -> JetStreamLog:
        """Connect (bounded by ``connect_timeout`` per URL) and make sure the stream exists.

        Raises ``LogUnavailable`` when no server answers or the stream cannot be created.
        """
        bridge = AsyncioThread(name=f"nats-{config.node_name or config.stream}")
        try:
            nc, js = await bridge.run(_connect, config)
        except BaseException:
            with trio.CancelScope(shield=True):
                await bridge.aclose()
            raise
        self = cls(config, bridge, nc, js)
        try:
            await self._ensure_stream()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise
        return self

    async def _ensure_stream(self) -> None:
        """Find or create the stream. A JetStream just started (no meta leader elected yet)
        or busy answers with timeouts for a while: ask again, ``STREAM_ATTEMPTS`` times in
        all, before giving up (a server that answers "no" is not asked again)."""
        config = self.config
        for attempt in range(1, STREAM_ATTEMPTS + 1):
            try:
                info = await self._bridge.run(_ensure_stream, self._js, config)
                break
            except (nats.errors.Error, TimeoutError) as exc:
                transient = isinstance(exc, (TimeoutError, nats.js.errors.ServiceUnavailableError))
                if not transient or attempt == STREAM_ATTEMPTS:
                    raise LogUnavailable(
                        f"cannot find or create JetStream stream {config.stream!r}"
                        f" ({attempt} attempt{'s' if attempt > 1 else ''}): {exc!r}",
                        reason="stream",
                    ) from exc
                log.warning("JetStream stream %s: %r; asking again", config.stream, exc)
                await trio.sleep(0.5 * attempt)
        replicas = info.config.num_replicas or 1
        if replicas != config.replicas:
            log.warning(
                "stream %s has %d replicas, the setting says %d: using the stream as it is",
                config.stream, replicas, config.replicas,
            )

    # -- EventLog ---------------------------------------------------------------------------------

    async def publish(self, data: bytes, msg_id: str) -> int:
        counts = self._counts
        self._check_open(counting=True)
        if not self._nc.is_connected:
            counts.unavailable += 1
            await trio.lowlevel.checkpoint()
            raise LogUnavailable("not connected to NATS (reconnecting)", reason="disconnected")
        try:
            ack = await self._bridge.run(
                self._js.publish, self.config.subject, data, self.config.publish_timeout,
                None, {MSG_ID_HEADER: msg_id},
            )
        except TimeoutError as exc:  # nats.errors.TimeoutError is one
            counts.unknown += 1
            raise LogOutcomeUnknown(
                f"no PubAck within {self.config.publish_timeout} s (msg_id {msg_id})"
            ) from exc
        except (nats.js.errors.NoStreamResponseError, nats.js.errors.APIError) as exc:
            counts.unavailable += 1
            raise LogUnavailable(f"JetStream did not store the record: {exc!r}",
                                 reason="no_quorum") from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError, BridgeClosed) as exc:
            counts.unavailable += 1
            raise LogUnavailable(f"NATS connection unusable: {exc!r}",
                                 reason="disconnected") from exc
        counts.published += 1
        counts.duplicates += bool(ack.duplicate)
        counts.last_published = max(counts.last_published, ack.seq)
        return int(ack.seq)

    async def last_seq(self) -> int:
        self._check_open()
        if not self._nc.is_connected:
            await trio.lowlevel.checkpoint()
            raise LogUnavailable("not connected to NATS (reconnecting)", reason="disconnected")
        try:
            info = await self._bridge.run(_stream_info, self._js, self.config)
        except (TimeoutError, nats.errors.Error, BridgeClosed) as exc:
            raise LogUnavailable(f"cannot read the stream's last sequence: {exc!r}",
                                 reason="disconnected") from exc
        return int(info.state.last_seq)

    @asynccontextmanager
    async def records(self, after_seq: int) -> AsyncIterator[AsyncIterator[LogRecord]]:
        if after_seq < 0:
            raise ValueError("after_seq must not be negative")
        self._check_open()
        consumer = _Consumer(self, after_seq)
        await consumer.start()
        self._counts.open_consumers += 1
        try:
            yield consumer
        finally:
            self._counts.open_consumers -= 1
            with trio.move_on_after(self.config.request_timeout + 1.0) as scope:
                scope.shield = True
                await consumer.stop()

    def statistics(self) -> LogStatistics:
        # consumer_restarts are ours; nats-py's own ordered-consumer resets are unseen.
        return self._counts.snapshot(connected=not self._closed and self._nc.is_connected)

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self._bridge.aclose(self._nc.close, within=self.config.request_timeout)

    # -- internals --------------------------------------------------------------------------------

    def _check_open(self, counting: bool = False) -> None:
        if self._closed:
            if counting:
                self._counts.unavailable += 1
            raise LogUnavailable("the log is closed", reason="closed")


class _Consumer:
    """One ordered push consumer and the iterator over it."""

    def __init__(self, owner: JetStreamLog, after_seq: int) -> None:
        self._owner = owner
        self._last = after_seq
        self._sub: Any = None
        self._buffer: collections.deque[LogRecord] = collections.deque()
        self._gap_rechecked = False

    async def start(self) -> None:
        owner = self._owner
        try:
            self._sub = await owner._bridge.run(
                _subscribe_ordered, owner._js, owner.config, self._last + 1
            )
        except (TimeoutError, nats.errors.Error, BridgeClosed) as exc:
            raise LogUnavailable(f"cannot create the stream consumer: {exc!r}",
                                 reason="consumer") from exc

    async def stop(self) -> None:
        if self._sub is None or self._owner._bridge.closed:
            return
        sub, self._sub = self._sub, None
        # On failure the ephemeral consumer expires on the server by itself.
        with contextlib.suppress(TimeoutError, nats.errors.Error, BridgeClosed):
            await self._owner._bridge.run(_unsubscribe, sub)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LogRecord:
        owner = self._owner
        while True:
            if owner._closed:
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            while self._buffer and self._buffer[0].seq <= self._last:
                self._buffer.popleft()
                owner._counts.skipped += 1
            if self._buffer:
                if self._buffer[0].seq > self._last + 1 and not self._gap_rechecked:
                    await self._resubscribe()  # a record went missing on the way: ask again
                    continue
                # Cancellation may land here: the record stays buffered for the next call.
                await trio.lowlevel.checkpoint()
                record = self._buffer.popleft()
                # A gap that survives a fresh consumer is the log's own (retention): accept.
                self._gap_rechecked = False
                self._last = record.seq
                owner._counts.delivered += 1
                return record
            if self._sub is None:  # a re-subscription was cancelled half way
                await self.start()
            try:
                batch = await owner._bridge.run(_next_records, self._sub, IDLE_POLL_SECONDS)
            except BridgeClosed:
                raise StopAsyncIteration from None
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError) as exc:
                if owner._closed:
                    raise StopAsyncIteration from None
                raise LogUnavailable(f"stream consumer ended: {exc!r}",
                                     reason="consumer") from exc
            self._buffer.extend(batch)

    async def _resubscribe(self) -> None:
        self._gap_rechecked = True
        self._buffer.clear()
        self._owner._counts.restarts += 1
        with trio.CancelScope(shield=True), trio.move_on_after(self._owner.config.request_timeout):
            await self.stop()
        await self.start()


# -- coroutines run on the asyncio loop ---------------------------------------------------------


async def _connect(config: JetStreamConfig) -> tuple[NatsClient, JetStreamContext]:
    nc: NatsClient | None = None

    async def on_error(exc: Exception) -> None:
        log.warning("NATS: %r", exc)

    async def on_disconnected() -> None:
        if nc is not None and not nc.is_closed:  # not our own aclose()
            log.warning("NATS: disconnected")

    async def on_reconnected() -> None:
        url = nc.connected_url if nc is not None else None
        log.info("NATS: reconnected to %s", url.netloc if url else "?")

    opening = nats.connect(
        servers=list(config.urls),
        name=config.node_name or None,
        connect_timeout=config.connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        ping_interval=5,
        max_outstanding_pings=2,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    # nats-py retries the initial connection without end when reconnects are unlimited:
    # bound it by one connect timeout per URL, plus a second for the handshakes.
    try:
        nc = await asyncio.wait_for(opening, config.connect_timeout * len(config.urls) + 1.0)
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        raise LogUnavailable(
            f"cannot connect to NATS at {', '.join(config.urls)}: {exc!r}", reason="disconnected"
        ) from exc
    return nc, nc.jetstream(timeout=config.request_timeout)


async def _ensure_stream(js: JetStreamContext, config: JetStreamConfig) -> api.StreamInfo:
    try:
        return await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        pass
    wanted = api.StreamConfig(
        name=config.stream,
        # Only the subject nodes consume: a message on any other subject of the stream would
        # raise the stream's last seq (the read barrier's target) past what nodes ever apply.
        subjects=[config.subject],
        storage=api.StorageType.FILE,
        num_replicas=config.replicas,
        duplicate_window=config.duplicate_window,
        max_age=config.max_age or None,
        description="shardstats events (cluster mode)",
    )
    try:
        return await js.add_stream(wanted)
    except nats.js.errors.BadRequestError:
        return await js.stream_info(config.stream)  # another node created it first


async def _stream_info(js: JetStreamContext, config: JetStreamConfig) -> api.StreamInfo:
    return await js.stream_info(config.stream)


async def _subscribe_ordered(
    js: JetStreamContext, config: JetStreamConfig, start_seq: int
) -> JetStreamContext.PushSubscription:
    consumer = api.ConsumerConfig(
        description=f"shardstats materializer {config.node_name}".strip(),
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
    )
    return await js.subscribe(
        config.subject,
        stream=config.stream,
        ordered_consumer=True,
        idle_heartbeat=config.heartbeat,
        config=consumer,
    )


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    await sub.unsubscribe()


async def _next_records(
    sub: JetStreamContext.PushSubscription, wait_seconds: float
) -> list[LogRecord]:
    """Wait (up to ``wait_seconds``) for one message, then take whatever is already here."""
    try:
        first = await sub.next_msg(timeout=wait_seconds)
    except TimeoutError:
        return []
    records = [_record(first)]
    try:
        while len(records) < FETCH_BATCH and sub.pending_msgs > 0:
            records.append(_record(await sub.next_msg(timeout=wait_seconds)))
    except asyncio.CancelledError:
        pass  # keep what was taken off the subscription: the trio side buffers it
    return records


def _record(msg: Msg) -> LogRecord:
    meta = msg.metadata
    stamp = meta.timestamp
    return LogRecord(
        seq=meta.sequence.stream,
        data=msg.data,
        msg_id=(msg.headers or {}).get(MSG_ID_HEADER, ""),
        timestamp_ns=int(stamp.timestamp() * 1e9) if stamp is not None else 0,
    )


__all__ = ["JetStreamConfig", "JetStreamLog", "default_node_name"]
