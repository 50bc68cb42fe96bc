"""A bot that plays goofspiel: bids the smallest card that beats the prize's value, else its lowest.

It decides from its own view, as a person would: its hand, the prize up for
bids; one bid a round, made when the round's prize is first seen.
"""

from __future__ import annotations

from typing import Any

from tickline.bots.world import ClientWorld


class Bidder:
    def __init__(self, player_id: int, seed: int, config: dict[str, Any] | None = None, rate: float = 10) -> None:
        self.player_id = player_id

    def decide(self, world: ClientWorld, now: float) -> dict[str, Any]:
        view = world.view
        hand: list[int] = view.get("hand", [])
        prize = view.get("prize", 0)
        if not hand or not prize or view.get("over"):
            return {"bid": 0}
        above = [card for card in hand if card >= prize]
        return {"bid": min(above) if above else min(hand)}
