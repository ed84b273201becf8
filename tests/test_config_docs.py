"""The settings are documented in one place (``shardstats/config.py``); everything else that
describes them is written from it and must not drift: the sample config, the README tables,
the OpenAPI descriptions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from shardstats.config import SETTING_NAMES, describe
from shardstats.http.openapi import DOCUMENT
from tools import settings_docs


def test_sample_config_and_readme_tables_are_written_from_the_settings() -> None:
    """Fails when a setting, its default or its description changed and
    ``python -m tools.settings_docs`` was not run (or a generated part was edited by hand)."""
    assert settings_docs.stale() == []
    assert settings_docs.main(["--check"]) == 0


def test_the_check_notices_a_changed_description(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = [s if s.name != "inbox_size" else
               type(s)(s.name, s.default, s.doc + " Changed.", s.shown, s.cluster)
               for s in describe()]
    monkeypatch.setattr(settings_docs, "describe", lambda: changed)
    assert settings_docs.stale() == [settings_docs.SAMPLE_CONFIG, settings_docs.README]


def test_every_setting_is_in_exactly_one_readme_table() -> None:
    text = settings_docs.README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE)
    assert sorted(name for name in rows if name in SETTING_NAMES) == sorted(SETTING_NAMES)


def _descriptions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from _descriptions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _descriptions(item)


def test_openapi_names_each_setting_with_its_current_default() -> None:
    """Every mention of a setting in an OpenAPI description carries the default the settings
    define, so a hand-written default cannot go stale."""
    defaults = {setting.name: setting.default_text for setting in describe()}
    named = set()
    for text in _descriptions(DOCUMENT):
        for name in SETTING_NAMES:
            for match in re.finditer(rf"\b{name}\b", text):
                named.add(name)
                assert text[match.end():].startswith(f" (default {defaults[name]})"), (
                    name, text)
    # The ones the contract depends on are named at all.
    assert {"accept_past_seconds", "accept_future_seconds", "max_user_bytes",
            "max_batch_bytes", "max_batch_lines", "max_range_hours", "ingest_token",
            "query_token"} <= named
