"""The review service's timing-sensitive guarantees, many times over: two reviewers racing
for the same cases (never both win) and the label relay killed at each fault point (every
verdict on `fraud.labels` exactly once), on SQLite and PostgreSQL.

Starts one private embedded stack (Kafka + Redis on free ports under a temporary
directory, stopped at the end) and runs the tests against it --runs times in fresh pytest
processes (each starts its own PostgreSQL). One line per run, then `passed X/N`; exit
status 1 if any run failed. Runs are not started past --max-minutes.

    python load_tests/review_stress.py [--runs 10] [--max-minutes 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services"))

from fraudstream.localstack.stack import LocalStack  # noqa: E402
from fraudstream.settings import CommonSettings  # noqa: E402

TESTS = (
    "tests/integration/test_review_store.py::test_two_reviewers_never_hold_the_same_case",
    "tests/integration/test_review_service.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=30.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_minutes * 60
    with tempfile.TemporaryDirectory(prefix="review-stress-") as work:
        settings = CommonSettings(state_dir=Path(work) / "stack",
                                  cache_dir=Path(os.environ.get("FRAUD_CACHE_DIR",
                                                                REPO / ".cache")))  # fmt: skip
        stack = LocalStack(settings)
        stack.up(say=lambda _line: None)
        try:
            state = stack.load()
            assert state is not None
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": state.kafka_bootstrap,
                   "REDIS_URL": state.redis_url}  # fmt: skip
            passed = ran = 0
            for run in range(1, args.runs + 1):
                if time.monotonic() > deadline:
                    print(f"stopping: --max-minutes {args.max_minutes:g} reached")
                    break
                started = time.monotonic()
                result = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                    cwd=REPO, env=env, capture_output=True, text=True,
                    timeout=max(60.0, deadline - time.monotonic() + 300), check=False,
                )  # fmt: skip
                ran += 1
                summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
                ok = result.returncode == 0
                passed += ok
                print(f"run {run}: {'ok  ' if ok else 'FAIL'} {time.monotonic() - started:5.1f} s"
                      f"  {summary}", flush=True)  # fmt: skip
                if not ok:
                    print(result.stdout[-4000:])
            print(f"passed {passed}/{ran}")
            return 0 if passed == ran and ran > 0 else 1
        finally:
            stack.down(say=lambda _line: None)


if __name__ == "__main__":
    raise SystemExit(main())
