"""Compact closed hours: ``python tools/compact.py [--data-dir DIR] [...]``.

Same as ``shardstats compact``; see ``--help``.
"""

import sys

from shardstats.cli import main

if __name__ == "__main__":
    sys.exit(main(["compact", *sys.argv[1:]]))
