/**
 * The wire protocol, as shared/protocol.py defines it: typed frames, their JSON
 * encoding, the control stream's 4-byte big-endian length prefix, and packed deltas.
 *
 * Every frame is one JSON object {"t": tag, ...fields}. On the control stream each
 * frame is prefixed by its length; as a datagram it travels alone. A packed delta
 * is the byte "z", tick/base/seq as three big-endian u32, then the diff's JSON
 * raw-deflated (inflated here with DecompressionStream("deflate-raw")).
 *
 * Decoders throw nothing but ProtocolError subclasses, as the Python ones do.
 * No sockets here: bytes in, frames out.
 */

export const PROTOCOL_VERSION = 1;
/** A control-stream frame larger than this is refused (and a packed diff that inflates past it). */
export const MAX_STREAM_FRAME = 256 * 1024;
/** The largest datagram either end sends (bigger deltas come on the control stream). */
export const MAX_DATAGRAM = 1250;
/** Ticks one input may hold, at most. */
export const MAX_INPUT_TICKS = 8;
/** The capability a hello names to be sent packed deltas. */
export const DEFLATE = "deflate";
/** The capability a hello names to be given an ack grid (`Welcome.ack_every`). */
export const ACK_GRID = "ack-grid";
/** The first byte of a packed delta datagram: "z". */
export const PACKED_DELTA = 0x7a;
const PACKED_HEADER = 12;
const LENGTH = 4;

export class ProtocolError extends Error {
  override name = "ProtocolError";
}
export class MalformedFrame extends ProtocolError {
  override name = "MalformedFrame";
}
export class UnknownFrameType extends ProtocolError {
  override name = "UnknownFrameType";
}
export class FrameTooLarge extends ProtocolError {
  override name = "FrameTooLarge";
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** Client -> server, the first frame on the control stream. */
export interface Hello {
  t: "hello";
  version: number;
  name: string;
  /** "" for a new player; an earlier welcome's token to come back as that player. */
  token: string;
  caps: string[];
  /** A match id (or a unique prefix) to watch rather than play; "" to play. */
  spectate: string;
  /** With spectate: the player whose views to watch (0: the whole match). */
  follow: number;
  /** A connect token from the lobby (POST /lobby/token); left out when there is none. */
  connect_token?: string;
}

/** Server -> client: in the match (player_id 0: a spectator). */
export interface Welcome {
  t: "welcome";
  version: number;
  player_id: number;
  match_id: string;
  game: string;
  game_version: number;
  tick_rate: number;
  send_rate: number;
  tick: number;
  token: string;
  config: JsonObject;
  spectator_delay: number;
  /** To a hello that names ACK_GRID: ack the newest tick held that is a multiple of this
   * (unless it lags the newest by more than two steps); 0: the newest. */
  ack_every: number;
}

/** One input: [seq, controls] or [seq, controls, ticks]. */
export type InputItem = [number, JsonObject] | [number, JsonObject, number];

/** Client -> server datagram: the unconfirmed inputs and the newest tick held. */
export interface Input {
  t: "in";
  ack: number;
  inputs: InputItem[];
}

/** Server -> client: the view at `tick` as a diff against `base` (0: a full snapshot). */
export interface Delta {
  t: "d";
  tick: number;
  base: number;
  /** The newest input the server applied; a spectator's: the server's tick. */
  seq: number;
  diff: JsonObject;
}

/** Server -> client on the control stream: something that must arrive (the match is over). */
export interface GameEvent {
  t: "ev";
  tick: number;
  kind: string;
  data: JsonObject;
}

/** Server -> client: fast-path keys (native clients only; a browser ignores them). */
export interface FastPath {
  t: "fast";
  sid: string;
  up: string;
  down: string;
  /** The server's idle timeout, to a client that asked (0: not said). */
  idle_ms: number;
  /** 1: the server reads packed input datagrams, to a client that asked (0: not said). */
  packed: number;
}

/** Either way on the control stream: the sender is closing, and why. */
export interface Bye {
  t: "bye";
  reason: string;
}

export type Frame = Hello | Welcome | Input | Delta | GameEvent | FastPath | Bye;

type Kind = "int" | "str" | "list" | "dict";
// Per tag: field -> [kind, required]. Key order is the Python dataclass's, so that
// encoded frames are byte for byte what shared/protocol.py encodes.
const FIELDS: Record<string, Record<string, [Kind, boolean]>> = {
  hello: {
    version: ["int", true],
    name: ["str", true],
    token: ["str", false],
    caps: ["list", false],
    spectate: ["str", false],
    follow: ["int", false],
    connect_token: ["str", false],
  },
  welcome: {
    version: ["int", true],
    player_id: ["int", true],
    match_id: ["str", true],
    game: ["str", true],
    game_version: ["int", true],
    tick_rate: ["int", true],
    send_rate: ["int", true],
    tick: ["int", true],
    token: ["str", false],
    config: ["dict", false],
    spectator_delay: ["int", false],
    ack_every: ["int", false],
  },
  in: { ack: ["int", true], inputs: ["list", true] },
  d: { tick: ["int", true], base: ["int", true], seq: ["int", true], diff: ["dict", true] },
  ev: { tick: ["int", true], kind: ["str", true], data: ["dict", false] },
  fast: { sid: ["str", true], up: ["str", true], down: ["str", true], idle_ms: ["int", false], packed: ["int", false] },
  bye: { reason: ["str", true] },
};
const DEFAULTS: Record<string, () => JsonObject> = {
  hello: () => ({ token: "", caps: [], spectate: "", follow: 0, connect_token: "" }),
  welcome: () => ({ token: "", config: {}, spectator_delay: 0, ack_every: 0 }),
  ev: () => ({ data: {} }),
  fast: () => ({ idle_ms: 0, packed: 0 }),
};
// Fields added after version 1: left out at their defaults, so older decoders still read the frame.
const NEWER: Record<string, JsonObject> = {
  hello: { spectate: "", follow: 0, connect_token: "" },
  welcome: { spectator_delay: 0, ack_every: 0 },
  fast: { idle_ms: 0, packed: 0 },
};

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fits(kind: Kind, value: unknown): boolean {
  switch (kind) {
    case "int":
      return Number.isInteger(value);
    case "str":
      return typeof value === "string";
    case "list":
      return Array.isArray(value);
    case "dict":
      return isObject(value);
  }
}

// --------------------------------------------------------------------------- encode

/** A frame's JSON body (a datagram's whole payload), fields in the Python encoder's order. */
export function encode(frame: Frame): Uint8Array {
  const fields = FIELDS[frame.t];
  if (fields === undefined) throw new UnknownFrameType(`unknown frame type ${JSON.stringify(frame.t)}`);
  const source = frame as unknown as JsonObject;
  const newer = NEWER[frame.t] ?? {};
  const defaults = DEFAULTS[frame.t]?.() ?? {};
  const body: JsonObject = {};
  for (const name of Object.keys(fields)) {
    const value = source[name] ?? defaults[name];
    if (value === undefined) throw new MalformedFrame(`${frame.t} frame lacks field ${JSON.stringify(name)}`);
    if (name in newer && value === newer[name]) continue;
    body[name] = value;
  }
  body["t"] = frame.t;
  return encoder.encode(JSON.stringify(body));
}

/** A length prefix plus `body`, ready for the control stream. */
export function frameForStream(body: Uint8Array): Uint8Array {
  if (body.length > MAX_STREAM_FRAME) {
    throw new FrameTooLarge(`frame of ${body.length} bytes exceeds the ${MAX_STREAM_FRAME}-byte cap`);
  }
  const out = new Uint8Array(LENGTH + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, LENGTH);
  return out;
}

export function encodeStream(frame: Frame): Uint8Array {
  return frameForStream(encode(frame));
}

export interface HelloOptions {
  token?: string;
  caps?: string[];
  spectate?: string;
  follow?: number;
  connectToken?: string;
}

export function hello(name: string, options: HelloOptions = {}): Hello {
  return {
    t: "hello",
    version: PROTOCOL_VERSION,
    name,
    token: options.token ?? "",
    caps: options.caps ?? [DEFLATE, ACK_GRID],
    spectate: options.spectate ?? "",
    follow: options.follow ?? 0,
    ...(options.connectToken ? { connect_token: options.connectToken } : {}),
  };
}

export function bye(reason: string): Bye {
  return { t: "bye", reason };
}

// --------------------------------------------------------------------------- decode

function jsonObject(data: Uint8Array, what: string): JsonObject {
  let obj: unknown;
  try {
    obj = JSON.parse(decoder.decode(data));
  } catch (exc) {
    throw new MalformedFrame(`${what} is not valid JSON (${exc instanceof Error ? exc.message : String(exc)})`);
  }
  if (!isObject(obj)) throw new MalformedFrame(`${what} is not a JSON object`);
  return obj;
}

/** Parse one frame body; throws a ProtocolError subclass on anything wrong. */
export function decode(data: Uint8Array, maxSize: number = MAX_STREAM_FRAME): Frame {
  if (data.length > maxSize) throw new FrameTooLarge(`frame of ${data.length} bytes exceeds the ${maxSize}-byte cap`);
  const obj = jsonObject(data, "frame");
  const tag = obj["t"];
  if (typeof tag !== "string") throw new MalformedFrame("frame has no type tag 't'");
  const fields = Object.hasOwn(FIELDS, tag) ? FIELDS[tag] : undefined;
  if (fields === undefined) throw new UnknownFrameType(`unknown frame type ${JSON.stringify(tag.slice(0, 32))}`);
  const known = Object.keys(fields);
  const unknown = Object.keys(obj)
    .filter((k) => k !== "t" && !Object.hasOwn(fields, k))
    .sort();
  if (unknown.length) throw new MalformedFrame(`${tag} frame has unknown field ${JSON.stringify(unknown[0]!.slice(0, 32))}`);
  const missing = known.filter((k) => fields[k]![1] && !Object.hasOwn(obj, k)).sort();
  if (missing.length) throw new MalformedFrame(`${tag} frame lacks field ${JSON.stringify(missing[0])}`);
  for (const k of known) {
    if (Object.hasOwn(obj, k) && !fits(fields[k]![0], obj[k])) {
      throw new MalformedFrame(`${tag} frame field ${JSON.stringify(k)} has the wrong type`);
    }
  }
  return { ...DEFAULTS[tag]?.(), ...obj } as unknown as Frame;
}

/** A packed delta with its diff still packed: a client skips inflating one it cannot use. */
export interface PackedDelta {
  tick: number;
  base: number;
  seq: number;
  packed: Uint8Array;
}

export function isPackedDelta(data: Uint8Array): boolean {
  return data[0] === PACKED_DELTA;
}

export function splitPackedDelta(data: Uint8Array): PackedDelta {
  if (data[0] !== PACKED_DELTA) throw new MalformedFrame("not a packed delta");
  if (data.length < 1 + PACKED_HEADER) throw new MalformedFrame("packed delta is shorter than its header");
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return {
    tick: view.getUint32(1),
    base: view.getUint32(5),
    seq: view.getUint32(9),
    packed: data.subarray(1 + PACKED_HEADER),
  };
}

/** Raw inflate (RFC 1951) of `data`, refusing output past `maxSize` bytes. */
export type Inflate = (data: Uint8Array, maxSize: number) => Promise<Uint8Array>;

/** The browser's (and Node's) DecompressionStream("deflate-raw"), with a cap on the output. */
export const inflateRaw: Inflate = async (data, maxSize) => {
  // Written straight into the stream: a Blob's stream piped through it cost 13x as much a
  // call in Chromium (740 against 56 µs for a small delta, measured), the SDK's largest cost.
  const inflater = new DecompressionStream("deflate-raw");
  const writer = inflater.writable.getWriter();
  const ignore = (): void => {}; // a write's failure is the reader's to report
  writer.write(data as Uint8Array<ArrayBuffer>).catch(ignore);
  writer.close().catch(ignore);
  const reader = inflater.readable.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > maxSize) {
        await reader.cancel();
        throw new FrameTooLarge(`packed delta inflates past the ${maxSize}-byte cap`);
      }
      chunks.push(value);
    }
  } catch (exc) {
    if (exc instanceof ProtocolError) throw exc;
    throw new MalformedFrame(`packed delta does not inflate (${exc instanceof Error ? exc.message : String(exc)})`);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
};

/** The diff inside a packed delta, checked as a JSON object. */
export async function unpackDiff(
  packed: Uint8Array,
  maxSize: number = MAX_STREAM_FRAME,
  inflate: Inflate = inflateRaw,
): Promise<JsonObject> {
  return jsonObject(await inflate(packed, maxSize), "packed delta");
}

/** One datagram's frame: a packed delta (inflated) or a JSON frame of at most MAX_DATAGRAM bytes. */
export async function decodeDatagram(data: Uint8Array, inflate: Inflate = inflateRaw): Promise<Frame> {
  if (isPackedDelta(data)) {
    const { tick, base, seq, packed } = splitPackedDelta(data);
    return { t: "d", tick, base, seq, diff: await unpackDiff(packed, MAX_STREAM_FRAME, inflate) };
  }
  return decode(data, MAX_DATAGRAM);
}

/**
 * Reassembles length-prefixed frames from the control stream's bytes, in any chunking.
 * A length over the cap throws FrameTooLarge at once, before the body is buffered.
 */
export class StreamDecoder {
  private buffer = new Uint8Array(0);

  constructor(private readonly maxSize: number = MAX_STREAM_FRAME) {}

  feed(data: Uint8Array): Frame[] {
    if (this.buffer.length === 0) {
      this.buffer = data.slice();
    } else if (data.length) {
      const joined = new Uint8Array(this.buffer.length + data.length);
      joined.set(this.buffer);
      joined.set(data, this.buffer.length);
      this.buffer = joined;
    }
    const frames: Frame[] = [];
    let at = 0;
    const view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.byteLength);
    while (this.buffer.length - at >= LENGTH) {
      const length = view.getUint32(at);
      if (length > this.maxSize) {
        throw new FrameTooLarge(`frame of ${length} bytes exceeds the ${this.maxSize}-byte cap`);
      }
      const end = at + LENGTH + length;
      if (this.buffer.length < end) break;
      const body = this.buffer.subarray(at + LENGTH, end);
      at = end;
      frames.push(decode(body, this.maxSize));
    }
    if (at) this.buffer = this.buffer.slice(at);
    return frames;
  }

  /** Bytes received that do not yet make a whole frame. */
  get pending(): number {
    return this.buffer.length;
  }
}
