"""A one-shot reply slot: the actor fills it, the requester awaits it."""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Pending(Generic[T]):
    __slots__ = ("_done", "_error", "_value", "abandoned")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self.abandoned = False  # the waiter was cancelled: nobody will see the outcome

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set(self, value: T) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    async def wait(self) -> T:
        try:
            await self._done.wait()
        except trio.Cancelled:
            self.abandoned = True
            raise
        return self.result()

    def result(self) -> T:
        """The outcome once ``done`` (raises the failure); for more waiters than one."""
        assert self.done, "no outcome yet"
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
