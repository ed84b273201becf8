"""Settings: defaults < TOML file < environment < flags; unknown keys and wrong types refused.

Every call passes ``environ`` explicitly so the operator's own ``SHARDSTATS_*`` variables can
never leak into a test.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from shardstats.config import (
    ENV_CONFIG,
    SETTING_NAMES,
    ConfigError,
    Settings,
    describe,
    load_settings,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = REPO / "config" / "shardstats.toml"

# The defaults the contract and the operators rely on (Settings may grow more keys).
DEFAULTS = {
    "bind": "127.0.0.1:8080",
    "data_dir": "snapshots",
    "max_user_bytes": 256,
    "accept_past_seconds": 30 * 24 * 3600,
    "accept_future_seconds": 600,
    "max_open_shards": 64,
    "inbox_size": 4096,
    "max_commit_events": 4096,
    "snapshot_interval_seconds": 30.0,
    "shard_idle_seconds": 120.0,
    "preload_hours": 2,
    "user_cache_size": 200_000,
    "user_index_tail": 131_072,
    "graceful_timeout_seconds": 10.0,
    "backlog": 1024,
    "log_level": "info",
    "access_log": False,
}


def write(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults --------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    values = dataclasses.asdict(settings)
    assert {name: values[name] for name in DEFAULTS} == DEFAULTS
    assert settings.data_path == Path("snapshots")


def test_setting_names_and_describe_cover_every_field() -> None:
    assert set(DEFAULTS) <= set(SETTING_NAMES)
    described = describe()
    assert [setting.name for setting in described] == list(SETTING_NAMES)
    defaults = dataclasses.asdict(Settings())
    for setting in described:
        assert setting.default == defaults[setting.name]
        assert isinstance(setting.doc, str)
        assert setting.doc.endswith("."), setting.name  # a sentence, in every place it goes


def test_load_ignores_the_process_environment_when_environ_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("SHARDSTATS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHARDSTATS_BIND", "10.0.0.1:1")
    assert load_settings(environ={}).bind == DEFAULTS["bind"]
    assert load_settings().bind == "10.0.0.1:1"  # environ=None reads os.environ


# -- the file layer --------------------------------------------------------------------------


def test_file_layer(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        bind = "0.0.0.0:9000"
        data_dir = "/var/lib/shardstats"
        max_user_bytes = 64
        snapshot_interval_seconds = 5
        shard_idle_seconds = 2.5
        access_log = true
        log_level = "debug"
        """,
    )
    settings = load_settings(path, environ={})
    assert settings.bind == "0.0.0.0:9000"
    assert settings.data_dir == "/var/lib/shardstats"
    assert settings.max_user_bytes == 64
    assert settings.snapshot_interval_seconds == 5.0
    assert type(settings.snapshot_interval_seconds) is float  # a TOML integer becomes a float
    assert settings.shard_idle_seconds == 2.5
    assert settings.access_log is True
    assert settings.log_level == "debug"
    # Everything the file does not name keeps its default.
    assert settings.inbox_size == DEFAULTS["inbox_size"]
    assert settings.accept_past_seconds == DEFAULTS["accept_past_seconds"]


def test_file_from_the_config_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'bind = "127.0.0.1:7000"\n')
    assert load_settings(environ={ENV_CONFIG: str(path)}).bind == "127.0.0.1:7000"


def test_explicit_file_wins_over_the_config_environment_variable(tmp_path: Path) -> None:
    explicit = write(tmp_path, 'bind = "127.0.0.1:7001"\n', "a.toml")
    from_env = write(tmp_path, 'bind = "127.0.0.1:7002"\n', "b.toml")
    settings = load_settings(explicit, environ={ENV_CONFIG: str(from_env)})
    assert settings.bind == "127.0.0.1:7001"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), environ={}) == Settings()


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'bind = "127.0.0.1:8080"\nmax_users_bytes = 10\n')
    with pytest.raises(ConfigError, match="max_users_bytes"):
        load_settings(path, environ={})


def test_table_in_file_is_an_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nbind = "127.0.0.1:8080"\n')
    with pytest.raises(ConfigError, match="server"):
        load_settings(path, environ={})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(environ={ENV_CONFIG: str(tmp_path / "absent.toml")})


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "bind = \n"), environ={})


@pytest.mark.parametrize(
    "line",
    [
        'max_user_bytes = "lots"',
        "max_user_bytes = 1.5",
        "max_user_bytes = true",
        "inbox_size = 10.0",
        'snapshot_interval_seconds = "soon"',
        "snapshot_interval_seconds = false",
        "bind = 8080",
        "data_dir = 1",
        "log_level = 1",
        'access_log = "maybe"',
        "access_log = 1",
        "access_log = 0.0",
    ],
)
def test_wrong_type_in_file_is_an_error(tmp_path: Path, line: str) -> None:
    name = line.split("=")[0].strip()
    with pytest.raises(ConfigError, match=name):
        load_settings(write(tmp_path, line + "\n"), environ={})


@pytest.mark.parametrize(
    "line",
    [
        "max_user_bytes = [1]",
        "snapshot_interval_seconds = [1.0]",
        "inbox_size = { n = 1 }",
        "backlog = 2024-01-01",
    ],
)
def test_array_table_or_date_for_a_number_is_a_config_error(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, line + "\n"), environ={})


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("max_user_bytes = 0", "max_user_bytes"),
        ("inbox_size = -1", "inbox_size"),
        ("max_commit_events = 0", "max_commit_events"),
        ("max_open_shards = 0", "max_open_shards"),
        ("accept_past_seconds = -1", "accept_past_seconds"),
        ("preload_hours = -1", "preload_hours"),
        ("snapshot_interval_seconds = 0", "snapshot_interval_seconds"),
        ("shard_idle_seconds = -0.5", "shard_idle_seconds"),
        ("graceful_timeout_seconds = 0.0", "graceful_timeout_seconds"),
        ('log_level = "verbose"', "log_level"),
        ('bind = "localhost"', "bind"),
        ('bind = ":8080"', "bind"),
        ('bind = "localhost:http"', "bind"),
        ('bind = "localhost:65536"', "bind"),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, line: str, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(write(tmp_path, line + "\n"), environ={})


def test_zero_window_bounds_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "accept_past_seconds = 0\naccept_future_seconds = 0\n")
    settings = load_settings(path, environ={})
    assert settings.accept_past_seconds == 0
    assert settings.accept_future_seconds == 0


# -- the environment layer -------------------------------------------------------------------


def test_environment_layer() -> None:
    settings = load_settings(
        environ={
            "SHARDSTATS_BIND": "0.0.0.0:9001",
            "SHARDSTATS_DATA_DIR": "/data",
            "SHARDSTATS_MAX_USER_BYTES": "100",
            "SHARDSTATS_SHARD_IDLE_SECONDS": "7.5",
            "SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS": "3",
            "SHARDSTATS_ACCESS_LOG": "yes",
            "SHARDSTATS_LOG_LEVEL": "warning",
            "PATH": "/usr/bin",  # not ours: ignored
            "SHARDSTATSX": "1",  # no underscore: not ours either
        }
    )
    assert settings.bind == "0.0.0.0:9001"
    assert settings.data_dir == "/data"
    assert settings.max_user_bytes == 100
    assert settings.shard_idle_seconds == 7.5
    assert settings.snapshot_interval_seconds == 3.0
    assert settings.access_log is True
    assert settings.log_level == "warning"
    assert settings.inbox_size == DEFAULTS["inbox_size"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_environment_booleans(text: str, expected: bool) -> None:
    assert load_settings(environ={"SHARDSTATS_ACCESS_LOG": text}).access_log is expected


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="max_users_bytes"):
        load_settings(environ={"SHARDSTATS_MAX_USERS_BYTES": "10"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHARDSTATS_MAX_USER_BYTES", "ten"),
        ("SHARDSTATS_MAX_USER_BYTES", "1.5"),
        ("SHARDSTATS_MAX_USER_BYTES", ""),
        ("SHARDSTATS_INBOX_SIZE", "1e3"),
        ("SHARDSTATS_SNAPSHOT_INTERVAL_SECONDS", "soon"),
        ("SHARDSTATS_ACCESS_LOG", "2"),
        ("SHARDSTATS_ACCESS_LOG", ""),
        ("SHARDSTATS_ACCESS_LOG", "enabled"),
        ("SHARDSTATS_BIND", "nowhere"),
        ("SHARDSTATS_LOG_LEVEL", "loud"),
    ],
)
def test_wrong_environment_values_are_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(environ={name: value})


@pytest.mark.parametrize(
    "name", ["snapshot_interval_seconds", "shard_idle_seconds", "graceful_timeout_seconds"]
)
def test_nan_durations_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={f"SHARDSTATS_{name.upper()}": "nan"})


# -- flags and precedence --------------------------------------------------------------------


def test_flags_override_defaults() -> None:
    settings = load_settings(
        environ={}, overrides={"bind": "127.0.0.1:1234", "access_log": True, "inbox_size": 8}
    )
    assert settings.bind == "127.0.0.1:1234"
    assert settings.access_log is True
    assert settings.inbox_size == 8


def test_flags_left_unset_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'bind = "127.0.0.1:5000"\naccess_log = true\n')
    settings = load_settings(
        path, environ={}, overrides={"bind": None, "access_log": None, "data_dir": None}
    )
    assert settings.bind == "127.0.0.1:5000"
    assert settings.access_log is True
    assert settings.data_dir == DEFAULTS["data_dir"]


def test_false_flag_is_not_mistaken_for_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "access_log = true\n")
    assert load_settings(path, environ={}, overrides={"access_log": False}).access_log is False


def test_unknown_flag_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_settings(environ={}, overrides={"nope": 1})


def test_wrong_flag_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match="inbox_size"):
        load_settings(environ={}, overrides={"inbox_size": "many"})


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        bind = "127.0.0.1:1001"
        data_dir = "from-file"
        max_user_bytes = 11
        log_level = "error"
        """,
    )
    environ = {
        "SHARDSTATS_BIND": "127.0.0.1:1002",
        "SHARDSTATS_DATA_DIR": "from-env",
        "SHARDSTATS_INBOX_SIZE": "22",
    }
    flags: dict[str, Any] = {"bind": "127.0.0.1:1003", "max_commit_events": 33}
    settings = load_settings(path, environ=environ, overrides=flags)
    assert settings.bind == "127.0.0.1:1003"  # file < env < flags
    assert settings.data_dir == "from-env"  # file < env
    assert settings.max_user_bytes == 11  # defaults < file
    assert settings.log_level == "error"  # defaults < file
    assert settings.inbox_size == 22  # defaults < env
    assert settings.max_commit_events == 33  # defaults < flags
    assert settings.max_open_shards == DEFAULTS["max_open_shards"]  # defaults


def test_each_layer_is_validated_even_if_a_later_one_overrides_it(tmp_path: Path) -> None:
    # A typo in the file is reported although a flag gives the same setting.
    path = write(tmp_path, "max_user_bytes = 'x'\n")
    with pytest.raises(ConfigError, match="max_user_bytes"):
        load_settings(path, environ={}, overrides={"max_user_bytes": 10})


def test_settings_are_immutable() -> None:
    settings = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bind = "x:1"  # type: ignore[misc]


# -- the sample config file ------------------------------------------------------------------


def test_sample_config_lists_every_key_with_its_default() -> None:
    if not SAMPLE_CONFIG.exists():
        pytest.skip(f"{SAMPLE_CONFIG} is not written yet")
    with SAMPLE_CONFIG.open("rb") as handle:
        table = tomllib.load(handle)
    assert sorted(table) == sorted(SETTING_NAMES)
    defaults = dataclasses.asdict(Settings())
    for name, value in table.items():
        assert value == defaults[name], name
        assert type(value) is type(defaults[name]), name
        if isinstance(value, float):
            assert math.isfinite(value)
    assert load_settings(SAMPLE_CONFIG, environ={}) == Settings()


def test_sample_config_documents_every_key() -> None:
    if not SAMPLE_CONFIG.exists():
        pytest.skip(f"{SAMPLE_CONFIG} is not written yet")
    lines = SAMPLE_CONFIG.read_text(encoding="utf-8").splitlines()
    for name in SETTING_NAMES:
        (index,) = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        assert index > 0
        assert lines[index - 1].startswith("#"), f"{name} has no comment above it"


# -- browser_origins ---------------------------------------------------------------------------


def test_browser_origins_are_parsed_and_lowercased() -> None:
    settings = load_settings(environ={
        "SHARDSTATS_BROWSER_ORIGINS": " https://WWW.Example.com , http://127.0.0.1:8000/,"})
    assert settings.browser_origin_set == {"https://www.example.com", "http://127.0.0.1:8000"}
    assert Settings().browser_origin_set == frozenset()


@pytest.mark.parametrize("origin", [
    "*", "null", "www.example.com", "https://example.com/path", "ftp://example.com",
    "https://user@example.com", "https://example.com:port", "https://*.example.com",
])
def test_browser_origins_must_be_web_origins(origin: str) -> None:
    with pytest.raises(ConfigError, match="browser_origins"):
        Settings(browser_origins=f"https://ok.example,{origin}")


# -- renamed settings ------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["file", "environment", "flags"])
def test_the_old_name_of_a_renamed_setting_still_works_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, layer: str
) -> None:
    """max_batch (events per group commit) is now max_commit_events, beside max_batch_bytes
    (the HTTP body limit): the old key keeps working in every layer, and says so."""
    path = write(tmp_path, "max_batch = 7\n")
    sources: dict[str, tuple[str, dict[str, Any]]] = {  # layer: (its name in the log, args)
        "file": (str(path), {"config_file": path, "environ": {}}),
        "environment": ("environment", {"environ": {"SHARDSTATS_MAX_BATCH": "7"}}),
        "flags": ("flags", {"environ": {}, "overrides": {"max_batch": 7}}),
    }
    source, kwargs = sources[layer]
    with caplog.at_level(logging.WARNING, logger="shardstats.config"):
        settings = load_settings(**kwargs)
    assert settings.max_commit_events == 7
    assert [r.getMessage() for r in caplog.records] == [
        f"{source}: setting 'max_batch' is deprecated, use 'max_commit_events'"]


def test_the_new_name_needs_no_warning_and_wins_in_a_later_layer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shardstats.config"):
        assert load_settings(environ={"SHARDSTATS_MAX_COMMIT_EVENTS": "9"}).max_commit_events == 9
        assert not caplog.records
        settings = load_settings(write(tmp_path, "max_batch = 7\n"),
                                 environ={"SHARDSTATS_MAX_COMMIT_EVENTS": "9"})
    assert settings.max_commit_events == 9  # file < environment, whatever the name


def test_old_and_new_name_in_one_layer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="old name of 'max_commit_events'"):
        load_settings(write(tmp_path, "max_batch = 7\nmax_commit_events = 8\n"), environ={})
    with pytest.raises(ConfigError, match="unknown setting 'max_batch_events'"):
        load_settings(environ={"SHARDSTATS_MAX_BATCH_EVENTS": "7"})
