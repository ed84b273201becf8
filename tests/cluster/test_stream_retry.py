"""Finding or creating the stream at start is asked again after timeouts (a JetStream just
started, or busy, has no answer for a while), and not after a definite "no"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import nats.js.errors
import pytest

from shardstats.cluster import jetstream
from shardstats.cluster.jetstream import JetStreamConfig, JetStreamLog
from shardstats.errors import LogUnavailable


class DirectBridge:
    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await fn(*args)


def make_log() -> JetStreamLog:
    config = JetStreamConfig(urls=("nats://127.0.0.1:1",), replicas=1)
    return JetStreamLog(config, DirectBridge(), None, None)  # type: ignore[arg-type]


def answers(*outcomes: BaseException | None) -> tuple[list[int], Callable[..., Awaitable[Any]]]:
    calls: list[int] = []
    info = SimpleNamespace(config=SimpleNamespace(num_replicas=1))

    async def ensure(js: Any, config: JetStreamConfig) -> Any:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome
        return info
    return calls, ensure


async def test_timeouts_are_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, ensure = answers(nats.errors.TimeoutError(), TimeoutError(), None)
    monkeypatch.setattr(jetstream, "_ensure_stream", ensure)
    await make_log()._ensure_stream()
    assert len(calls) == 3


async def test_gives_up_after_the_last_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, ensure = answers(*[nats.errors.TimeoutError()] * jetstream.STREAM_ATTEMPTS)
    monkeypatch.setattr(jetstream, "_ensure_stream", ensure)
    with pytest.raises(LogUnavailable, match="4 attempts"):
        await make_log()._ensure_stream()
    assert len(calls) == jetstream.STREAM_ATTEMPTS


async def test_a_definite_refusal_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, ensure = answers(nats.js.errors.BadRequestError())
    monkeypatch.setattr(jetstream, "_ensure_stream", ensure)
    with pytest.raises(LogUnavailable, match="1 attempt"):
        await make_log()._ensure_stream()
    assert len(calls) == 1
