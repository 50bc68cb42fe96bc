"""Goofspiel, the second reference game: simultaneous sealed bids with hidden hands.

Nothing like arena: no space, no motion, a low tick rate (10 Hz), turns on a
timer, and views that differ by player for a reason other than distance (each
player sees its own hand; the others' hands and bids stay hidden until a
round is resolved).

The rules, a classic card game for any number of players: each player holds
the cards 1 to ``cards``. Each round a prize card from a shuffled deck of the
same values is shown; until the round's timer runs out, each player may choose
(and change) a card to bid. When it runs out, every bid is revealed at once:
the highest bid wins the prize's value in points, a tie at the top wins nothing,
and every bid card leaves its owner's hand. A player who chose nothing, or a
card no longer in hand, plays its lowest card. After the last prize the highest
score wins (the lowest player id among equals). A player who joins mid-match
gets a full hand and bids from the next round.

Determinism (docs/design.md): integers only, the deck shuffled by the PRNG kept
in ``state["rng"]``, players iterated in sorted order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tickline.shared.game import ConfigError, GameEvent, Rules, State, TickInputs, rng_below, rng_seed
from tickline.shared.schema import Bool, Inputs, Int, ListOf, Table, Text, View

MAX_CARDS = 20

# The replay player's drawing of a round (Rules.draw_hook): the prize card, the last
# round's bids as cards in their bidders' colours, and a followed player's hand.
DRAW_HOOK = """(ctx, view, info) => {
  const d = info.dpr, w = Math.max(24 * d, Math.min(info.width / 9, info.height / 3.5));
  const name = (pid) => info.players[pid] ?? `#${pid}`;
  const text = (s, x, y, size, colour) => {
    ctx.font = `${Math.round(size)}px system-ui, sans-serif`;
    ctx.fillStyle = colour;
    ctx.fillText(s, x, y);
  };
  const card = (x, y, cw, value, colour, caption, bright) => {
    ctx.beginPath();
    ctx.roundRect(x, y, cw, cw * 1.4, cw / 10);
    ctx.fillStyle = bright ? "#f4f1de" : "#202532";
    ctx.fill();
    ctx.lineWidth = Math.max(2, cw / 20);
    ctx.strokeStyle = colour;
    ctx.stroke();
    ctx.textAlign = "center";
    text(String(value), x + cw / 2, y + cw * 0.9, cw * 0.5, bright ? "#0f1117" : colour);
    if (caption) text(caption, x + cw / 2, y + cw * 1.4 + 16 * d, 12 * d, "#8b93a7");
    ctx.textAlign = "left";
  };
  const top = 40 * d;
  const head = view.over ? `match over: ${name(view.winner)} wins` : `round ${view.round} of ${view.rounds}`;
  text(head, 16 * d, 24 * d, 15 * d, "#e6e6e6");
  if (view.prize) card(16 * d, top, w, view.prize, "#ffc107", "prize", true);
  let x = 16 * d + w * 1.5;
  const bids = Object.entries(view.revealed || {});
  if (bids.length) {
    const won = view.last_winner ? `${name(view.last_winner)} won it` : "a tie: nobody won it";
    text(`last round: prize ${view.last_prize}, ${won}`, x, 24 * d, 13 * d, "#8b93a7");
  }
  for (const [pid, r] of bids) {
    card(x, top, w * 0.8, r.bid, info.colourOf(pid), name(pid), Number(pid) === view.last_winner);
    x += w;
  }
  if (view.hand && view.hand.length) {
    const y = top + w * 1.4 + 56 * d;
    text(`${name(info.follow)}'s hand`, 16 * d, y - 8 * d, 13 * d, "#8b93a7");
    const mine = info.colourOf(info.follow);
    view.hand.forEach((c, i) => card(16 * d + i * w * 0.5, y, w * 0.45, c, mine, "", c === view.bid));
  }
}"""


class Goofspiel(Rules):
    name = "goofspiel"
    version = 1
    marks = ("resolved",)
    draw_hook = DRAW_HOOK
    default_rates = (10, 10)
    behaviours: ClassVar[dict[str, str]] = {"bidder": "tickline.bots.goofspiel_bot:Bidder"}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "tick_rate": 10,
            "cards": 13,  # each hand holds 1..cards; the prize deck the same values
            "round_ms": 3000,  # how long players have to bid each round
            "max_players": 8,
        }

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        merged = super().validate_config(config)
        if not 1 <= merged["cards"] <= MAX_CARDS:
            raise ConfigError(f"goofspiel config key 'cards' must be 1 to {MAX_CARDS}, got {merged['cards']}")
        for key in ("tick_rate", "round_ms", "max_players"):
            if merged[key] <= 0:
                raise ConfigError(f"goofspiel config key {key!r} must be positive, got {merged[key]}")
        return merged

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.cards = self.config["cards"]
        self.round_ticks = max(1, self.config["round_ms"] * self.config["tick_rate"] // 1000)
        self._inputs = Inputs(
            controls={"bid": Int(0, self.cards, doc="the card to bid this round; 0: none chosen (yet)")},
            doc="The newest bid before the round's deadline stands; a card no longer in hand plays the lowest.",
        )
        big = 2**31 - 1
        self._view = View(
            tables={
                "players": Table(
                    {
                        "name": Text(32, doc="the name the player joined with"),
                        "score": Int(0, big, doc="points won"),
                        "cards": Int(0, self.cards, doc="cards left in hand (the cards themselves are hidden)"),
                        "ready": Bool(doc="has chosen a bid this round (which one is hidden)"),
                    },
                    doc="Every player in the match.",
                ),
                "revealed": Table(
                    {"bid": Int(1, self.cards, doc="the card this player bid")},
                    doc="The bids of the last resolved round.",
                    key="player id",
                ),
                "hands": Table(
                    {
                        "hand": ListOf(Int(1, self.cards), self.cards, doc="the cards in this player's hand"),
                        "bid": Int(0, self.cards, doc="its sealed bid this round; 0: none yet"),
                    },
                    doc="Every player's hand and sealed bid: in spectator views only (players never get it).",
                    key="player id",
                ),
            },
            values={
                "round": Int(0, self.cards, doc="the round being bid (1..rounds); 0 before the first"),
                "rounds": Int(1, self.cards, doc="how many rounds the match has"),
                "prize": Int(0, self.cards, doc="the value of the prize card up for bids; 0 when none"),
                "deadline": Int(0, big, doc="the tick at which the round's bids are revealed", unit="tick"),
                "hand": ListOf(Int(1, self.cards), self.cards, doc="your cards (only you see them)"),
                "bid": Int(0, self.cards, doc="your bid this round; 0: none yet"),
                "last_prize": Int(0, self.cards, doc="the prize of the last resolved round"),
                "last_winner": Int(0, big, doc="who won it (0: a tie, nobody)"),
                "over": Bool(doc="the match has ended"),
                "winner": Int(0, big, doc="the winner's player id"),
            },
            doc="Each player's view holds its own hand; the others' hands and bids stay hidden.",
        )

    def input_schema(self) -> Inputs:
        return self._inputs  # a bid's bounds depend on the config's number of cards

    def view_schema(self) -> View:
        return self._view  # and so do the view's

    # ------------------------------------------------------------------ state

    def initial_state(self, seed: int) -> State:
        state: State = {
            "tick": 0,
            "rng": rng_seed(seed),
            "players": {},
            "deck": [],
            "round": 0,
            "prize": 0,
            "deadline": 0,
            "last_prize": 0,
            "last_winner": 0,
            "revealed": {},
            "over": False,
            "winner": 0,
        }
        deck = list(range(1, self.cards + 1))
        for i in range(len(deck) - 1, 0, -1):  # Fisher-Yates, with the state's own PRNG
            j = rng_below(state, i + 1)
            deck[i], deck[j] = deck[j], deck[i]
        state["deck"] = deck
        return state

    def load_state(self, data: bytes) -> State:
        state: State = orjson.loads(data)
        for table in ("players", "revealed"):
            state[table] = {int(k): v for k, v in sorted(state[table].items(), key=lambda kv: int(kv[0]))}
        return state

    def is_over(self, state: State) -> bool:
        return bool(state["over"])

    # ------------------------------------------------------------------ the tick

    def step(self, state: State, inputs: TickInputs) -> list[GameEvent]:
        events: list[GameEvent] = []
        if state["over"]:
            return events
        state["tick"] += 1
        tick = state["tick"]
        players = state["players"]
        for pid in sorted(inputs.leaves):
            if players.pop(pid, None) is not None:
                events.append({"k": "leave", "p": pid})
        for pid, name in sorted(inputs.joins):
            if pid not in players:
                players[pid] = {"name": name, "score": 0, "hand": list(range(1, self.cards + 1)), "bid": 0}
                events.append({"k": "join", "p": pid})
        for pid in sorted(inputs.inputs):
            player = players.get(pid)
            if player is not None:
                player["bid"] = inputs.inputs[pid]["bid"]
        if state["round"] == 0 and players:
            self._next_round(state, tick, events)
        elif state["round"] and tick >= state["deadline"]:
            self._resolve(state, events)
            self._next_round(state, tick, events)
        return events

    def _next_round(self, state: State, tick: int, events: list[GameEvent]) -> None:
        if not state["deck"] or not state["players"]:
            self._finish(state, events)
            return
        state["round"] += 1
        state["prize"] = state["deck"].pop()
        state["deadline"] = tick + self.round_ticks
        events.append({"k": "round", "n": state["round"], "prize": state["prize"]})

    def _resolve(self, state: State, events: list[GameEvent]) -> None:
        played: dict[int, int] = {}
        for pid in sorted(state["players"]):
            p = state["players"][pid]
            if not p["hand"]:
                continue
            card = p["bid"] if p["bid"] in p["hand"] else min(p["hand"])  # no choice: the lowest card
            p["hand"].remove(card)
            p["bid"] = 0
            played[pid] = card
        top = max(played.values(), default=0)
        at_top = [pid for pid, card in played.items() if card == top]
        winner = at_top[0] if len(at_top) == 1 else 0
        if winner:
            state["players"][winner]["score"] += state["prize"]
        state["revealed"] = {pid: {"bid": card} for pid, card in played.items()}
        state["last_prize"], state["last_winner"] = state["prize"], winner
        state["prize"] = 0
        events.append({"k": "resolved", "prize": state["last_prize"], "winner": winner})

    def _finish(self, state: State, events: list[GameEvent]) -> None:
        players = state["players"]
        best = max(sorted(players), key=lambda pid: players[pid]["score"], default=0)
        state["over"], state["winner"] = True, best
        events.append({"k": "over", "winner": best})

    # ------------------------------------------------------------------ what a player sees

    def view(self, state: State, player_id: int) -> dict[str, Any]:
        me = state["players"].get(player_id)
        return {
            "players": {
                str(pid): {"name": p["name"], "score": p["score"], "cards": len(p["hand"]), "ready": p["bid"] != 0}
                for pid, p in state["players"].items()
            },
            "revealed": {str(pid): dict(r) for pid, r in state["revealed"].items()},
            "round": state["round"],
            "rounds": self.cards,
            "prize": state["prize"],
            "deadline": state["deadline"],
            "hand": list(me["hand"]) if me else [],
            "bid": me["bid"] if me else 0,
            "last_prize": state["last_prize"],
            "last_winner": state["last_winner"],
            "over": state["over"],
            "winner": state["winner"],
        }

    def spectator_view(self, state: State) -> dict[str, Any]:
        """Everything, hands and sealed bids included: a spectator sees it only after the
        server's spectator delay, and a replay when the match is over."""
        view = self.view(state, 0)
        view["hands"] = {str(pid): {"hand": list(p["hand"]), "bid": p["bid"]} for pid, p in state["players"].items()}
        return view
