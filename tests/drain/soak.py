"""The drain crash scenario (:mod:`tests.drain.scenario`) with N kills of the drain's process.

python tests/drain/soak.py 20 [SEED]      # one row per kill, then the checks and a summary
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.drain import scenario  # noqa: E402


def main() -> int:
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int(time.time())
    print(f"drain crash soak: {kills} kills, seed {seed}")
    print("| kill | moment (event:count) | killed | guests moved after | s |")
    print("|---:|---|---|---:|---:|")
    rows: list[scenario.Kill] = []

    def report(k: scenario.Kill) -> None:
        rows.append(k)
        print(
            f"| {len(rows)} | {k.spec} | {'yes' if k.killed else 'no (drain ended)'} | "
            f"{k.moved} | {k.seconds:.1f} |",
            flush=True,
        )

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ferry-drain-soak-") as tmp:
        try:
            d = scenario.run(Path(tmp), kills=kills, seed=seed, report=report)
        except AssertionError as exc:
            print(f"FAILED after {len(rows)} kills (seed {seed}): {exc}")
            return 1
    moved = sum(1 for g in d.guests if g.state == "completed")
    killed = sum(1 for k in rows if k.killed)
    print(
        f"{killed} kills, then `ferry resume`: drain {d.status}, {moved} of 50 guests moved, "
        f"every check passed; {time.monotonic() - start:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
