"""Cross-origin ingest (``shardstats.http.cors``), through the front that serves real traffic.

Every request goes as raw ASGI into the app the server runs (``create_app``), so the
headers are exactly the ones sent; the browser itself is in ``tests/e2e/test_tracker.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shardstats.clock import FixedClock
from shardstats.config import Settings
from shardstats.http.app import create_app
from shardstats.http.cors import REFUSED_REASON, BrowserOrigins, Verdict
from shardstats.shards.service import Service
from tests.http.conftest import NOW_MS, RawResponse, raw_asgi, running_app

SITE = b"https://www.example.com"
OTHER = b"https://evil.example"
TOKEN = "in-s3cret"
POST_QS = f"timestamp={NOW_MS}&user=alice&event=click".encode()
BATCH = (b'{"timestamp": %d, "user": "bob", "event": "impression", "id": "e1"}\n'
         b'{"timestamp": %d, "user": "bob", "event": "click", "id": "e2"}' % (NOW_MS, NOW_MS))


def settings(**more: Any) -> dict[str, Any]:
    return {"browser_origins": "https://www.example.com, http://127.0.0.1:9",
            "ingest_token": TOKEN, **more}


def header_dict(response: RawResponse) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in response.raw_headers}


async def test_listed_origin_posts_without_token_and_gets_cors_headers(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings()) as h:
        single = await raw_asgi(h.app, "POST", "/analytics", POST_QS,
                                headers=[(b"origin", SITE), (b"host", b"stats.example")])
        assert single.status_code == 204
        assert single.body == b""
        assert header_dict(single)["access-control-allow-origin"] == SITE.decode()
        assert header_dict(single)["vary"] == "Origin"
        assert header_dict(single)["access-control-allow-credentials"] == "true"

        batch = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=BATCH,
                               headers=[(b"origin", SITE), (b"content-type", b"text/plain")])
        assert batch.status_code == 200, batch.body
        assert json.loads(batch.body)["accepted"] == 2
        headers = header_dict(batch)
        assert headers["access-control-allow-origin"] == SITE.decode()
        assert "X-Shardstats-Error" in headers["access-control-expose-headers"]
        # A re-sent beacon (same event ids) is acknowledged and counted once.
        again = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=BATCH,
                               headers=[(b"origin", SITE)])
        assert json.loads(again.body)["accepted"] == 2
        assert await h.counts(NOW_MS) == {"clicks": 2, "impressions": 1, "unique_users": 2}


async def test_errors_to_a_listed_origin_are_readable(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings()) as h:
        bad = await raw_asgi(h.app, "POST", "/analytics", b"timestamp=x&user=a&event=click",
                             headers=[(b"origin", SITE)])
        assert bad.status_code == 400
        headers = header_dict(bad)
        assert headers["access-control-allow-origin"] == SITE.decode()
        assert "x-shardstats-error" in headers
        exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
        assert {name for name in headers if name.startswith("x-shardstats-error")} <= exposed


async def test_unlisted_origins_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings()) as h:
        for origin in (OTHER, b"null", b"https://www.example.com.evil.example",
                       b"http://www.example.com"):  # another scheme is another origin
            for token in ([], [(b"authorization", f"Bearer {TOKEN}".encode())]):
                single = await raw_asgi(h.app, "POST", "/analytics", POST_QS,
                                        headers=[(b"origin", origin), *token])
                assert single.status_code == 403
                assert single.body == b""
                assert header_dict(single)["x-shardstats-error"] == REFUSED_REASON
                assert "access-control-allow-origin" not in header_dict(single)
                batch = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=BATCH,
                                       headers=[(b"origin", origin), *token])
                assert batch.status_code == 403
                assert json.loads(batch.body) == {"error": REFUSED_REASON}
                assert "access-control-allow-origin" not in header_dict(batch)
        assert await h.counts(NOW_MS) == {"clicks": 0, "impressions": 0, "unique_users": 0}


async def test_empty_allowlist_refuses_every_foreign_origin(tmp_path: Path) -> None:
    async with running_app(tmp_path) as h:  # the default: browser_origins = ""
        response = await raw_asgi(h.app, "POST", "/analytics", POST_QS,
                                  headers=[(b"origin", SITE)])
        assert response.status_code == 403


async def test_server_to_server_and_same_origin_keep_the_token_rules(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings()) as h:
        bearer = (b"authorization", f"Bearer {TOKEN}".encode())
        assert (await raw_asgi(h.app, "POST", "/analytics", POST_QS)).status_code == 401
        assert (await raw_asgi(h.app, "POST", "/analytics", POST_QS,
                               headers=[bearer])).status_code == 204
        batch = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=BATCH)
        assert batch.status_code == 401
        # A page of the server itself (the /docs "try it out"): Origin is the Host.
        own = [(b"origin", b"http://stats.example:8080")]
        host = [(b"host", b"Stats.Example:8080")]
        response = await raw_asgi(h.app, "POST", "/analytics", POST_QS, headers=own + host)
        assert response.status_code == 401
        response = await raw_asgi(h.app, "POST", "/analytics", POST_QS,
                                  headers=[*own, *host, bearer])
        assert response.status_code == 204
        assert "access-control-allow-origin" not in header_dict(response)


async def test_preflight(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings()) as h:
        asks = [(b"access-control-request-method", b"POST"),
                (b"access-control-request-headers", b"content-type")]
        for path in ("/analytics", "/analytics/batch"):
            response = await raw_asgi(h.app, "OPTIONS", path, b"",
                                      headers=[(b"origin", SITE), *asks])
            assert response.status_code == 204
            headers = header_dict(response)
            assert headers["access-control-allow-origin"] == SITE.decode()
            assert headers["access-control-allow-methods"] == "POST"
            assert headers["access-control-allow-headers"].lower() == "content-type"
            # A beacon always carries credentials: without this its POST is never sent.
            assert headers["access-control-allow-credentials"] == "true"
            assert "content-length" not in headers
            refused = await raw_asgi(h.app, "OPTIONS", path, b"",
                                     headers=[(b"origin", OTHER), *asks])
            assert refused.status_code == 403
            assert "access-control-allow-origin" not in header_dict(refused)
            # OPTIONS that is no preflight: as before, not a method of these routes.
            assert (await raw_asgi(h.app, "OPTIONS", path, b"")).status_code == 405


async def test_other_routes_ignore_origin(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings(query_token="q")) as h:
        response = await raw_asgi(h.app, "GET", "/analytics", f"timestamp={NOW_MS}".encode(),
                                  headers=[(b"origin", SITE)])
        assert response.status_code == 401  # queries keep their token, browsers or not
        assert "access-control-allow-origin" not in header_dict(response)
        health = await raw_asgi(h.app, "GET", "/healthz", b"", headers=[(b"origin", OTHER)])
        assert health.status_code == 200


async def test_refusals_and_preflights_are_in_the_request_metrics(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings()) as h:
        await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=BATCH,
                       headers=[(b"origin", OTHER)])
        await raw_asgi(h.app, "OPTIONS", "/analytics/batch", b"",
                       headers=[(b"origin", SITE), (b"access-control-request-method", b"POST")])
        text = (await raw_asgi(h.app, "GET", "/metrics", b"")).body.decode()
        assert ('shardstats_request_seconds_count{method="POST",route="/analytics/batch",'
                'status="403"} 1.0') in text
        assert ('shardstats_request_seconds_count{method="OPTIONS",route="/analytics/batch",'
                'status="204"} 1.0') in text


@pytest.mark.parametrize(("origin", "host", "verdict"), [
    (None, b"stats.example", Verdict.ORDINARY),
    (b"https://www.example.com", None, Verdict.ALLOWED),
    (b"HTTPS://WWW.EXAMPLE.COM", b"stats.example", Verdict.ALLOWED),
    (b"http://[::1]:8000", b"stats.example", Verdict.ALLOWED),
    (b"https://stats.example", b"STATS.example", Verdict.ORDINARY),  # its own page
    (b"http://127.0.0.1:8080", b"127.0.0.1:8080", Verdict.ORDINARY),
    (b"http://127.0.0.1:8081", b"127.0.0.1:8080", Verdict.REFUSED),
    (b"https://www.example.com:443", b"stats.example", Verdict.REFUSED),  # not as browsers
    (b"null", b"stats.example", Verdict.REFUSED),
    (b"stats.example", b"stats.example", Verdict.REFUSED),
    (b"https://evil.example", None, Verdict.REFUSED),
])
def test_judge(origin: bytes | None, host: bytes | None, verdict: Verdict) -> None:
    origins = BrowserOrigins(frozenset({"https://www.example.com", "http://[::1]:8000"}))
    assert origins.judge(origin, host) is verdict


async def test_a_503_to_a_listed_origin_is_readable(tmp_path: Path) -> None:
    """Not ready (no lifespan: the service never started): the page can read the 503 and
    its Retry-After, on both ingest routes."""
    config = Settings(data_dir=str(tmp_path), browser_origins=SITE.decode())
    app = create_app(config, Service(config, clock=FixedClock(NOW_MS)))
    for path, query, body in (("/analytics", POST_QS, b""), ("/analytics/batch", b"", BATCH)):
        response = await raw_asgi(app, "POST", path, query, body=body,
                                  headers=[(b"origin", SITE)])
        assert response.status_code == 503, path
        headers = header_dict(response)
        assert headers["access-control-allow-origin"] == SITE.decode()
        assert int(headers["retry-after"]) >= 1
        assert "Retry-After" in headers["access-control-expose-headers"]


async def test_a_listed_origins_batch_is_capped_at_browser_max_batch_bytes(
        tmp_path: Path) -> None:
    """A listed origin posts without a token, so anyone naming it could post 16 MiB batches;
    browsers' beacons and keepalive requests carry at most 64 KiB, and that is the cap."""
    line = b'{"timestamp": %d, "user": "u%%06d", "event": "click"}\n' % NOW_MS
    body = b"".join(line % i for i in range(2_000))  # ~100 KiB
    assert len(body) > 64 * 1024
    async with running_app(tmp_path, **settings()) as h:
        big = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=body,
                             headers=[(b"origin", SITE)])
        assert big.status_code == 413
        assert header_dict(big)["access-control-allow-origin"] == SITE.decode()
        # Declared up front: refused on the header, the same way.
        declared = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=body,
                                  headers=[(b"origin", SITE),
                                           (b"content-length", str(len(body)).encode())])
        assert declared.status_code == 413
        assert await h.counts(NOW_MS) == {"clicks": 0, "impressions": 0, "unique_users": 0}
        # The same body with the ingest token (no browser) is taken: max_batch_bytes applies.
        tokened = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=body,
                                 headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
        assert tokened.status_code == 200, tokened.body
        assert json.loads(tokened.body)["accepted"] == 2_000
        # Just under the cap is fine from the browser too.
        small = body[:64 * 1024]
        small = small[:small.rindex(b"\n") + 1]
        fits = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=small,
                              headers=[(b"origin", SITE)])
        assert fits.status_code == 200, fits.body


async def test_the_browser_cap_is_a_setting(tmp_path: Path) -> None:
    async with running_app(tmp_path, **settings(browser_max_batch_bytes=100)) as h:
        refused = await raw_asgi(h.app, "POST", "/analytics/batch", b"", body=BATCH,
                                 headers=[(b"origin", SITE)])
        assert len(BATCH) > 100
        assert refused.status_code == 413


async def test_a_refusal_varies_on_origin(tmp_path: Path) -> None:
    """The answer depends on Origin: a cache must not hand one origin's 403 to another."""
    async with running_app(tmp_path, **settings()) as h:
        for path, qs, body in (("/analytics", POST_QS, b""), ("/analytics/batch", b"", BATCH)):
            refused = await raw_asgi(h.app, "POST", path, qs, body=body,
                                     headers=[(b"origin", OTHER)])
            assert refused.status_code == 403
            assert header_dict(refused)["vary"] == "Origin"
