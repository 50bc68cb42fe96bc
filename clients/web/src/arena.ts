/**
 * Arena's rules as far as a client needs them: a port of shared/arena.py's `_move`
 * and `predict_self`, in the same integer arithmetic (Python's `//` is Math.floor
 * of the quotient, exact for the safe integers these are), plus the view's
 * interpolated fields and unit scales. The test vectors hold it to the Python
 * client's predictions tick for tick.
 */

import type { JsonObject } from "./protocol.js";
import type { Controls, Entity, GameRules } from "./rules.js";

export const UNIT = 100; // fixed units per world unit
// 181/256 ~ 1/sqrt(2): diagonal moves are no faster than straight ones.
const DIAG_NUM = 181;
const DIAG_DEN = 256;

/** The arena config keys prediction reads, with the server's defaults. */
export const ARENA_DEFAULTS = {
  tick_rate: 60,
  width: 1000,
  height: 1000,
  player_radius: 15,
  player_speed: 200,
  view_step: 10,
} as const;

function floorDiv(a: number, b: number): number {
  return Math.floor(a / b);
}

function int(config: JsonObject, name: keyof typeof ARENA_DEFAULTS): number {
  const value = config[name];
  return Number.isInteger(value) ? (value as number) : ARENA_DEFAULTS[name];
}

function control(controls: Controls, name: string): number {
  const value = controls[name];
  return typeof value === "number" ? value : 0;
}

export class ArenaRules implements GameRules {
  readonly name = "arena";
  readonly version = 1;
  readonly players = "players";
  readonly tables;
  readonly w: number;
  readonly h: number;
  readonly pr: number;
  readonly speed: number;
  readonly q: number;

  constructor(config: JsonObject = {}) {
    const rate = int(config, "tick_rate");
    this.w = int(config, "width") * UNIT;
    this.h = int(config, "height") * UNIT;
    this.pr = int(config, "player_radius") * UNIT;
    this.speed = floorDiv(int(config, "player_speed") * UNIT, rate);
    this.q = int(config, "view_step");
    const step = this.q / UNIT; // world units per position step
    const perTick = 1 / UNIT;
    const world = "world units";
    this.tables = {
      players: { interpolate: ["x", "y"], scales: { x: step, y: step }, units: { x: world, y: world } },
      shots: {
        interpolate: [],
        scales: { x0: step, y0: step, vx: perTick, vy: perTick },
        units: { x0: world, y0: world, vx: "world units per tick", vy: "world units per tick", born: "tick" },
      },
      pickups: { interpolate: [], scales: { x: step, y: step }, units: { x: world, y: world } },
    };
  }

  /** One tick of walking, in fixed units: the server's `Arena._move`. */
  move(x: number, y: number, mx: number, my: number): [number, number] {
    let dx = mx * this.speed;
    let dy = my * this.speed;
    if (dx && dy) {
      dx = floorDiv(dx * DIAG_NUM, DIAG_DEN);
      dy = floorDiv(dy * DIAG_NUM, DIAG_DEN);
    }
    x += dx;
    y += dy;
    const pr = this.pr;
    if (x < pr) x = pr;
    else if (x > this.w - pr) x = this.w - pr;
    if (y < pr) y = pr;
    else if (y > this.h - pr) y = this.h - pr;
    return [x, y];
  }

  predictSelf(me: Entity, inputs: readonly Controls[]): Entity {
    if (!inputs.length || !(me["alive"] ?? true)) return me;
    let x = (me["x"] as number) * this.q;
    let y = (me["y"] as number) * this.q;
    for (const controls of inputs) {
      [x, y] = this.move(x, y, control(controls, "mx"), control(controls, "my"));
    }
    return { ...me, x: floorDiv(x, this.q), y: floorDiv(y, this.q) };
  }
}
