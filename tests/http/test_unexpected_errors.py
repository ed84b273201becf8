"""A bug in a commit (an error that is neither SQLite's nor the OS's) is not a storage error.

It must reach the log with its traceback, answer 500, and leave the hour as a failed storage
commit would: memory unchanged, journal reopened (and caught up) by the next commit.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from shardstats.storage.journal import Journal
from shardstats.storage.users import UserStore

from .conftest import NOW_MS, Harness
from .test_contract import valid

ONE = {"unique_users": 1, "clicks": 1, "impressions": 0}
TWO = {"unique_users": 2, "clicks": 2, "impressions": 0}


def tracebacks_of(caplog: pytest.LogCaptureFixture, kind: type[BaseException]) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.exc_info is not None and isinstance(record.exc_info[1], kind)]


def break_append(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy_append(journal: Journal, events: Any, uids: Any, *rest: Any) -> Any:
        raise TypeError("a programming mistake")

    monkeypatch.setattr(Journal, "append", buggy_append)


async def test_a_bug_in_a_journal_commit_is_logged_with_its_traceback_and_500(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.event(NOW_MS, "alice")
    break_append(monkeypatch)
    with caplog.at_level(logging.ERROR):
        response = await harness.post(valid(user="bob"))
    assert response.status_code == 500
    assert await response.get_data() == b""
    assert tracebacks_of(caplog, TypeError), [r.getMessage() for r in caplog.records]
    assert await harness.counts(NOW_MS) == ONE  # memory unchanged
    monkeypatch.undo()
    await harness.event(NOW_MS, "carol")  # the journal is reopened and works
    assert await harness.counts(NOW_MS) == TWO


async def test_a_bug_in_a_batch_commit_is_not_called_a_storage_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    break_append(monkeypatch)
    line = json.dumps({"timestamp": NOW_MS, "user": "bob", "event": "click"}).encode()
    with caplog.at_level(logging.ERROR):
        response = await harness.request("POST", "", "/analytics/batch", body=line)
    assert response.status_code == 200
    report = json.loads(await response.get_data())
    assert report["results"] == ["failed: internal error"]
    assert report["failed"] == 1 and report["accepted"] == 0
    assert tracebacks_of(caplog, TypeError)


async def test_a_bug_in_a_dictionary_commit_is_logged_with_its_traceback_and_500(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.event(NOW_MS, "alice")

    def buggy_assign(store: UserStore, names: Any) -> Any:
        raise AttributeError("a programming mistake")

    monkeypatch.setattr(UserStore, "assign", buggy_assign)
    with caplog.at_level(logging.ERROR):
        response = await harness.post(valid(user="bob"))  # a new user: the dictionary commits
    assert response.status_code == 500
    assert tracebacks_of(caplog, AttributeError), [r.getMessage() for r in caplog.records]
    assert await harness.counts(NOW_MS) == ONE
    monkeypatch.undo()
    await harness.event(NOW_MS, "carol")
    assert await harness.counts(NOW_MS) == TWO
