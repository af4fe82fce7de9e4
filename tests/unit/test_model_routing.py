"""Canary routing: a stable share of cards, always the same side for a card."""

from __future__ import annotations

from typing import cast

from fraudstream.scoring.model import ServingModel
from fraudstream.scoring.models import ModelSet

CARDS = [f"card-{i:08d}" for i in range(20_000)]


def test_no_canary_routes_nothing() -> None:
    assert not ModelSet().canary_rows(CARDS).any()


def test_canary_share_is_respected_and_stable_per_card() -> None:
    canary = cast(ServingModel, object())  # routing never touches the model itself
    models = ModelSet(canary=canary, canary_share=0.1)
    routed = models.canary_rows(CARDS)
    assert 0.09 < routed.mean() < 0.11
    assert (models.canary_rows(CARDS) == routed).all()
    wider = ModelSet(canary=canary, canary_share=0.3).canary_rows(CARDS)
    assert (wider | ~routed).all()  # growing the share only adds cards
    assert ModelSet(canary=canary, canary_share=1.0).canary_rows(CARDS).all()
