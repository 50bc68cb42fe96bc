/**
 * tickline's browser client SDK: the public names. One ESM bundle of this module
 * ships inside the Python package (tickline/web/tickline-client.js).
 */

export { ArenaRules } from "./arena.js";
export { ClientError, type ClientOptions, type ClientStats, connect, GameClient, type TokenStorage } from "./client.js";
export { apply as applyDelta, DeltaError } from "./delta.js";
export {
  ACK_GRID,
  bye,
  type Bye,
  decode,
  decodeDatagram,
  type Delta,
  DEFLATE,
  encode,
  encodeStream,
  type FastPath,
  type Frame,
  FrameTooLarge,
  frameForStream,
  type GameEvent,
  hello,
  type Hello,
  type Inflate,
  inflateRaw,
  type Input,
  type InputItem,
  isPackedDelta,
  type Json,
  type JsonObject,
  MalformedFrame,
  MAX_DATAGRAM,
  MAX_INPUT_TICKS,
  MAX_STREAM_FRAME,
  PROTOCOL_VERSION,
  ProtocolError,
  splitPackedDelta,
  StreamDecoder,
  UnknownFrameType,
  unpackDiff,
  type Welcome,
} from "./protocol.js";
export {
  type Controls,
  type Entity,
  type GameRules,
  goofspielRules,
  registerGame,
  registeredGames,
  rulesFor,
  type RulesFactory,
  type TableInfo,
} from "./rules.js";
export {
  connectToken,
  discover,
  type Discovered,
  type OpenOptions,
  openTransport,
  openWebSocket,
  openWebTransport,
  type Transport,
  TransportError,
  type TransportHandlers,
  type TransportKind,
  type WebSocketOptions,
  type WebTransportOptions,
} from "./transport.js";
export { MAX_PENDING, REDUNDANT_INPUTS, type View, VIEW_RING, World, type WorldOptions } from "./world.js";
// The built-in games' controls and views, generated from their declarations (types only).
export type * as Arena from "./games/arena.js";
export type * as Goofspiel from "./games/goofspiel.js";
