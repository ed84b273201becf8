"""Cluster mode (README "Cluster mode"): the replicated event log the nodes share.

``log`` is the interface every caller uses; ``memory`` and ``jetstream`` implement it;
``aiothread`` bridges nats-py's asyncio to trio; ``natsproc`` runs local nats-servers for
tests and trials. Only this package imports nats.
"""
