"""The retraining loop's end-to-end test (tests/integration/test_retraining_loop.py),
many times over with new simulation seeds (FRAUD_TEST_SEED): drift, trigger, training,
shadow, canary, promotion and exactly one decision per payment, on each new world. Each
run is a fresh pytest session with its own embedded Kafka and Redis. One line per run,
then `passed X/N`; exit status 1 if any run failed. No run starts past --max-minutes.

    python load_tests/loop_stress.py [--runs 5] [--max-minutes 20] [--seed 11]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archiver_stress import repeat

TEST = "tests/integration/test_retraining_loop.py"

if __name__ == "__main__":
    raise SystemExit(repeat(TEST, __doc__.splitlines()[0], (5, 20.0, 11)))
