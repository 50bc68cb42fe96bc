/**
 * The client's side of the netcode, sans I/O: a port of the Python SDK's ClientWorld
 * (bots/world.py), which the shared test vectors hold it to.
 *
 * - snapshots: deltas are applied in whatever order and duplication they arrive;
 *   one older than the newest view is stale, one whose base fell out of the ring of
 *   recent views is unusable (the next one will fit);
 * - inputs: numbered one per tick (or per `ticks` ticks); each input datagram repeats
 *   every input the server has not confirmed (the newest REDUNDANT_INPUTS) and
 *   acknowledges the newest tick held (on the welcome's ack grid, when it names one);
 * - prediction: the player's own entity is the server's with the unconfirmed inputs
 *   replayed through the game's rules (GameRules.predictSelf);
 * - interpolation: other entities are drawn `interpTicks` behind the newest snapshot,
 *   blended between the two snapshots around that moment.
 *
 * No clock: `now` (seconds, any monotonic origin) is a parameter.
 */

import { apply } from "./delta.js";
import { type Delta, type Inflate, type Input, type InputItem, type JsonObject, inflateRaw, unpackDiff } from "./protocol.js";
import type { Controls, Entity, GameRules } from "./rules.js";

/** Views kept for baselines and interpolation (the server keeps 64 per client). */
export const VIEW_RING = 64;
/** Unconfirmed inputs repeated in each input datagram. */
export const REDUNDANT_INPUTS = 8;
/** Unconfirmed inputs kept for prediction; past this the oldest are forgotten. */
export const MAX_PENDING = 256;
/** Latency samples kept until someone takes them. */
export const MAX_LATENCIES = 10_000;

export type View = JsonObject;
const NO_BASE: View = {};

export interface WorldOptions {
  rules?: GameRules | null;
  playerId?: number;
  tickRate?: number;
  /** Ticks other entities are drawn behind the server (6: 100 ms at 60 Hz). */
  interpTicks?: number;
}

type Pending = [seq: number, controls: Controls, ticks: number];

export class World<V extends object = View> {
  rules: GameRules | null;
  playerId: number;
  tickRate: number;
  interpTicks: number;
  /** The newest tick applied. */
  tick = 0;
  /** The welcome's ack grid (0: ack the newest tick). */
  ackEvery = 0;
  /** The newest view the server sent. */
  view: V = NO_BASE as V;
  /** The newest input the server says it applied (a spectator's deltas: the server's tick). */
  serverSeq = 0;
  deltasApplied = 0;
  deltasStale = 0;
  deltasUnusable = 0;
  /** Seconds from an input until a delta named it or a newer one, until taken. */
  inputLatencies: number[] = [];
  private views = new Map<number, View>();
  private arrivedAt: number | null = null;
  private seq = 0;
  private pending: Pending[] = [];
  private sentAt = new Map<number, number>();

  constructor(options: WorldOptions = {}) {
    this.rules = options.rules ?? null;
    this.playerId = options.playerId ?? 0;
    this.tickRate = options.tickRate ?? 60;
    this.interpTicks = options.interpTicks ?? 6;
  }

  // ------------------------------------------------------------ snapshots

  /** Apply a delta if it is newer than what we have and its base is known. */
  onDelta(frame: Delta, now = 0): boolean {
    return this.take(frame.tick, frame.base, frame.seq, now, (base) => apply(base, frame.diff));
  }

  /**
   * Whether a delta of `tick` against `base` would apply now: a client skips inflating
   * one that would not (and counts it as stale or unusable, as onDelta would).
   */
  wants(tick: number, base: number): boolean {
    return tick > this.tick && (base === 0 || this.views.has(base));
  }

  /** The same as onDelta for a packed delta whose diff is still packed: inflated only if it applies. */
  async onPackedDelta(
    tick: number,
    base: number,
    seq: number,
    packed: Uint8Array,
    now = 0,
    inflate: Inflate = inflateRaw,
  ): Promise<boolean> {
    if (!this.wants(tick, base)) return this.take(tick, base, seq, now, () => NO_BASE);
    const diff = await unpackDiff(packed, undefined, inflate);
    return this.take(tick, base, seq, now, (view) => apply(view, diff));
  }

  private take(tick: number, baseTick: number, seq: number, now: number, make: (base: View) => View): boolean {
    if (tick <= this.tick) {
      this.deltasStale += 1; // late or duplicated: we already have newer
      return false;
    }
    const base = baseTick === 0 ? NO_BASE : this.views.get(baseTick);
    if (base === undefined) {
      this.deltasUnusable += 1; // its base fell out of our ring; the next one will fit
      return false;
    }
    const view = make(base);
    this.view = view as V;
    this.tick = tick;
    this.arrivedAt = now;
    this.views.set(tick, view);
    while (this.views.size > VIEW_RING) this.views.delete(this.views.keys().next().value as number);
    if (seq > this.serverSeq) {
      for (const [sent, at] of this.sentAt) {
        if (sent <= seq && this.inputLatencies.length < MAX_LATENCIES) this.inputLatencies.push(now - at);
      }
      for (const sent of [...this.sentAt.keys()]) if (sent <= seq) this.sentAt.delete(sent);
      this.serverSeq = seq;
      this.pending = this.pending.filter((item) => item[0] > seq);
    }
    this.deltasApplied += 1;
    return true;
  }

  // ------------------------------------------------------------ inputs

  /**
   * Number `controls` as the input for this tick (and the `ticks` - 1 after it);
   * returns its sequence number. With `now`, its input-to-visible latency is measured.
   */
  nextInput(controls: Controls, now?: number, ticks = 1): number {
    this.seq += 1;
    this.pending.push([this.seq, controls, ticks]);
    if (this.pending.length > MAX_PENDING) this.pending.splice(0, this.pending.length - MAX_PENDING);
    if (now !== undefined) {
      this.sentAt.set(this.seq, now);
      if (this.sentAt.size > MAX_PENDING) this.sentAt.delete(this.sentAt.keys().next().value as number);
    }
    return this.seq;
  }

  /** Input-to-visible latencies (seconds) measured since the last call. */
  takeLatencies(): number[] {
    const out = this.inputLatencies;
    this.inputLatencies = [];
    return out;
  }

  /** The tick input datagrams acknowledge: the newest held, or with an `ackEvery` grid the
   * newest held on it, unless that one lags the newest by more than two steps. */
  get ack(): number {
    const every = this.ackEvery;
    if (every > 0 && this.tick % every !== 0) {
      for (const tick of [...this.views.keys()].reverse()) {
        if (this.tick - tick > 2 * every) break;
        if (tick % every === 0) return tick;
      }
    }
    return this.tick;
  }

  /** The input datagram: the newest unconfirmed inputs and an ack of `ack`. */
  inputFrame(): Input {
    const inputs = this.pending
      .slice(-REDUNDANT_INPUTS)
      .map(([seq, c, ticks]): InputItem => (ticks === 1 ? [seq, c as JsonObject] : [seq, c as JsonObject, ticks]));
    return { t: "in", ack: this.ack, inputs };
  }

  get lastSeq(): number {
    return this.seq;
  }

  get unconfirmed(): number {
    return this.pending.length;
  }

  // ------------------------------------------------------------ prediction

  /** Our own entity: the server's newest view of it plus the inputs it has not applied yet. */
  predictedSelf(): Entity | null {
    const table = this.rules?.players ?? "players";
    const me = tableOf(this.view as View, table)[String(this.playerId)];
    if (me === undefined || this.rules === null) return (me as Entity | undefined) ?? null;
    const inputs: Controls[] = [];
    for (const [, c, ticks] of this.pending) for (let i = 0; i < ticks; i++) inputs.push(c);
    return this.rules.predictSelf(me as Entity, inputs);
  }

  // ------------------------------------------------------------ interpolation

  /** The server's tick now, as estimated from when the newest snapshot arrived. */
  serverTick(now: number): number {
    if (this.arrivedAt === null) return this.tick;
    return this.tick + (now - this.arrivedAt) * this.tickRate;
  }

  /** The tick other entities are drawn at: `interpTicks` behind the server. */
  renderTick(now: number): number {
    return Math.max(0, this.serverTick(now) - this.interpTicks);
  }

  /**
   * `table`'s entities at the render tick, the declared fields blended between the
   * two snapshots around it (the newest one alone when none is older).
   */
  interpolated(table: string, now: number): Record<string, Entity> {
    const at = this.renderTick(now);
    let older: [number, View] | null = null;
    let newer: [number, View] | null = null;
    const ticks = [...this.views.keys()];
    for (let i = ticks.length - 1; i >= 0; i--) {
      const tick = ticks[i]!;
      if (tick > at) {
        newer = [tick, this.views.get(tick)!];
      } else {
        older = [tick, this.views.get(tick)!];
        break;
      }
    }
    if (older === null) return { ...tableOf(newer === null ? (this.view as View) : newer[1], table) };
    if (newer === null) return { ...tableOf(older[1], table) };
    const [t0, v0] = older;
    const [t1, v1] = newer;
    const f = (at - t0) / (t1 - t0);
    const blend = this.interpolatedFields(table);
    const after = tableOf(v1, table);
    const out: Record<string, Entity> = {};
    for (const [key, a] of Object.entries(tableOf(v0, table))) {
      const b = Object.hasOwn(after, key) ? after[key] : undefined;
      if (b === undefined || b === null || !blend.length) {
        out[key] = a;
        continue;
      }
      const mixed: Entity = { ...a };
      for (const k of blend) {
        if (Object.hasOwn(a, k) && Object.hasOwn(b, k)) {
          const x = a[k] as number;
          mixed[k] = x + ((b[k] as number) - x) * f;
        }
      }
      out[key] = mixed;
    }
    return out;
  }

  private interpolatedFields(table: string): readonly string[] {
    if (this.rules === null) return ["x", "y"];
    return this.rules.tables[table]?.interpolate ?? [];
  }

  // ------------------------------------------------------------ units

  /** An entity of `table` with every number in its declared unit; as it came without the game's rules. */
  inUnits(table: string, entity: Entity): Entity {
    const scales = this.rules?.tables[table]?.scales;
    if (scales === undefined) return { ...entity };
    const out: Entity = { ...entity };
    for (const [k, scale] of Object.entries(scales)) {
      const v = out[k];
      if (scale !== 1 && typeof v === "number") out[k] = v * scale;
    }
    return out;
  }

  // ------------------------------------------------------------ reconnecting

  /** A world for a new connection of the same player: no views, the same input numbering. */
  reconnected(): World<V> {
    const world = new World<V>({
      rules: this.rules,
      playerId: this.playerId,
      tickRate: this.tickRate,
      interpTicks: this.interpTicks,
    });
    world.seq = this.seq;
    world.serverSeq = this.serverSeq;
    return world;
  }
}

function tableOf(view: View, table: string): Record<string, Entity> {
  const value = Object.hasOwn(view, table) ? view[table] : undefined;
  return (typeof value === "object" && value !== null && !Array.isArray(value) ? value : {}) as Record<string, Entity>;
}
