"""Process-wide runtime policy for a server process (not for library use)."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Fewer, cheaper collections for a server that allocates in bursts.

    Batch ingest creates hundreds of thousands of short-lived objects per request; with the
    default threshold a full (gen2) pass walks every long-lived object again and again.
    Freezing what exists after start-up (modules, classes, config) takes it out of those
    walks for good, and a larger gen0 threshold makes collections rarer.
    """
    gc.collect()
    gc.freeze()
    threshold0, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(max(threshold0, 10_000), threshold1, threshold2)
