"""Static files the server sends as they are (``/tracker.js``, the Swagger UI of ``/docs``),
each with a strong ETag so browsers revalidate with ``If-None-Match`` and get ``304``.

The Swagger UI files come from the ``swagger-ui-py`` package (Swagger UI 5, which renders
OpenAPI 3.1; ``swagger-ui-bundle`` on PyPI still ships 4.x, which refuses 3.1 documents).
Only its ``static/`` folder is read: the package itself is never imported (its import pulls
in its framework handlers and PyYAML).
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.body).hexdigest()[:32]
        object.__setattr__(self, "etag", f'"{digest}"')

    def reply(self, if_none_match: str | None) -> tuple[int, Headers, bytes]:
        """200 with the body, or 304 without it when the client holds this version."""
        headers = [("ETag", self.etag), ("Cache-Control", self.cache_control),
                   *self.extra_headers]
        if if_none_match is not None and _matches(if_none_match, self.etag):
            return 304, headers, b""
        return 200, [("Content-Type", self.content_type), *headers], self.body


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
    """One of ``SWAGGER_FILES``, read on first use (the bundle is 1.5 MB), or None when the
    package is missing."""
    folder = swagger_ui_dir()
    if folder is None or name not in SWAGGER_FILES:
        return None
    # Cached a day, then revalidated: the ETag changes when the package does.
    return Asset((folder / name).read_bytes(), SWAGGER_FILES[name], "public, max-age=86400")
