"""The archiver's kill -9 test (tests/integration/test_archiver.py), many times over.

Each run is a fresh pytest session (its own embedded Kafka on free ports, stopped at the
end) with a new seed (FRAUD_TEST_SEED): new traffic and new kill moments. One line per
run, then `passed X/N`; exit status 1 if any run failed. No run starts past
--max-minutes; the one running then is bounded by pytest's own timeout.

    python load_tests/archiver_stress.py [--runs 10] [--max-minutes 30] [--seed 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/integration/test_archiver.py::test_kill_minus_nine_archives_every_record_exactly_once"


def repeat(test: str, description: str, defaults: tuple[int, float, int]) -> int:
    """Run the pytest node `test` --runs times with seeds from --seed on (FRAUD_TEST_SEED);
    the exit status (1 if any run failed). `defaults`: runs, max minutes, first seed."""
    runs, minutes, first = defaults
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--max-minutes", type=float, default=minutes)
    parser.add_argument("--seed", type=int, default=first)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_minutes * 60
    passed = done = 0
    for run in range(args.runs):
        if time.monotonic() > deadline:
            print(f"stopping: --max-minutes {args.max_minutes:g} reached")
            break
        seed, started = args.seed + run, time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
            cwd=REPO, env={**os.environ, "FRAUD_TEST_SEED": str(seed)},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        done += 1
        ok = result.returncode == 0
        passed += ok
        tail = "" if ok else " | " + " ".join(result.stdout.strip().splitlines()[-3:])[:600]
        print(f"run {run + 1} seed {seed}: {'pass' if ok else 'FAIL'} "
              f"({time.monotonic() - started:.0f} s){tail}", flush=True)  # fmt: skip
    print(f"passed {passed}/{done}")
    return 0 if passed == done else 1


def main() -> int:
    return repeat(TEST, __doc__.splitlines()[0], (10, 30.0, 100))


if __name__ == "__main__":
    raise SystemExit(main())
