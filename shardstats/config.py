"""Typed settings: defaults < TOML file < environment (``SHARDSTATS_*``) < command-line flags.

Every key is a field of ``Settings``; an unknown key in the file or the environment is an
error, never silently kept. Each field's ``_doc`` is the one description of the setting:
``config/shardstats.toml``, the README's settings tables and the OpenAPI descriptions are
written from it (``python -m tools.settings_docs``), and a test fails when they drift.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shardstats.errors import ConfigError

__all__ = ["ConfigError", "Settings", "load_settings"]

log = logging.getLogger("shardstats.config")

ENV_PREFIX = "SHARDSTATS_"
ENV_CONFIG = "SHARDSTATS_CONFIG"
NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What a browser sends in Origin for a page of an http(s) site: no path, no userinfo.
ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")


def _doc(text: str, *, shown: str | None = None, cluster: bool = False) -> Any:
    """A setting's documentation, the one source of the sample config's comments, the README
    tables and the OpenAPI descriptions (``tools/settings_docs.py`` writes and checks them).
    ``shown``: the default as people read it (``30 days``), when the value alone is opaque;
    ``cluster``: a cluster-mode setting (its own section and table)."""
    return {"doc": text, "shown": shown, "cluster": cluster}


@dataclass(frozen=True)
class Settings:
    bind: str = field(default="127.0.0.1:8080", metadata=_doc(
        "HOST:PORT to listen on. Loopback by default; use 0.0.0.0:PORT to listen on every "
        "interface."))
    data_dir: str = field(default="snapshots", metadata=_doc(
        "Journals, user dictionary and snapshots live here (relative to the working "
        "directory)."))
    max_user_bytes: int = field(default=256, metadata=_doc(
        "Longest accepted user id, in bytes of UTF-8."))
    accept_past_seconds: int = field(default=30 * 24 * 3600, metadata=_doc(
        "POST rejects timestamps older than now minus this many seconds (0: no bound).",
        shown="30 days"))
    accept_future_seconds: int = field(default=600, metadata=_doc(
        "POST rejects timestamps later than now plus this many seconds (0: no bound).",
        shown="10 minutes"))
    max_open_shards: int = field(default=64, metadata=_doc(
        "Hours with an open journal (3 file descriptors each) and a running shard task; the "
        "least recently used past hour is closed to make room (its aggregate stays in memory "
        "and its snapshot is written later, in the background)."))
    max_cached_hours: int = field(default=768, metadata=_doc(
        "Closed hours whose aggregate stays in memory for fast GETs and range queries (least "
        "recently used evicted). Memory per hour is about 2 bytes per distinct user."))
    max_range_hours: int = field(default=768, metadata=_doc(
        "Longest range GET /analytics/range accepts, in hours.", shown="768 (32 days)"))
    max_batch_bytes: int = field(default=16 * 1024 * 1024, metadata=_doc(
        "Largest body POST /analytics/batch accepts, in bytes; larger bodies get 413.",
        shown="16 MiB"))
    max_batch_lines: int = field(default=100_000, metadata=_doc(
        "Most lines one POST /analytics/batch body may have (a final newline does not start "
        "another); more get 413, counted before any line is judged. Bounds the work and the "
        "answer of a body of tiny lines (16 MiB of newlines would otherwise be 16 million "
        "lines)."))
    inbox_size: int = field(default=4096, metadata=_doc(
        "Requests queued per hour before POST answers 503 with Retry-After."))
    max_commit_events: int = field(default=4096, metadata=_doc(
        "Most events written in one group commit (one transaction, one fsync). Its old name "
        "max_batch is still accepted, with a warning."))
    snapshot_interval_seconds: float = field(default=30.0, metadata=_doc(
        "How often an open hour with new events is snapshotted, in seconds."))
    shard_idle_seconds: float = field(default=120.0, metadata=_doc(
        "A past hour's shard idle this many seconds is closed (its snapshot is written in "
        "the background)."))
    preload_hours: int = field(default=2, metadata=_doc(
        "Recent hours recovered eagerly at start (older hours recover on first use)."))
    user_cache_size: int = field(default=200_000, metadata=_doc(
        "User-id lookups kept in memory (oldest inserted dropped first); misses are read "
        "from the user dictionary."))
    user_index_tail: int = field(default=131_072, metadata=_doc(
        "Newest user names held in memory (about 150 bytes each) until a background task "
        "writes them into the user dictionary's on-disk name index (users-index/)."))
    graceful_timeout_seconds: float = field(default=10.0, metadata=_doc(
        "On SIGTERM/SIGINT, how long in-flight requests may take before they are cut, in "
        "seconds."))
    backlog: int = field(default=1024, metadata=_doc(
        "Listen backlog (hypercorn's default of 100 is small for bursts)."))
    log_level: str = field(default="info", metadata=_doc(
        "Log level: debug, info, warning or error."))
    log_format: str = field(default="text", metadata=_doc(
        "Log format: text, or json (one object per line: time, level, logger, message)."))
    access_log: bool = field(default=False, metadata=_doc("Log every request to stderr."))
    ingest_token: str = field(default="", repr=False, metadata=_doc(  # never in logs
        "Bearer token required on POST /analytics and POST /analytics/batch "
        "(`Authorization: Bearer <token>`); empty: none. Prefer the environment "
        "(SHARDSTATS_INGEST_TOKEN) to keep secrets out of files.", shown="empty (off)"))
    query_token: str = field(default="", repr=False, metadata=_doc(
        "Bearer token required on GET /analytics and GET /analytics/range; empty: none.",
        shown="empty (off)"))
    require_tokens: bool = field(default=False, metadata=_doc(
        "Refuse to start unless both tokens are set (see config/production.toml)."))
    browser_origins: str = field(default="", metadata=_doc(
        "Web origins whose pages may send events from a browser (/tracker.js), "
        "comma-separated, e.g. \"https://www.example.com,https://shop.example.com\". A POST "
        "to /analytics or /analytics/batch whose Origin header is listed gets CORS headers and "
        "needs no ingest token; a POST with any other Origin (but the server's own) gets 403. "
        "Empty: no page of another origin may send.", shown="empty (none)"))
    browser_max_batch_bytes: int = field(default=64 * 1024, metadata=_doc(
        "Largest body of a POST /analytics/batch from a listed browser origin (sent without "
        "a token, so anyone may name the origin); larger gets 413. Browsers' beacons and "
        "keepalive requests carry at most 64 KiB; max_batch_bytes still applies if lower.",
        shown="64 KiB"))
    cluster_nats_urls: str = field(default="", metadata=_doc(
        "Comma-separated NATS server URLs, e.g. \"nats://10.0.0.1:4222,nats://10.0.0.2:4222\"; "
        "list every server. Empty: embedded mode, one process, the SQLite journals are the "
        "truth.", shown="empty (embedded mode)", cluster=True))
    cluster_stream: str = field(default="shardstats", metadata=_doc(
        "JetStream stream that holds the events (subjects `<stream>.events` and "
        "`<stream>.events.>`).", cluster=True))
    cluster_replicas: int = field(default=3, metadata=_doc(
        "Stream replicas when this node creates the stream (3 for a 3-server NATS cluster, 1 "
        "for a single nats-server; at most 5). An existing stream keeps its own count; a "
        "difference is logged.", cluster=True))
    node_name: str = field(default="", metadata=_doc(
        "Names this node to NATS (connection name, consumer description); make it unique. "
        "Empty: `<hostname>:<port of bind>`, unique per process on a machine and stable across "
        "restarts.", shown="`<hostname>:<bind port>`", cluster=True))
    cluster_publish_timeout_seconds: float = field(default=5.0, metadata=_doc(
        "How long a POST waits for the PubAck; past it the outcome is unknown and the POST "
        "gets 500.", cluster=True))
    cluster_read_barrier_timeout_seconds: float = field(default=2.0, metadata=_doc(
        "Bound on one JetStream request (stream info, stream and consumer set-up) and on a "
        "GET's wait for this node to apply the log that far (read barrier): past it the GET "
        "answers 503.", cluster=True))
    cluster_duplicate_window_seconds: float = field(default=120.0, metadata=_doc(
        "A message whose Nats-Msg-Id the stream saw within this window is stored only once.",
        cluster=True))
    cluster_max_lag_seconds: float = field(default=30.0, metadata=_doc(
        "/healthz answers 503 (\"lagging\") while the oldest log record this node has not "
        "applied yet is older than this, and while it catches up after a start (\"catching "
        "up\").", cluster=True))
    cluster_retention_days: int = field(default=0, metadata=_doc(
        "Stream max age in days when this node creates the stream (0: keep every event "
        "forever).", shown="0 (forever)", cluster=True))

    def __post_init__(self) -> None:
        for name in ("max_user_bytes", "max_open_shards", "inbox_size", "max_commit_events",
                     "max_range_hours", "max_batch_bytes", "max_batch_lines",
                     "user_index_tail", "browser_max_batch_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_batch_lines >= 2**32:  # line numbers are kept as 32-bit integers
            raise ConfigError("max_batch_lines must be below 2**32")
        for name in ("accept_past_seconds", "accept_future_seconds", "max_cached_hours",
                     "preload_hours", "user_cache_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        for name in ("snapshot_interval_seconds", "shard_idle_seconds",
                     "graceful_timeout_seconds", "cluster_publish_timeout_seconds",
                     "cluster_read_barrier_timeout_seconds",
                     "cluster_duplicate_window_seconds", "cluster_max_lag_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:  # nan <= 0 is False: check finiteness
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.log_format not in {"text", "json"}:
            raise ConfigError("log_format must be text or json")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError("log_level must be debug, info, warning or error")
        if self.require_tokens and not (self.ingest_token and self.query_token):
            raise ConfigError(
                "require_tokens is on but ingest_token or query_token is empty; set "
                "SHARDSTATS_INGEST_TOKEN and SHARDSTATS_QUERY_TOKEN"
            )
        self._check_cluster()
        for origin in self.browser_origin_set:
            if not ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"browser_origins: {origin!r} is not a web origin (scheme://host[:port], "
                    "http or https, no path, no '*')"
                )
        host, sep, port = self.bind.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"bind must be HOST:PORT, got {self.bind!r}")

    def _check_cluster(self) -> None:
        for url in self.cluster_nats_url_list:
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in NATS_SCHEMES or not rest or any(c.isspace() for c in url):
                raise ConfigError(
                    f"cluster_nats_urls: {url!r} is not a NATS URL (nats://HOST:PORT)"
                )
        if not STREAM_NAME.fullmatch(self.cluster_stream):
            raise ConfigError("cluster_stream must be letters, digits, '-' or '_'")
        if not 1 <= self.cluster_replicas <= 5:
            raise ConfigError("cluster_replicas must be 1 to 5 (JetStream's limit)")
        if self.cluster_retention_days < 0:
            raise ConfigError("cluster_retention_days must not be negative")
        if (self.cluster_retention_days
                and self.cluster_duplicate_window_seconds > self.cluster_retention_days * 86400):
            raise ConfigError("cluster_duplicate_window_seconds exceeds cluster_retention_days")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def cluster_nats_url_list(self) -> tuple[str, ...]:
        """The NATS URLs, trimmed; empty in embedded mode."""
        return tuple(u.strip() for u in self.cluster_nats_urls.split(",") if u.strip())

    @property
    def browser_origin_set(self) -> frozenset[str]:
        """The allowed origins, lowercased as browsers send them (trailing ``/`` tolerated)."""
        return frozenset(o.strip().rstrip("/").lower() for o in self.browser_origins.split(",")
                         if o.strip())

    @property
    def cluster_mode(self) -> bool:
        return bool(self.cluster_nats_url_list)


SETTING_NAMES = tuple(f.name for f in fields(Settings))
# Old names still accepted in every layer, with a warning in the log: old -> new.
DEPRECATED_NAMES = {"max_batch": "max_commit_events"}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
                return True
            if isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, (bool, float)):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError):  # TOML arrays, tables and dates reach int() too
        raise ConfigError(f"{source}: {name} must be a {kind}, got {value!r}") from None


def _apply(values: dict[str, Any], layer: Mapping[str, Any], source: str) -> None:
    for given, value in layer.items():
        name = DEPRECATED_NAMES.get(given, given)
        if name not in SETTING_NAMES:
            raise ConfigError(f"{source}: unknown setting {given!r}")
        if name != given:
            if name in layer:
                raise ConfigError(f"{source}: {given!r} is the old name of {name!r}; give "
                                  f"only {name!r}")
            log.warning("%s: setting %r is deprecated, use %r", source, given, name)
        values[name] = _coerce(name, value, source)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Layer the sources; ``config_file`` defaults to ``$SHARDSTATS_CONFIG`` if set."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or environ.get(ENV_CONFIG)
    if path:
        try:
            with open(path, "rb") as handle:
                table = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        _apply(values, table, str(path))
    env_layer = {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != ENV_CONFIG
    }
    _apply(values, env_layer, "environment")
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "flags")
    try:
        return dataclasses.replace(Settings(), **values)
    except TypeError as exc:  # pragma: no cover - guarded by _apply
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class SettingDoc:
    name: str
    default: Any
    doc: str
    shown: str | None  # the default as people read it, when the value alone is opaque
    cluster: bool  # a cluster-mode setting

    @property
    def default_text(self) -> str:
        """The default for people: ``shown``, or the value (``empty`` for an empty string)."""
        if self.shown is not None:
            return self.shown
        value = self.default
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str):
            return f"`{value}`" if value else "empty"
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)


def describe() -> list[SettingDoc]:
    """Every setting with its default and documentation, in definition order."""
    return [SettingDoc(f.name, f.default, f.metadata["doc"], f.metadata["shown"],
                       f.metadata["cluster"]) for f in fields(Settings)]
