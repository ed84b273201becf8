"""Typed settings: defaults < TOML file < environment (``SHARDSTATS_*``) < command-line flags.

Every key is a field of ``Settings``; an unknown key in the file or the environment is an
error, never silently kept. ``config/shardstats.toml`` lists every key with its default, and
a test checks the two agree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "SHARDSTATS_"
ENV_CONFIG = "SHARDSTATS_CONFIG"
NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong kind."""


def _doc(text: str) -> Any:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    bind: str = field(default="127.0.0.1:8080", metadata=_doc("HOST:PORT to listen on"))
    data_dir: str = field(
        default="snapshots", metadata=_doc("journals, user dictionary and snapshots live here")
    )
    max_user_bytes: int = field(default=256, metadata=_doc("longest accepted user id, bytes"))
    accept_past_seconds: int = field(
        default=30 * 24 * 3600,
        metadata=_doc("POST rejects timestamps older than now minus this (0: no bound)"),
    )
    accept_future_seconds: int = field(
        default=600, metadata=_doc("POST rejects timestamps beyond now plus this (0: no bound)")
    )
    max_open_shards: int = field(
        default=16, metadata=_doc("hours with an open journal and a running shard task")
    )
    max_cached_hours: int = field(
        default=768,
        metadata=_doc("closed hours whose aggregate stays in memory (range queries read them)"),
    )
    max_range_hours: int = field(
        default=768, metadata=_doc("longest range /analytics/range accepts, in hours")
    )
    max_batch_bytes: int = field(
        default=16 * 1024 * 1024, metadata=_doc("largest /analytics/batch body (413 beyond)")
    )
    max_batch_lines: int = field(
        default=100_000,
        metadata=_doc("most lines in one /analytics/batch body (413 beyond, refused before "
                      "any line is judged)"),
    )
    inbox_size: int = field(
        default=4096, metadata=_doc("queued requests per hour before POST answers 503")
    )
    max_batch: int = field(default=4096, metadata=_doc("most events in one group commit"))
    snapshot_interval_seconds: float = field(
        default=30.0, metadata=_doc("how often an open hour with new events is snapshotted")
    )
    shard_idle_seconds: float = field(
        default=120.0, metadata=_doc("a past hour's shard idle this long is closed")
    )
    preload_hours: int = field(
        default=2, metadata=_doc("recent hours recovered eagerly at start; older ones lazily")
    )
    user_cache_size: int = field(
        default=200_000, metadata=_doc("user id lookups kept in memory (LRU)")
    )
    user_index_tail: int = field(
        default=131_072,
        metadata=_doc("newest user names held in memory before they join the on-disk index"),
    )
    graceful_timeout_seconds: float = field(
        default=10.0, metadata=_doc("on SIGTERM, how long in-flight requests may take")
    )
    backlog: int = field(default=1024, metadata=_doc("listen backlog"))
    log_level: str = field(default="info", metadata=_doc("debug, info, warning or error"))
    log_format: str = field(
        default="text", metadata=_doc("text, or json for one JSON object per line")
    )
    access_log: bool = field(default=False, metadata=_doc("log every request (to stderr)"))
    ingest_token: str = field(
        default="",
        repr=False,  # never in logs or tracebacks
        metadata=_doc("bearer token required for POST (empty: no token needed)"),
    )
    query_token: str = field(
        default="",
        repr=False,
        metadata=_doc("bearer token required for GET /analytics (empty: no token needed)"),
    )
    require_tokens: bool = field(
        default=False, metadata=_doc("refuse to start unless both tokens are set (production)")
    )
    cluster_nats_urls: str = field(
        default="",
        metadata=_doc("comma-separated NATS URLs; empty: embedded mode (no cluster)"),
    )
    cluster_stream: str = field(
        default="shardstats", metadata=_doc("JetStream stream holding the events")
    )
    cluster_replicas: int = field(
        default=3, metadata=_doc("stream replicas when this node creates the stream (1-5)")
    )
    node_name: str = field(
        default="",
        metadata=_doc("names this node to NATS (empty: <hostname>:<bind port>)"),
    )
    cluster_publish_timeout_seconds: float = field(
        default=5.0, metadata=_doc("wait for a PubAck this long before answering 500")
    )
    cluster_read_barrier_timeout_seconds: float = field(
        default=2.0, metadata=_doc("bound on a JetStream request (stream info, read barrier)")
    )
    cluster_duplicate_window_seconds: float = field(
        default=120.0, metadata=_doc("stream window in which a repeated Nats-Msg-Id is dropped")
    )
    cluster_max_lag_seconds: float = field(
        default=30.0,
        metadata=_doc("/healthz answers 503 while this node applies the log later than this"),
    )
    cluster_retention_days: int = field(
        default=0, metadata=_doc("stream max age when this node creates it (0: keep forever)")
    )

    def __post_init__(self) -> None:
        for name in ("max_user_bytes", "max_open_shards", "inbox_size", "max_batch",
                     "max_range_hours", "max_batch_bytes", "max_batch_lines",
                     "user_index_tail"):
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
    def cluster_mode(self) -> bool:
        return bool(self.cluster_nats_url_list)


SETTING_NAMES = tuple(f.name for f in fields(Settings))


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
    for name, value in layer.items():
        if name not in SETTING_NAMES:
            raise ConfigError(f"{source}: unknown setting {name!r}")
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


def describe() -> list[tuple[str, Any, str]]:
    """``(name, default, doc)`` of every setting, for docs and the sample config."""
    return [(f.name, f.default, f.metadata["doc"]) for f in fields(Settings)]
