// The shared vectors: real matches' frames as the Python client received them, and what
// its ClientWorld made of each. The TypeScript client must reach exactly the same.

import assert from "node:assert/strict";
import { test } from "node:test";

import { GameClient } from "../src/client.js";
import { rulesFor } from "../src/rules.js";
import { b64, FakeTransport, loadVectors, utf8 } from "./support.js";

function check(client: GameClient, step: any, where: string): void {
  const expect = step.expect;
  const world = client.world;
  const now: number = step.now;
  assert.equal(world.tick, expect.tick, `${where}: tick`);
  assert.equal(world.serverSeq, expect.seq, `${where}: seq`);
  assert.equal(world.deltasApplied, expect.applied, `${where}: deltas applied`);
  assert.equal(world.deltasStale, expect.stale, `${where}: stale deltas`);
  assert.equal(world.deltasUnusable, expect.unusable, `${where}: unusable deltas`);
  assert.equal(client.events.length, expect.events, `${where}: events`);
  if ("view" in expect) assert.deepEqual(world.view, expect.view, `${where}: view`);
  assert.deepEqual(world.predictedSelf(), expect.self ?? null, `${where}: predicted self`);
  if ("self_units" in expect) {
    const table = world.rules?.players ?? "players";
    assert.deepEqual(world.inUnits(table, world.predictedSelf()!), expect.self_units, `${where}: units`);
  }
  if ("render_tick" in expect) assert.equal(world.renderTick(now), expect.render_tick, `${where}: render tick`);
  for (const [table, entities] of Object.entries(expect.interpolated ?? {})) {
    assert.deepEqual(world.interpolated(table, now), entities, `${where}: interpolated ${table}`);
  }
  if ("closed" in expect) {
    assert.equal(client.closeReason, expect.closed, `${where}: close reason`);
    assert.ok(client.isClosed, `${where}: closed`);
  }
}

async function replay(name: string, start: (client: GameClient) => Promise<unknown>): Promise<GameClient> {
  const vectors = loadVectors(name);
  let now = 0;
  const transport = new FakeTransport();
  const client = new GameClient(transport, { clock: () => now, storage: null, interpTicks: vectors.interp_ticks });
  const welcomed = start(client);
  assert.equal(utf8(transport.stream[0]!), utf8(b64(vectors.hello)), "the hello, byte for byte");
  let acks = 0;
  for (const [i, step] of vectors.steps.entries()) {
    const where = `${name} step ${i}`;
    now = step.now;
    if ("stream" in step || "datagram" in step) {
      if ("stream" in step) transport.deliverStream(b64(step.stream));
      else transport.deliverDatagram(b64(step.datagram));
      await client.settled();
      if ("sent" in step) {
        // A spectator acknowledges each view it applies.
        acks += 1;
        assert.equal(transport.datagrams.length, acks, `${where}: one ack per view`);
        assert.equal(utf8(transport.datagrams.at(-1)!), step.sent, `${where}: the ack, byte for byte`);
      }
    } else {
      const frame = JSON.parse(step.sent);
      client.sendControls(frame.inputs.at(-1)[1], true);
      acks += 1;
      assert.equal(utf8(transport.datagrams.at(-1)!), step.sent, `${where}: the input datagram, byte for byte`);
    }
    check(client, step, where);
  }
  await welcomed;
  assert.deepEqual(
    client.events.map(({ tick, kind, data }) => ({ tick, kind, data })),
    vectors.events,
  );
  return client;
}

test("an arena player's client rebuilds every view, prediction and interpolation the Python client did", async () => {
  const client = await replay("arena", (c) => c.join("alice"));
  assert.equal(client.playerId, 1);
  assert.equal(client.token.endsWith(".1.vector-token"), true);
  assert.ok(client.world.rules !== null, "arena's rules are built in");
});

test("a goofspiel spectator's client rebuilds every view and acks each one as the Python client did", async () => {
  const vectors = loadVectors("goofspiel");
  const client = await replay("goofspiel", (c) => c.spectate(vectors.spectate));
  assert.ok(client.spectating);
  assert.equal(client.serverTick, client.world.serverSeq);
  assert.throws(() => client.sendControls({ bid: 1 }), /spectators cannot send inputs/);
});

for (const name of ["arena", "goofspiel"]) {
  test(`${name}'s rules in TypeScript declare the tables, interpolated fields and units the Python rules do`, () => {
    const vectors = loadVectors(name);
    const rules = rulesFor(vectors.game, vectors.version, vectors.config);
    assert.ok(rules !== null);
    assert.equal(rules.players, vectors.players);
    const tables = Object.fromEntries(
      Object.entries(rules.tables).map(([table, info]) => [
        table,
        { interpolate: [...info.interpolate], scales: { ...info.scales }, units: { ...(info.units ?? {}) } },
      ]),
    );
    assert.deepEqual(tables, vectors.tables);
  });
}
