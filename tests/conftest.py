"""Shared test settings."""

from hypothesis import settings

# Shared, noisy machines: a slow example is not a failure (speed is the benchmarks' job).
settings.register_profile("shardstats", deadline=None)
settings.load_profile("shardstats")
