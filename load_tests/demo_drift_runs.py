"""`fraudctl demo --drift` run after run, each on its own fresh local stack: does every run
show the whole loop (a trigger, a registered challenger, shadow, canary, and promotion or
retirement with the canary test's numbers) before its world ends? One line per run with
the replay day of each step and the fate, then `complete X/N`; exit status 1 if any run
missed a step. Each run gets a temporary state directory (its own Kafka, Redis and
archive on free 127.0.0.1 ports, stopped after it); the runs share a temporary model
registry, so the first one also trains the first model. No run starts past --max-minutes.

    python load_tests/demo_drift_runs.py [--runs 2] [--max-minutes 15] [--show]

--show also prints each run's loop lines (what the README quotes).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAUDCTL = Path(sys.executable).with_name("fraudctl")
STEPS = ("drift trigger", "registered", "shadow", "canary", "fate")
_DAY = re.compile(r"^loop \(day ([0-9.]+)/[0-9]+\): (drift trigger|registered|shadow|canary|"
                  r"promoted|retired) ")  # fmt: skip


def steps_of(output: str) -> dict[str, str]:
    """The replay day of each loop step in a demo's output; `fate` as `retired@35.2`."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        match = _DAY.match(line)
        if match is None:
            continue
        day, step = match.groups()
        if step in ("promoted", "retired"):
            if "canary test at" in line and "fate" not in found:
                found["fate"] = f"{step}@{day}"
        else:
            found.setdefault(step, day)
    return found


def run_once(
    workdir: Path, registry: Path, index: int, timeout_s: float, show: bool = False
) -> tuple[bool, str]:
    """One demo on a fresh stack under `workdir`; (complete, its line)."""
    env = {**os.environ, "FRAUD_STATE_DIR": str(workdir / f"state-{index}"),
           "FRAUD_REGISTRY_DIR": str(registry)}  # fmt: skip
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        env.pop(name, None)  # its own embedded stack
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(FRAUDCTL), "demo", "--drift"], cwd=REPO, env=env, capture_output=True,
            text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = str(exc.stdout or ""), -1
    finally:
        subprocess.run([str(FRAUDCTL), "down"], cwd=REPO, env=env, capture_output=True,
                       timeout=120, check=False)  # fmt: skip
    found = steps_of(output)
    complete = code == 0 and all(step in found for step in STEPS)
    days = " ".join(f"{step} {found.get(step, '-')}" for step in STEPS)
    line = f"run {index}: {'complete' if complete else 'INCOMPLETE'} in " \
           f"{time.monotonic() - started:.0f} s, exit {code}: {days}"  # fmt: skip
    if not complete:
        line += "\n" + "\n".join(output.splitlines()[-15:])
    elif show:
        line += "\n" + "\n".join(x for x in output.splitlines() if not x.startswith("t="))
    return complete, line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--show", action="store_true", help="print each run's loop lines")
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_minutes * 60
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="demo-drift-") as tmp:
        for index in range(args.runs):
            if time.monotonic() > deadline:
                print(f"stopping: --max-minutes {args.max_minutes:g} reached")
                break
            complete, line = run_once(Path(tmp), Path(tmp) / "models", index, 900, args.show)
            results.append(complete)
            print(line, flush=True)
    print(f"complete {sum(results)}/{len(results)}")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
