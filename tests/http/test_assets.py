"""Static files: /tracker.js and the Swagger UI files of /docs, with ETags and 304s."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from shardstats.http.assets import Asset
from tests.http.conftest import RawResponse, raw_asgi, running_app


def header_dict(response: RawResponse) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in response.raw_headers}


@pytest.mark.parametrize(("path", "kind"), [
    ("/tracker.js", "text/javascript"),
    ("/docs/swagger-ui-bundle.js", "text/javascript"),
    ("/docs/swagger-ui.css", "text/css"),
])
async def test_served_with_an_etag_and_revalidated(tmp_path: Path, path: str, kind: str) -> None:
    async with running_app(tmp_path) as h:
        first = await raw_asgi(h.app, "GET", path, b"")
        assert first.status_code == 200
        headers = header_dict(first)
        assert headers["content-type"].startswith(kind)
        assert "max-age=" in headers["cache-control"]
        etag = headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        assert int(headers["content-length"]) == len(first.body) > 0

        for if_none_match in (etag, f'"other", W/{etag}', "*"):
            again = await raw_asgi(h.app, "GET", path, b"",
                                   headers=[(b"if-none-match", if_none_match.encode())])
            assert again.status_code == 304, if_none_match
            assert again.body == b""
            assert header_dict(again)["etag"] == etag
            assert "content-length" not in header_dict(again)
            assert "content-type" not in header_dict(again)
        stale = await raw_asgi(h.app, "GET", path, b"", headers=[(b"if-none-match", b'"x"')])
        assert stale.status_code == 200
        assert stale.body == first.body
        # Gzipped for clients that take it: its own ETag, the same bytes once decompressed.
        gz = await raw_asgi(h.app, "GET", path, b"",
                            headers=[(b"accept-encoding", b"br, gzip;q=0.8")])
        assert gz.status_code == 200
        gz_headers = header_dict(gz)
        assert gz_headers["content-encoding"] == "gzip"
        assert gzip.decompress(gz.body) == first.body and len(gz.body) < len(first.body)
        assert gz_headers["etag"] != etag and gz_headers["vary"] == "Accept-Encoding"
        again = await raw_asgi(h.app, "GET", path, b"", headers=[
            (b"accept-encoding", b"gzip"), (b"if-none-match", gz_headers["etag"].encode())])
        assert again.status_code == 304
        for refused in (b"gzip;q=0", b"identity", b"br"):
            plain = await raw_asgi(h.app, "GET", path, b"",
                                   headers=[(b"accept-encoding", refused)])
            assert "content-encoding" not in header_dict(plain)
            assert plain.body == first.body
        head = await raw_asgi(h.app, "HEAD", path, b"")  # the server drops its body
        assert head.status_code == 200
        assert header_dict(head)["etag"] == etag


async def test_tracker_script_is_self_contained(tmp_path: Path) -> None:
    async with running_app(tmp_path) as h:
        script = (await raw_asgi(h.app, "GET", "/tracker.js", b"")).body.decode()
        headers = header_dict(await raw_asgi(h.app, "GET", "/tracker.js", b""))
    assert headers["cross-origin-resource-policy"] == "cross-origin"
    assert len(script.encode()) < 8 * 1024  # small: no framework, no build step
    assert "sendBeacon" in script and "keepalive: true" in script
    assert "data-shardstats-click" in script and "localStorage" in script
    # No code from anywhere else: no imports, no other script loaded, no other host named.
    assert not re.search(r"\bimport\b|createElement\(\s*['\"]script|https?://(?!stats\.example)",
                         script)


def test_etag_follows_the_content() -> None:
    one = Asset(b"a", "text/plain", "no-cache")
    assert one.etag == Asset(b"a", "text/plain", "no-cache").etag
    assert one.etag != Asset(b"b", "text/plain", "no-cache").etag
    assert one.reply(None)[0] == 200
    assert one.reply(one.etag)[0] == 304
    assert one.reply(one.etag.strip('"'))[0] == 200  # an unquoted tag is not the tag


@pytest.mark.parametrize(("accept_encoding", "gzipped"), [
    ("gzip", True),
    ("GZIP", True),
    ("deflate, gzip ;q=0.9", True),
    ("*", True),
    ("gzip;q=0", False),
    ("*;q=0", False),
    ("identity", False),
    # RFC 9110 12.5.3: "*" stands for codings not listed; a listed gzip;q=0 refuses gzip.
    ("*, gzip;q=0", False),
    ("gzip;q=0, *", False),
    # q is one parameter among others, in any order.
    ("br, gzip;level=1;q=0.5", True),
    ("gzip;q=0;level=1", False),
    (None, False),
])
def test_gzip_only_where_the_client_takes_it(accept_encoding: str | None, gzipped: bool) -> None:
    asset = Asset(b"abc " * 100, "text/plain", "no-cache")
    status, headers, body = asset.reply(None, accept_encoding)
    assert status == 200
    assert (("Content-Encoding", "gzip") in headers) is gzipped
    assert (gzip.decompress(body) if gzipped else body) == asset.body
