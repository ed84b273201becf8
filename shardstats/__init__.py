"""shardstats: exact hourly web-traffic aggregates from durable per-hour shards."""

__version__ = "0.1.0"
