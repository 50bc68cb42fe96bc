// The generated game types bite: tsc fails this file if a wrong control type-checks.

import assert from "node:assert/strict";
import { test } from "node:test";

import { GameClient } from "../src/client.js";
import type { Arena, Goofspiel } from "../src/index.js";
import { FakeTransport } from "./support.js";

test("a client typed with a game's controls and view accepts them and refuses others", () => {
  const transport = new FakeTransport();
  const client = new GameClient<Arena.Controls, Arena.View>(transport, { storage: null });
  const controls: Partial<Arena.Controls> = { mx: -1, my: 1, fire: true };
  // @ts-expect-error: mx is one of -1, 0 or 1
  const wrong: Partial<Arena.Controls> = { mx: 2 };
  // @ts-expect-error: arena has no control named bid
  const other: Partial<Arena.Controls> = { bid: 3 };
  const bid: Goofspiel.Controls = { bid: 3 };
  const view: Arena.View = { players: {}, shots: {}, pickups: {}, over: false, winner: 0 };
  const x: number | undefined = client.world.view.players?.["1"]?.x;
  assert.deepEqual([controls.mx, wrong.mx, bid.bid, view.winner, x, Object.keys(other)], [-1, 2, 3, 0, undefined, ["bid"]]);
});
