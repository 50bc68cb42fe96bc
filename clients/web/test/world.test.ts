// The World on its own: baselines, acks, prediction, interpolation (the vectors hold the rest).

import assert from "node:assert/strict";
import { test } from "node:test";

import { ArenaRules } from "../src/arena.js";
import type { Delta, JsonObject } from "../src/protocol.js";
import { rulesFor } from "../src/rules.js";
import { REDUNDANT_INPUTS, World } from "../src/world.js";

const full = (tick: number, view: JsonObject, seq = 0): Delta => ({ t: "d", tick, base: 0, seq, diff: { s: view } });

test("a delta older than the newest view is stale; one against an unknown base is unusable", () => {
  const world = new World();
  assert.ok(world.onDelta(full(4, { a: 1 })));
  assert.ok(!world.onDelta(full(3, { a: 2 })));
  assert.ok(!world.onDelta({ t: "d", tick: 9, base: 7, seq: 0, diff: {} }));
  assert.ok(world.onDelta({ t: "d", tick: 6, base: 4, seq: 0, diff: { n: { a: 5 } } }));
  assert.deepEqual([world.tick, world.view, world.deltasStale, world.deltasUnusable], [6, { a: 6 }, 1, 1]);
});

test("the input datagram repeats the newest unconfirmed inputs and acks the newest tick", () => {
  const world = new World();
  for (let i = 0; i < 12; i++) world.nextInput({ mx: 1 });
  world.nextInput({ mx: 0 }, undefined, 2);
  world.onDelta(full(8, {}, 3));
  const frame = world.inputFrame();
  assert.equal(frame.ack, 8);
  assert.equal(frame.inputs.length, REDUNDANT_INPUTS);
  assert.deepEqual(frame.inputs.at(-1), [13, { mx: 0 }, 2]);
  assert.equal(world.unconfirmed, 10, "inputs up to the delta's seq are confirmed");
});

test("on the welcome's ack grid the input datagram acks the newest tick held on it, unless that lags", () => {
  const world = new World();
  world.ackEvery = 2;
  world.onDelta(full(4, { a: 1 }));
  world.onDelta({ t: "d", tick: 5, base: 4, seq: 0, diff: {} });
  assert.equal(world.inputFrame().ack, 4, "5 is off the grid: 4, which the room's other players ack too");
  world.onDelta({ t: "d", tick: 6, base: 4, seq: 0, diff: {} });
  assert.equal(world.ack, 6);
  world.onDelta({ t: "d", tick: 11, base: 6, seq: 0, diff: {} });
  assert.equal(world.ack, 11, "the grid's newest held (6) lags 11 by more than two steps: the newest");
  world.ackEvery = 0;
  world.onDelta({ t: "d", tick: 13, base: 11, seq: 0, diff: {} });
  assert.equal(world.ack, 13, "no grid: the newest");
});

test("arena predicts its own player by the server's movement rule, diagonals included", () => {
  const rules = new ArenaRules({ tick_rate: 60, player_speed: 200, width: 1000, height: 1000, view_step: 10 });
  assert.equal(rules.speed, 333); // 200 * 100 // 60
  assert.deepEqual(rules.move(50000, 50000, 1, 1), [50000 + 235, 50000 + 235]); // 333 * 181 // 256
  assert.deepEqual(rules.move(50000, 50000, -1, -1), [50000 - 236, 50000 - 236]); // floor, not truncation
  assert.deepEqual(rules.move(1600, 98500, -1, 1), [1500, 98500]); // the walls, player_radius in
  const world = new World({ rules, playerId: 1 });
  world.onDelta(full(2, { players: { "1": { x: 5000, y: 5000, alive: true } } }, 0));
  world.nextInput({ mx: 1, my: 0 });
  world.nextInput({ mx: 1, my: 0 }, undefined, 2);
  assert.deepEqual(world.predictedSelf(), { x: 5000 + Math.floor((333 * 3) / 10), y: 5000, alive: true });
  world.onDelta({ t: "d", tick: 4, base: 2, seq: 2, diff: {} });
  assert.equal(world.predictedSelf(), world.view["players"] && (world.view["players"] as any)["1"], "nothing left to replay");
});

test("a dead player is not predicted; a game without rules is not predicted", () => {
  const world = new World({ rules: rulesFor("arena", 1, {}), playerId: 1 });
  world.onDelta(full(2, { players: { "1": { x: 10, y: 10, alive: false } } }));
  world.nextInput({ mx: 1 });
  assert.deepEqual(world.predictedSelf(), { x: 10, y: 10, alive: false });
  assert.equal(rulesFor("arena", 99, {}), null, "only the rules versions this client has");
});

test("others are drawn interpTicks behind, blended between the snapshots around that tick", () => {
  const world = new World({ rules: new ArenaRules(), tickRate: 60, interpTicks: 6 });
  world.onDelta(full(10, { players: { "2": { x: 100, y: 0, name: "b" } } }), 1.0);
  world.onDelta({ t: "d", tick: 20, base: 10, seq: 0, diff: { u: { players: { u: { "2": { n: { x: 100 } } } } } } }, 1.0);
  // At now = 1.0 the server is at tick 20; drawn at 14: 40 % of the way from 10 to 20.
  assert.equal(world.renderTick(1.0), 14);
  assert.deepEqual(world.interpolated("players", 1.0), { "2": { x: 140, y: 0, name: "b" } });
  assert.deepEqual(world.interpolated("shots", 1.0), {});
  const inUnits = world.inUnits("players", { x: 140, name: "b" });
  assert.ok(Math.abs((inUnits["x"] as number) - 14) < 1e-9 && inUnits["name"] === "b", "positions in world units");
});

test("a world for a new connection keeps the input numbering and none of the views", () => {
  const world = new World({ playerId: 4 });
  world.nextInput({});
  world.onDelta(full(5, { a: 1 }, 1));
  const again = world.reconnected();
  assert.deepEqual([again.tick, again.view, again.lastSeq, again.serverSeq, again.playerId], [0, {}, 1, 1, 4]);
  assert.ok(again.onDelta(full(3, { a: 2 })), "the new connection starts from a full view at any tick");
});
