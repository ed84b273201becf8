"""Shared test settings."""

import functools
import inspect
import ssl
from collections.abc import Callable

import httpx._transports.default as httpx_transports
from hypothesis import settings

# Shared, noisy machines: a slow example is not a failure (speed is the benchmarks' job).
settings.register_profile("shardstats", deadline=None)
settings.load_profile("shardstats")


# httpx builds an SSL context for every client it creates, loading certifi's CA bundle: about
# 70 ms of CPU each on the CI machine, and the tests create thousands of clients (a fresh
# connection per hang-up, per poll of a cluster, the Python client library's own). No test
# speaks TLS: the default case gets one context, built once; any other ``verify`` or ``cert``
# goes to httpx as before.
_create_ssl_context: Callable[..., ssl.SSLContext] = httpx_transports.__dict__["create_ssl_context"]


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return _create_ssl_context()


def _shared_ssl_context(verify: ssl.SSLContext | str | bool = True, cert: object = None,
                        trust_env: bool = True) -> ssl.SSLContext:
    if verify is True and cert is None and trust_env:
        return _default_ssl_context()
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


# Only over the signature it was written for (httpx 0.28): another httpx keeps its own.
if list(inspect.signature(_create_ssl_context).parameters) == ["verify", "cert", "trust_env"]:
    setattr(httpx_transports, "create_ssl_context", _shared_ssl_context)  # noqa: B010
