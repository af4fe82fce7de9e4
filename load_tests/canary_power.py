"""How often the promotion policy's canary test promotes, by true recall gain.

Draws each arm's caught fraud cards as binomials (champion recall 0.50; declines held
high enough that precision and the review budget never decide) and runs
`retrain.policy.canary_test` on them, as the policy does once per canary. Gain 0 is the
false-promotion rate, which should stay under (1 - confidence) / 2.

    python load_tests/canary_power.py [--cards 200] [--trials 4000]
"""

from __future__ import annotations

import argparse

import numpy as np

from fraudstream.retrain.policy import Arm, CanaryStage, canary_test

GAINS = (0.0, 0.05, 0.10, 0.15, 0.20)


def promoted_share(cards: int, gain: float, trials: int, rng: np.random.Generator) -> float:
    """Share of `trials` canaries promoted when the canary's recall is 0.5 + `gain`."""
    stage = CanaryStage()
    wins = 0
    for _ in range(trials):
        old, new = rng.binomial(cards, 0.5), rng.binomial(cards, 0.5 + gain)
        champion = Arm(decisions=100_000, reviews=0, fraud_cards=cards,
                       declined_cards=10 * cards, caught_cards=old)  # fmt: skip
        canary = Arm(decisions=100_000, reviews=0, fraud_cards=cards,
                     declined_cards=10 * cards, caught_cards=new)  # fmt: skip
        wins += canary_test(canary, champion, review_budget=0.01, stage=stage).passed
    return wins / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=200, help="Fraud cards per arm.")
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"| recall gain | promoted ({args.cards} fraud cards per arm, {args.trials} trials) |")
    print("|---|---|")
    for gain in GAINS:
        print(f"| {gain:+.2f} | {promoted_share(args.cards, gain, args.trials, rng):.1%} |")


if __name__ == "__main__":
    main()
