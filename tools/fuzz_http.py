"""Long fuzz run of raw HTTP against a real server: ``python tools/fuzz_http.py [N]``.

Runs the fuzz test of ``tests/e2e/test_fuzz_http.py`` with N generated requests (default
100,000; CI runs 600). Exit status is pytest's: 0 when no request produced a 500 or killed
the server.
"""

import os
import subprocess
import sys

if __name__ == "__main__":
    examples = sys.argv[1] if len(sys.argv) > 1 else "100000"
    env = {**os.environ, "FUZZ_HTTP_EXAMPLES": examples}
    sys.exit(subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0",
         "tests/e2e/test_fuzz_http.py"],
        env=env,
    ))
