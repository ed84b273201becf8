"""Optional bearer tokens, separate for ingest (POST) and query (GET), on the app as served:
``/analytics`` answered by the lean front, the other routes by Quart behind it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shardstats.config import Settings
from tests.http.apps import ready_client

NOW = 1_780_000_000_000
POST = f"/analytics?timestamp={NOW}&user=alice&event=click"
GET = f"/analytics?timestamp={NOW}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_guard_each_side_separately(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=str(tmp_path), ingest_token="in-s3cret", query_token="q-s3cret")
    caplog.set_level(logging.DEBUG)
    async with ready_client(settings, NOW) as client:
        for headers in ({}, bearer("wrong"), bearer("q-s3cret"), {"Authorization": "in-s3cret"}):
            response = await client.post(POST, headers=headers)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.post(POST, headers=bearer("in-s3cret"))).status_code == 204

        response = await client.get(GET, headers=bearer("in-s3cret"))
        assert response.status_code == 401
        assert "error" in await response.get_json()
        response = await client.get(GET, headers=bearer("q-s3cret"))
        assert response.status_code == 200
        assert (await response.get_json())["clicks"] == 1
        # Health checks stay open for load balancers.
        assert (await client.get("/healthz")).status_code == 200
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(settings)


async def test_no_tokens_configured_means_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with ready_client(settings, NOW) as client:
        assert (await client.post(POST)).status_code == 204
        assert (await client.post(POST, headers=bearer("anything"))).status_code == 204


BATCH_LINE = f'{{"timestamp": {NOW}, "user": "bob", "event": "click"}}'
RANGE = f"/analytics/range?from={NOW}&to={NOW}"


async def test_every_ingest_route_wants_the_ingest_token_and_every_query_route_the_query_token(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=str(tmp_path), ingest_token="in-tok", query_token="q-tok")
    async with ready_client(settings, NOW) as client:
        for token in ("", "q-tok"):
            response = await client.post(POST, headers=bearer(token) if token else {})
            assert response.status_code == 401
            assert response.body == b""  # POST /analytics answers never have a body
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="shardstats ingest"'
            response = await client.post("/analytics/batch", data=BATCH_LINE,
                                         headers=bearer(token) if token else {})
            assert response.status_code == 401
        for token in ("", "in-tok"):
            for method, url in (("GET", GET), ("HEAD", GET), ("GET", RANGE)):
                response = await client.open(url, method, headers=bearer(token) if token else {})
                assert response.status_code == 401, (method, url)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="shardstats query"'
        # The scheme is case-insensitive (RFC 7235); the token is not.
        assert (await client.post(POST, headers={"Authorization": "bearer in-tok"})
                ).status_code == 204
        assert (await client.post(POST, headers=bearer("IN-TOK"))).status_code == 401
        assert (await client.post(POST, headers={"Authorization": "Basic in-tok"})
                ).status_code == 401
        response = await client.post("/analytics/batch", data=BATCH_LINE, headers=bearer("in-tok"))
        assert response.status_code == 200
        for method, url in (("GET", GET), ("HEAD", GET), ("GET", RANGE)):
            response = await client.open(url, method, headers=bearer("q-tok"))
            assert response.status_code == 200, (method, url)
        response = await client.get(GET, headers=bearer("q-tok"))
        assert (await response.get_json())["clicks"] == 2
        # Only the configured side is guarded: with just an ingest token, reads are open.
    settings = Settings(data_dir=str(tmp_path), ingest_token="in-tok")
    async with ready_client(settings, NOW) as client:
        assert (await client.get(GET)).status_code == 200
        assert (await client.post(POST)).status_code == 401
