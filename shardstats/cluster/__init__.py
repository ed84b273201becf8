"""Cluster mode (README "Cluster mode"): the replicated event log the nodes share.

``log`` is the interface every caller uses; ``memory`` and ``jetstream`` implement it;
``aiothread`` bridges nats-py's asyncio to trio; ``natsproc`` renders the configuration of
local nats-servers (``tools/spawn.py`` starts them for tests and trials). Only this package
imports nats.
"""
