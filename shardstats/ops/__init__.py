"""Operator tools over a data directory: verify, compact, export, prune.

Library first: each module has one job and returns plain results; ``shardstats.cli`` prints
them. None of them needs the server to be stopped except ``prune`` (see its docstring).
"""
