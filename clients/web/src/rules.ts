/**
 * What the client knows of a game beyond its wire: the table that holds players,
 * which fields to interpolate, each field's unit scale, and how to predict the
 * player's own entity. The Python SDK reads these from the game's `Rules`
 * (`view_schema()`, `predict_self`); here each game registers a factory that
 * makes them from the welcome's config, so prediction is pluggable per game.
 *
 * A game nobody registered still plays: no prediction, no units, and `x`/`y`
 * interpolated in a "players" table, as the Python SDK does without the rules.
 */

import { ArenaRules } from "./arena.js";
import type { Json, JsonObject } from "./protocol.js";

export type Entity = JsonObject;
export type Controls = { [name: string]: Json | undefined };

/** A table of a view, as the client needs it: the fields blended between snapshots, and units. */
export interface TableInfo {
  /** Fields interpolated between snapshots (positions). */
  interpolate: readonly string[];
  /** Field -> the factor that turns a value into its declared unit (fields at 1 left out). */
  scales: Readonly<Record<string, number>>;
  /** Field -> its declared unit ("world units"); "" or absent for none. */
  units?: Readonly<Record<string, string>>;
}

export interface GameRules {
  readonly name: string;
  readonly version: number;
  /** The table keyed by player id, where the player finds its own entity. */
  readonly players: string;
  readonly tables: Readonly<Record<string, TableInfo>>;
  /**
   * The player's own entity (as its view has it) after `inputs`, one per tick, oldest
   * first. Must return `me` itself, or a new object: views are never changed.
   */
  predictSelf(me: Entity, inputs: readonly Controls[]): Entity;
}

/** Makes a game's rules from the welcome's config (the server's, defaults merged). */
export type RulesFactory = (config: JsonObject) => GameRules;

const registry = new Map<string, RulesFactory>();

function key(name: string, version: number): string {
  return `${name}@${version}`;
}

/** Make `factory` the rules of game `name` at rules `version` (replacing any registered before). */
export function registerGame(name: string, version: number, factory: RulesFactory): void {
  registry.set(key(name, version), factory);
}

/** The rules of the game a welcome names, or null when this client does not know that game or version. */
export function rulesFor(name: string, version: number, config: JsonObject): GameRules | null {
  const factory = registry.get(key(name, version));
  return factory === undefined ? null : factory(config);
}

/** Names of the registered games, as "name@version". */
export function registeredGames(): string[] {
  return [...registry.keys()].sort();
}

/** Goofspiel: sealed bids, nothing to predict or interpolate. */
export function goofspielRules(): GameRules {
  const none: TableInfo = { interpolate: [], scales: {} };
  return {
    name: "goofspiel",
    version: 1,
    players: "players",
    tables: { players: none, revealed: none, hands: none },
    predictSelf: (me) => me,
  };
}

// The games tickline ships. Another game registers itself the same way.
registerGame("arena", 1, (config) => new ArenaRules(config));
registerGame("goofspiel", 1, goofspielRules);
