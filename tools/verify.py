"""Verify a data directory: ``python tools/verify.py [--data-dir DIR] [...]``.

Same as ``shardstats verify``; see ``--help``.
"""

import sys

from shardstats.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", *sys.argv[1:]]))
