"""Write the settings documentation from the one place it is defined, or check it has not drifted.

    .venv/bin/python -m tools.settings_docs          # rewrite the generated parts
    .venv/bin/python -m tools.settings_docs --check  # exit 1 and say which file is stale

Each field of ``shardstats.config.Settings`` carries its description (``_doc``). From them:
- ``config/shardstats.toml``: the whole file (every key, its default, the description above it);
- ``README.md``: the two settings tables (general and cluster mode), between marker comments;
- the OpenAPI document names settings with their defaults through ``shardstats.http.openapi``
  at import time (nothing to write; ``tests/test_config_docs.py`` checks it).
Edit the descriptions in ``shardstats/config.py``, then run this.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from shardstats.config import SettingDoc, describe

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = REPO / "config" / "shardstats.toml"
README = REPO / "README.md"
WIDTH = 96

TOML_HEADER = """\
# shardstats settings: every key, its default, and what it does.
# Precedence: built-in defaults < this file (--config FILE or $SHARDSTATS_CONFIG)
#             < environment variables SHARDSTATS_<KEY> (e.g. SHARDSTATS_BIND) < command-line flags.
# An unknown key is an error, so a typo never goes unnoticed.
# Generated from shardstats/config.py by `python -m tools.settings_docs`: edit the descriptions
# there.
"""
TOML_CLUSTER = ("# -- Cluster mode (README \"Cluster mode\"; needs pip install -e '.[cluster]') "
                "-----------------")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, for the plain text defaults hold
    return repr(value)


def sample_config(settings: list[SettingDoc]) -> str:
    parts = [TOML_HEADER]
    cluster_started = False
    for setting in settings:
        if setting.cluster and not cluster_started:
            parts.append(f"\n{TOML_CLUSTER}\n")
            cluster_started = True
        text = setting.doc + (f" Default: {setting.shown}." if setting.shown else "")
        comment = textwrap.fill(text.replace("`", ""), WIDTH - 2, break_on_hyphens=False)
        parts.append("\n" + textwrap.indent(comment, "# ", lambda line: True) + "\n")
        parts.append(f"{setting.name} = {toml_value(setting.default)}\n")
    return "".join(parts)


def _markdown(text: str) -> str:
    """A table cell: ``<`` only inside backticks (elsewhere it would start HTML); no pipes."""
    outside = text.split("`")[::2]
    if any("<" in piece or ">" in piece for piece in outside) or "|" in text:
        raise ValueError(f"write placeholders in backticks and no '|' in: {text!r}")
    return text


def settings_table(settings: list[SettingDoc]) -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {_markdown(s.default_text)} | {_markdown(s.doc)} |"
             for s in settings]
    return "\n".join(rows) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- settings table: {name} (python -m tools.settings_docs writes it from "
            "shardstats/config.py) -->\n", f"<!-- end of settings table: {name} -->\n")


def readme(text: str, settings: list[SettingDoc]) -> str:
    """``text`` with both tables between their markers rewritten."""
    for name, cluster in (("general", False), ("cluster", True)):
        start, end = _markers(name)
        head, found, rest = text.partition(start)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"README.md lacks the markers of the {name} settings table")
        table = settings_table([s for s in settings if s.cluster == cluster])
        text = head + start + table + end + tail
    return text


def expected() -> dict[Path, str]:
    """Every generated file with the content it should have."""
    settings = describe()
    return {SAMPLE_CONFIG: sample_config(settings),
            README: readme(README.read_text(encoding="utf-8"), settings)}


def stale() -> list[Path]:
    return [path for path, content in expected().items()
            if path.read_text(encoding="utf-8") != content]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a generated file is stale")
    args = parser.parse_args(argv)
    if args.check:
        behind = stale()
        for path in behind:
            print(f"{path.relative_to(REPO)} is stale: run python -m tools.settings_docs",
                  file=sys.stderr)
        return 1 if behind else 0
    for path, content in expected().items():
        if path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
