"""Cluster-mode settings: defaults, layering (file < env < flags) and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardstats.config import ConfigError, Settings, load_settings

CLUSTER_DEFAULTS = {
    "cluster_nats_urls": "",
    "cluster_stream": "shardstats",
    "cluster_replicas": 3,
    "node_name": "",
    "cluster_publish_timeout_seconds": 5.0,
    "cluster_read_barrier_timeout_seconds": 2.0,
    "cluster_duplicate_window_seconds": 120.0,
    "cluster_retention_days": 0,
}


def test_defaults_are_embedded_mode() -> None:
    settings = load_settings(environ={})
    assert {name: getattr(settings, name) for name in CLUSTER_DEFAULTS} == CLUSTER_DEFAULTS
    assert settings.cluster_mode is False
    assert settings.cluster_nats_url_list == ()


def test_urls_from_the_environment_are_split_and_trimmed() -> None:
    settings = load_settings(environ={
        "SHARDSTATS_CLUSTER_NATS_URLS": " nats://127.0.0.1:4222 ,nats://127.0.0.1:4223,, ",
    })
    assert settings.cluster_mode is True
    assert settings.cluster_nats_url_list == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223")


def test_layering_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'cluster_nats_urls = "nats://a:4222"\ncluster_replicas = 1\nnode_name = "from-file"\n'
        "cluster_retention_days = 30\ncluster_publish_timeout_seconds = 1\n"
    )
    settings = load_settings(
        path,
        environ={"SHARDSTATS_CLUSTER_REPLICAS": "5", "SHARDSTATS_NODE_NAME": "from-env"},
        overrides={"node_name": "from-flag", "cluster_stream": None},
    )
    assert settings.cluster_nats_url_list == ("nats://a:4222",)
    assert settings.cluster_replicas == 5
    assert settings.node_name == "from-flag"
    assert settings.cluster_stream == "shardstats"
    assert settings.cluster_retention_days == 30
    assert settings.cluster_publish_timeout_seconds == 1.0


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("cluster_nats_urls", "127.0.0.1:4222", "not a NATS URL"),
        ("cluster_nats_urls", "http://127.0.0.1:4222", "not a NATS URL"),
        ("cluster_nats_urls", "nats://", "not a NATS URL"),
        ("cluster_stream", "a.b", "cluster_stream"),
        ("cluster_stream", "", "cluster_stream"),
        ("cluster_stream", "events>", "cluster_stream"),
        ("cluster_replicas", 0, "cluster_replicas"),
        ("cluster_replicas", 6, "cluster_replicas"),
        ("cluster_publish_timeout_seconds", 0.0, "cluster_publish_timeout_seconds"),
        ("cluster_read_barrier_timeout_seconds", float("nan"), "cluster_read_barrier"),
        ("cluster_duplicate_window_seconds", -1.0, "cluster_duplicate_window"),
        ("cluster_retention_days", -1, "cluster_retention_days"),
    ],
)
def test_bad_values_are_refused(name: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings(**{name: value})  # type: ignore[arg-type]


def test_duplicate_window_must_fit_in_the_retention() -> None:
    with pytest.raises(ConfigError, match="exceeds"):
        Settings(cluster_retention_days=1, cluster_duplicate_window_seconds=2 * 86400.0)
    Settings(cluster_retention_days=1, cluster_duplicate_window_seconds=86400.0)


def test_wrong_kind_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="cluster_replicas"):
        load_settings(environ={"SHARDSTATS_CLUSTER_REPLICAS": "three"})


def test_readme_lists_every_cluster_key() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in CLUSTER_DEFAULTS:
        assert f"`{name}`" in readme, name
