"""Run the crash/resume suite N times in a row; stop at the first failing round.

python tests/crash/repeat.py 20            # prints one line per round and a summary
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    extra = sys.argv[2:]
    durations = []
    for i in range(1, rounds + 1):
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/crash", "-q", "-p", "no:cacheprovider", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        took = time.monotonic() - start
        durations.append(took)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "(no output)"
        print(f"round {i:2d}/{rounds}: {summary} ({took:.0f} s)", flush=True)
        if proc.returncode != 0:
            print(proc.stdout[-5000:])
            print(proc.stderr[-2000:], file=sys.stderr)
            print(f"FAILED in round {i} after {i - 1} consecutive passing rounds")
            return 1
    print(f"{rounds} consecutive passing rounds; {sum(durations):.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
