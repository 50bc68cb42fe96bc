// The codec and delta apply: what shared/protocol.py and shared/delta.py accept and refuse.

import assert from "node:assert/strict";
import { deflateRawSync } from "node:zlib";
import { test } from "node:test";

import { apply, DeltaError } from "../src/delta.js";
import {
  decode,
  decodeDatagram,
  encode,
  encodeStream,
  FrameTooLarge,
  frameForStream,
  hello,
  MalformedFrame,
  MAX_STREAM_FRAME,
  splitPackedDelta,
  StreamDecoder,
  UnknownFrameType,
  unpackDiff,
} from "../src/protocol.js";
import { utf8 } from "./support.js";

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

function packed(tick: number, base: number, seq: number, diff: unknown): Uint8Array {
  const body = deflateRawSync(Buffer.from(JSON.stringify(diff)));
  const out = new Uint8Array(13 + body.length);
  out[0] = 0x7a;
  const view = new DataView(out.buffer);
  view.setUint32(1, tick);
  view.setUint32(5, base);
  view.setUint32(9, seq);
  out.set(body, 13);
  return out;
}

test("a hello leaves out the fields added after version 1 while they are at their defaults", () => {
  assert.equal(utf8(encode(hello("alice"))), '{"version":1,"name":"alice","token":"","caps":["deflate","ack-grid"],"t":"hello"}');
  assert.equal(
    utf8(encode(hello("watcher", { spectate: "abc", follow: 2, caps: [] }))),
    '{"version":1,"name":"watcher","token":"","caps":[],"spectate":"abc","follow":2,"t":"hello"}',
  );
});

test("decoded frames take the defaults of the fields left out", () => {
  const welcome = decode(
    bytes(
      '{"version":1,"player_id":3,"match_id":"m","game":"arena","game_version":1,"tick_rate":60,"send_rate":30,"tick":9,"t":"welcome"}',
    ),
  );
  assert.deepEqual(welcome, {
    t: "welcome",
    version: 1,
    player_id: 3,
    match_id: "m",
    game: "arena",
    game_version: 1,
    tick_rate: 60,
    send_rate: 30,
    tick: 9,
    token: "",
    config: {},
    spectator_delay: 0,
    ack_every: 0,
  });
});

test("the decoder refuses what shared/protocol.py refuses, with the same reasons", () => {
  const cases: [string, RegExp, typeof MalformedFrame][] = [
    ["[1]", /frame is not a JSON object/, MalformedFrame],
    ["{", /frame is not valid JSON/, MalformedFrame],
    ['{"reason":"x"}', /frame has no type tag 't'/, MalformedFrame],
    ['{"t":"nope"}', /unknown frame type "nope"/, UnknownFrameType],
    ['{"t":"bye","reason":"x","extra":1}', /bye frame has unknown field "extra"/, MalformedFrame],
    ['{"t":"d","tick":1,"base":0,"seq":0}', /d frame lacks field "diff"/, MalformedFrame],
    ['{"t":"d","tick":1.5,"base":0,"seq":0,"diff":{}}', /d frame field "tick" has the wrong type/, MalformedFrame],
    ['{"t":"d","tick":true,"base":0,"seq":0,"diff":{}}', /d frame field "tick" has the wrong type/, MalformedFrame],
    ['{"t":"d","tick":1,"base":0,"seq":0,"diff":[]}', /d frame field "diff" has the wrong type/, MalformedFrame],
  ];
  for (const [text, message, kind] of cases) {
    assert.throws(() => decode(bytes(text)), (exc: unknown) => exc instanceof kind && message.test((exc as Error).message));
  }
  assert.throws(() => decode(new Uint8Array([0xff, 0xfe])), MalformedFrame);
  assert.throws(() => decode(bytes('{"t":"bye","reason":"x"}'), 10), FrameTooLarge);
});

test("the stream decoder reassembles frames from any chunking", () => {
  const data = new Uint8Array([
    ...encodeStream({ t: "bye", reason: "one" }),
    ...encodeStream({ t: "ev", tick: 4, kind: "over", data: { winner: 1 } }),
    ...encodeStream({ t: "bye", reason: "three" }),
  ]);
  for (let size = 1; size <= data.length; size += 7) {
    const decoder = new StreamDecoder();
    const frames = [];
    for (let at = 0; at < data.length; at += size) frames.push(...decoder.feed(data.subarray(at, at + size)));
    assert.deepEqual(
      frames.map((f) => f.t),
      ["bye", "ev", "bye"],
    );
    assert.equal(decoder.pending, 0);
  }
  const half = new StreamDecoder();
  assert.deepEqual(half.feed(encodeStream({ t: "bye", reason: "x" }).subarray(0, 6)), []);
  assert.equal(half.pending, 6);
});

test("a length over the cap is refused before its body arrives", () => {
  const decoder = new StreamDecoder();
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, MAX_STREAM_FRAME + 1);
  assert.throws(() => decoder.feed(header), FrameTooLarge);
  assert.throws(() => frameForStream(new Uint8Array(MAX_STREAM_FRAME + 1)), FrameTooLarge);
});

test("a packed delta inflates to its diff; its header is read without inflating", async () => {
  const data = packed(70, 68, 12, { n: { x: -3 } });
  const { tick, base, seq } = splitPackedDelta(data);
  assert.deepEqual([tick, base, seq], [70, 68, 12]);
  assert.deepEqual(await decodeDatagram(data), { t: "d", tick: 70, base: 68, seq: 12, diff: { n: { x: -3 } } });
});

test("a packed delta that does not inflate, or inflates too far, is refused", async () => {
  await assert.rejects(unpackDiff(new Uint8Array([0xff, 0xff, 0xff])), MalformedFrame);
  await assert.rejects(unpackDiff(deflateRawSync(Buffer.from(JSON.stringify({ s: { a: "x".repeat(5000) } }))), 1000), FrameTooLarge);
  await assert.rejects(unpackDiff(deflateRawSync(Buffer.from("[1]"))), /packed delta is not a JSON object/);
  assert.throws(() => splitPackedDelta(new Uint8Array([0x7a, 1, 2])), /shorter than its header/);
});

test("applying a delta: sets, increments, nested updates and removals, the base untouched", () => {
  const base = { players: { "1": { x: 10, name: "a" }, "2": { x: 5, name: "b" } }, over: false };
  const out = apply(base, { u: { players: { u: { "1": { n: { x: -3 } } }, r: ["2"], s: { "3": { x: 1 } } } }, s: { over: true } });
  assert.deepEqual(out, { players: { "1": { x: 7, name: "a" }, "3": { x: 1 } }, over: true });
  assert.deepEqual(base.players["2"], { x: 5, name: "b" });
  assert.equal(apply(base, {}), base, "an empty delta is the base itself");
  const same = apply(base, { s: { over: true } });
  assert.equal(same["players"], base.players, "untouched subtrees are shared");
});

test("a delta that does not fit its base is refused, as shared/delta.py refuses it", () => {
  assert.throws(() => apply({}, { u: { a: {} } }), /delta updates "a", which the base lacks/);
  assert.throws(() => apply({ a: true }, { n: { a: 1 } }), /not an integer on both sides/);
  assert.throws(() => apply({ a: 1.5 }, { n: { a: 1 } }), DeltaError);
  assert.throws(() => apply({}, { r: [1] }), /removes a key that is not a string/);
  assert.throws(() => apply({}, { s: [] }), /parts have the wrong type/);
  assert.throws(() => apply({}, { q: {} }), /unknown parts/);
  assert.throws(() => apply({}, []), /delta is not an object/);
});

test("a key named __proto__ becomes an entry, never the prototype", () => {
  const out = apply({}, JSON.parse('{"s":{"__proto__":{"polluted":1}}}'));
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
  assert.deepEqual(Object.keys(out), ["__proto__"]);
  assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
});
