"""The OpenAPI document covers every route, validates, and the docs page renders offline."""

from __future__ import annotations

import re
from pathlib import Path

from openapi_spec_validator import validate

from shardstats.config import Settings
from shardstats.http.app import create_app
from shardstats.http.hot import ANALYTICS, LEAN_METHODS
from shardstats.http.openapi import DOCUMENT
from shardstats.shards.service import Service
from tests.http.apps import ready_client


def test_document_validates() -> None:
    validate(DOCUMENT)


def test_every_route_and_method_is_documented(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    app = create_app(settings, Service(settings))
    served = {(ANALYTICS, method.lower()) for method in LEAN_METHODS if method != "HEAD"} | {
        (rule.rule, method.lower())
        for rule in app.quart.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert served == documented


async def test_served_document_and_docs_page(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with ready_client(settings) as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        assert await response.get_json() == DOCUMENT
        page = await (await client.get("/docs")).get_data(as_text=True)
        for path in DOCUMENT["paths"]:
            assert f"<code>{path}</code>" in page
        # Offline: nothing is loaded from another host.
        assert not re.search(r"(src|href)=\"https?://", page)
        dashboard = await client.get("/")
        assert dashboard.status_code == 200
        html = await dashboard.get_data(as_text=True)
        assert 'id="chart-users"' in html and not re.search(r"(src|href)=\"https?://", html)
