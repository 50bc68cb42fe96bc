// goofspiel (rules version 1): controls and views, generated from the game's declared
// schemas by tickline.shared.typescript.typescript_types. Do not edit: regenerate.

/** The newest bid before the round's deadline stands; a card no longer in hand plays the lowest. */
export interface Controls {
  /**
   * The card to bid this round; 0: none chosen (yet).
   * Integer 0 to 13.
   * Default: 0.
   */
  bid: number;
}

/**
 * Every player in the match.
 * The entities of `view["players"]`.
 */
export interface PlayersEntity {
  /**
   * The name the player joined with.
   * String, at most 32 characters.
   */
  name: string;
  /**
   * Points won.
   * Integer 0 to 2147483647.
   */
  score: number;
  /**
   * Cards left in hand (the cards themselves are hidden).
   * Integer 0 to 13.
   */
  cards: number;
  /**
   * Has chosen a bid this round (which one is hidden).
   * True or false.
   */
  ready: boolean;
}

/**
 * The bids of the last resolved round.
 * The entities of `view["revealed"]`.
 */
export interface RevealedEntity {
  /**
   * The card this player bid.
   * Integer 1 to 13.
   */
  bid: number;
}

/**
 * Every player's hand and sealed bid: in spectator views only (players never get it).
 * The entities of `view["hands"]`.
 */
export interface HandsEntity {
  /**
   * The cards in this player's hand.
   * List of at most 13: integer 1 to 13.
   */
  hand: number[];
  /**
   * Its sealed bid this round; 0: none yet.
   * Integer 0 to 13.
   */
  bid: number;
}

/** Each player's view holds its own hand; the others' hands and bids stay hidden. */
export interface View {
  /**
   * Every player in the match.
   * Keyed by player id.
   */
  players: Record<string, PlayersEntity>;
  /**
   * The bids of the last resolved round.
   * Keyed by player id.
   */
  revealed: Record<string, RevealedEntity>;
  /**
   * Every player's hand and sealed bid: in spectator views only (players never get it).
   * Keyed by player id.
   */
  hands: Record<string, HandsEntity>;
  /**
   * The round being bid (1..rounds); 0 before the first.
   * Integer 0 to 13.
   */
  round: number;
  /**
   * How many rounds the match has.
   * Integer 1 to 13.
   */
  rounds: number;
  /**
   * The value of the prize card up for bids; 0 when none.
   * Integer 0 to 13.
   */
  prize: number;
  /**
   * The tick at which the round's bids are revealed.
   * Integer 0 to 2147483647; unit: tick.
   */
  deadline: number;
  /**
   * Your cards (only you see them).
   * List of at most 13: integer 1 to 13.
   */
  hand: number[];
  /**
   * Your bid this round; 0: none yet.
   * Integer 0 to 13.
   */
  bid: number;
  /**
   * The prize of the last resolved round.
   * Integer 0 to 13.
   */
  last_prize: number;
  /**
   * Who won it (0: a tie, nobody).
   * Integer 0 to 2147483647.
   */
  last_winner: number;
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
