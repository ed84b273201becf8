"""Structured logs: one parseable JSON object per line when log_format = json."""

from __future__ import annotations

import json
import logging

from shardstats.logs import JsonFormatter


def test_json_lines_carry_level_logger_message_and_exception() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("shardstats.x", logging.WARNING, __file__, 1,
                               "hour %d: %s", (7, 'quote " and\nnewline'), None)
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "shardstats.x"
    assert entry["message"] == 'hour 7: quote " and\nnewline'
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(formatter.format(record))["exception"]
