// arena (rules version 1): controls and views, generated from the game's declared
// schemas by tickline.shared.typescript.typescript_types. Do not edit: regenerate.

/** One input per tick (or per input_ticks); a player without a new input keeps its controls. */
export interface Controls {
  /**
   * Move left (-1) or right (1).
   * One of -1, 0 or 1.
   * Default: 0.
   */
  mx: -1 | 0 | 1;
  /**
   * Move up (-1) or down (1).
   * One of -1, 0 or 1.
   * Default: 0.
   */
  my: -1 | 0 | 1;
  /**
   * Aim: x of a vector from the player (any length).
   * Integer -1000000 to 1000000.
   * Default: 0.
   */
  ax: number;
  /**
   * Aim: y of the same vector.
   * Integer -1000000 to 1000000.
   * Default: 0.
   */
  ay: number;
  /**
   * Fire along the aim (at most once per fire_cooldown_ms).
   * True or false.
   * Default: false.
   */
  fire: boolean;
  /**
   * The tick the player sees (hitscan rewinds to it).
   * Integer 0 to 2147483647; unit: tick.
   * Optional: absent unless sent.
   */
  vt?: number;
}

/**
 * Every player within view_radius (and the player itself).
 * The entities of `view["players"]`.
 * Interpolated between snapshots: x, y.
 */
export interface PlayersEntity {
  /**
   * The name the player joined with.
   * String, at most 32 characters.
   */
  name: string;
  /**
   * Position, from the left edge.
   * Integer 0 to 2147483647; unit: world units (value x 0.1).
   */
  x: number;
  /**
   * Position, from the top edge.
   * Integer 0 to 2147483647; unit: world units (value x 0.1).
   */
  y: number;
  /**
   * Health; 0 while dead.
   * Integer 0 to 2147483647.
   */
  hp: number;
  /**
   * Kills.
   * Integer 0 to 2147483647.
   */
  score: number;
  /**
   * False while waiting to respawn.
   * True or false.
   */
  alive: boolean;
}

/**
 * Projectiles in flight; each flies straight, so its entry never changes.
 * The entities of `view["shots"]`.
 */
export interface ShotsEntity {
  /**
   * Where it was fired.
   * Integer 0 to 2147483647; unit: world units (value x 0.1).
   */
  x0: number;
  /**
   * Where it was fired.
   * Integer 0 to 2147483647; unit: world units (value x 0.1).
   */
  y0: number;
  /**
   * Velocity.
   * Integer -2147483647 to 2147483647; unit: world units per tick (value x 0.01).
   */
  vx: number;
  /**
   * Velocity.
   * Integer -2147483647 to 2147483647; unit: world units per tick (value x 0.01).
   */
  vy: number;
  /**
   * The tick it was fired: it is at x0 + vx * (tick - born).
   * Integer 0 to 2147483647; unit: tick.
   */
  born: number;
  /**
   * The player who fired it.
   * Integer 0 to 2147483647.
   */
  owner: number;
}

/**
 * Health pickups.
 * The entities of `view["pickups"]`.
 */
export interface PickupsEntity {
  /**
   * Position.
   * Integer 0 to 2147483647; unit: world units (value x 0.1).
   */
  x: number;
  /**
   * Position.
   * Integer 0 to 2147483647; unit: world units (value x 0.1).
   */
  y: number;
}

/** Positions are quantized to view_step fixed units (a tenth of a world unit by default). */
export interface View {
  /**
   * Every player within view_radius (and the player itself).
   * Keyed by player id.
   */
  players: Record<string, PlayersEntity>;
  /**
   * Projectiles in flight; each flies straight, so its entry never changes.
   * Keyed by entity id.
   */
  shots: Record<string, ShotsEntity>;
  /**
   * Health pickups.
   * Keyed by entity id.
   */
  pickups: Record<string, PickupsEntity>;
  /**
   * The match has ended.
   * True or false.
   */
  over: boolean;
  /**
   * The winner's player id.
   * Integer 0 to 2147483647.
   */
  winner: number;
}
