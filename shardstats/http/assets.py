"""Static files the server sends as they are (``/tracker.js``, the Swagger UI of ``/docs``),
each with a strong ETag so browsers revalidate with ``If-None-Match`` and get ``304``, and
gzipped once in memory for clients that take it (the Swagger UI bundle: 1.5 MB, 0.4 MB
gzipped).

The Swagger UI files come from the ``swagger-ui-py`` package (Swagger UI 5, which renders
OpenAPI 3.1; ``swagger-ui-bundle`` on PyPI still ships 4.x, which refuses 3.1 documents).
Only its ``static/`` folder is read: the package itself is never imported (its import pulls
in its framework handlers and PyYAML).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

Headers = list[tuple[str, str]]
JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    cache_control: str
    extra_headers: tuple[tuple[str, str], ...] = ()
    etag: str = field(init=False)
    gzipped: bytes | None = field(init=False)  # None when gzip would not make it smaller

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.body).hexdigest()[:32]
        object.__setattr__(self, "etag", f'"{digest}"')
        gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)  # mtime: same bytes
        object.__setattr__(self, "gzipped", gzipped if len(gzipped) < len(self.body) else None)

    def reply(self, if_none_match: str | None, accept_encoding: str | None = None
              ) -> tuple[int, Headers, bytes]:
        """200 with the body (gzipped when the client takes it), or 304 without it when the
        client holds this version. Each encoding has its own (strong) ETag."""
        body, etag, encoding = self.body, self.etag, []
        if self.gzipped is not None and _takes_gzip(accept_encoding):
            body, etag = self.gzipped, self.etag[:-1] + '-gzip"'
            encoding = [("Content-Encoding", "gzip")]
        headers = [("ETag", etag), ("Cache-Control", self.cache_control),
                   ("Vary", "Accept-Encoding"), *self.extra_headers]
        if if_none_match is not None and _matches(if_none_match, etag):
            return 304, headers, b""
        return 200, [("Content-Type", self.content_type), *encoding, *headers], body


def _takes_gzip(accept_encoding: str | None) -> bool:
    """``gzip`` listed in ``Accept-Encoding`` with a q-value above 0, or else ``*`` so listed
    (RFC 9110 12.5.3: ``*`` stands only for codings the header does not name, so ``*,
    gzip;q=0`` refuses gzip). An unreadable q-value counts as a refusal."""
    weights: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        name, *params = item.split(";")
        name = name.strip().lower()
        if name not in ("gzip", "*") or name in weights:
            continue  # a coding named twice: its first entry counts
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        weights[name] = weight
    return weights.get("gzip", weights.get("*", 0.0)) > 0


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or any listed tag, compared weakly (``W/`` ignored)."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def static_asset(name: str, content_type: str, cache_control: str,
                 extra_headers: tuple[tuple[str, str], ...] = ()) -> Asset:
    body = (resources.files("shardstats.http") / "static" / name).read_bytes()
    return Asset(body, content_type, cache_control, extra_headers)


SWAGGER_FILES = {"swagger-ui-bundle.js": JAVASCRIPT, "swagger-ui.css": CSS}


def swagger_ui_dir() -> Path | None:
    """The ``static`` folder of the installed ``swagger-ui-py``, or None without it."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in SWAGGER_FILES) else None


@cache
def swagger_asset(name: str) -> Asset | None:
    """One of ``SWAGGER_FILES``, read and gzipped on first use (some 100 ms for the bundle:
    call it from a worker thread), or None when the package is missing."""
    folder = swagger_ui_dir()
    if folder is None or name not in SWAGGER_FILES:
        return None
    # Cached a day, then revalidated: the ETag changes when the package does.
    return Asset((folder / name).read_bytes(), SWAGGER_FILES[name], "public, max-age=86400")
