/**
 * The browser client: connect to a tickline server, join (or spectate) a match, send
 * controls, and keep a World with the newest view, the player predicted and everyone
 * else interpolated. The counterpart of the Python SDK's GameClient (bots/client.py).
 *
 *     const client = await connect({ webTransport: { url, certificateHashes }, webSocket: { url: wsUrl } });
 *     await client.join("alice");
 *     client.sendControls({ mx: 1, my: 0, ax: 1, ay: 0, fire: false });
 *
 * Everything that arrives is handled in arrival order (a packed delta is inflated
 * before the next frame is looked at). The welcome's token is kept in
 * sessionStorage, so a page reloaded within the server's grace period gets the
 * same player back; a dropped connection is resumed the same way by itself.
 */

import {
  ACK_GRID,
  type Frame,
  type GameEvent,
  type Inflate,
  type Welcome,
  bye,
  decode,
  encode,
  encodeStream,
  hello,
  inflateRaw,
  isPackedDelta,
  MAX_DATAGRAM,
  MAX_INPUT_TICKS,
  type Hello,
  ProtocolError,
  splitPackedDelta,
  StreamDecoder,
  DEFLATE,
} from "./protocol.js";
import { DeltaError } from "./delta.js";
import { type Controls, rulesFor } from "./rules.js";
import { type OpenOptions, type Transport, type TransportKind, openTransport } from "./transport.js";
import { type View, World } from "./world.js";

/** Inputs behind schedule before `sendEveryTick` gives up catching up and starts from now. */
const MAX_CATCH_UP = 4;

/** The connection failed or the server refused us; the message says why. */
export class ClientError extends Error {
  override name = "ClientError";
}

/** Where the reconnect token is kept: sessionStorage's three methods. */
export type TokenStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

export interface ClientOptions extends OpenOptions {
  /** Milliseconds for the welcome (default 10000); `timeoutMs` is each transport attempt's. */
  welcomeTimeoutMs?: number;
  /** Where to keep the reconnect token (default: sessionStorage where there is one; null: nowhere). */
  storage?: TokenStorage | null;
  /** The storage key (default: "tickline:" and the first server url). */
  storageKey?: string;
  /** Ticks other entities are drawn behind the server (default 6). */
  interpTicks?: number;
  /** Ticks each input holds, 1 to 8 (default 1): 2 for 30 Hz controls against 60 Hz ticks. */
  inputTicks?: number;
  /** Input datagrams a second (0, the default: one per view the server sends). */
  inputRate?: number;
  /** After a dropped connection, try to come back for this long (ms, default 20000; 0: never). */
  reconnectMs?: number;
  /** The clock, in seconds (default performance.now() / 1000). */
  clock?: () => number;
  /** Raw inflate for packed deltas (default DecompressionStream("deflate-raw")). */
  inflate?: Inflate;
}

export interface ClientStats {
  bytesDown: number;
  bytesUp: number;
  datagramsDown: number;
  deltasApplied: number;
  inputsSent: number;
  reconnects: number;
}

interface Stored {
  token: string;
  name: string;
  match_id: string;
  player_id: number;
}

interface Waiting {
  resolve(welcome: Welcome): void;
  reject(error: Error): void;
}

function defaultStorage(): TokenStorage | null {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null; // storage disabled for this page
  }
}

function checkOptions(options: ClientOptions): void {
  const ticks = options.inputTicks ?? 1;
  if (!Number.isInteger(ticks) || ticks < 1 || ticks > MAX_INPUT_TICKS) {
    throw new ClientError(`inputTicks must be 1 to ${MAX_INPUT_TICKS}, not ${ticks}`);
  }
  if ((options.inputRate ?? 0) < 0) throw new ClientError(`inputRate must be 0 or more, not ${options.inputRate}`);
}

/** Open a transport to the server (WebTransport, else WebSocket); then `join` or `spectate`. */
export async function connect<C extends object = Controls, V extends object = View>(
  options: ClientOptions,
): Promise<GameClient<C, V>> {
  checkOptions(options);
  const opened = await openTransport(options);
  return new GameClient<C, V>(opened.transport, options, opened.failures);
}

export class GameClient<C extends object = Controls, V extends object = View> {
  /** The transport in use; `transport.kind` says which. */
  transport: Transport;
  /** Why each transport tried before this one failed ("webtransport: ..."). */
  fallbacks: string[];
  welcome: Welcome | null = null;
  world: World<V>;
  /** Events from the control stream, in order, never cleared. */
  events: GameEvent[] = [];
  /** Why the client ended: the server's goodbye, ours, or the transport's. */
  closeReason = "";
  isClosed = false;
  /** Resolves with the reason when the client ends for good (no reconnect left to try). */
  readonly closed: Promise<string>;
  /** Called with (tick, view) for every view applied; never change the view. */
  onView: ((tick: number, view: V) => void) | null = null;
  onEvent: ((event: GameEvent) => void) | null = null;
  /** Called when a dropped connection was resumed, with the new welcome. */
  onReconnect: ((welcome: Welcome) => void) | null = null;
  stats: ClientStats = { bytesDown: 0, bytesUp: 0, datagramsDown: 0, deltasApplied: 0, inputsSent: 0, reconnects: 0 };
  /** Input datagrams go out every `inputBatch` inputs (set from the welcome). */
  inputBatch = 1;
  /** True while a dropped connection is being resumed. */
  reconnecting = false;

  private readonly options: ClientOptions;
  private readonly storage: TokenStorage | null;
  private readonly storageKey: string;
  private readonly clock: () => number;
  private readonly inflate: Inflate;
  private decoder = new StreamDecoder();
  private chain: Promise<void> = Promise.resolve();
  private waiting: Waiting | null = null;
  private updated: (() => void)[] = [];
  private unsent = 0;
  private name = "";
  private connected = true;
  private left = false; // a goodbye either way, or abandoned: never come back by ourselves
  private retrying = false; // joining with a stored token: a refusal is retried afresh
  private finish!: (reason: string) => void;
  private heardAt: number;

  constructor(transport: Transport, options: ClientOptions, fallbacks: string[] = []) {
    checkOptions(options);
    this.transport = transport;
    this.fallbacks = fallbacks;
    this.options = options;
    this.storage = options.storage === undefined ? defaultStorage() : options.storage;
    this.storageKey =
      options.storageKey ?? `tickline:${options.webTransport?.url ?? options.webSocket?.url ?? "server"}`;
    this.clock = options.clock ?? (() => performance.now() / 1000);
    this.inflate = options.inflate ?? inflateRaw;
    this.world = new World<V>({ interpTicks: options.interpTicks ?? 6 });
    this.heardAt = this.clock();
    this.closed = new Promise((resolve) => {
      this.finish = resolve;
    });
    this.attach(transport);
  }

  /** Which transport carries the game: "webtransport" or "websocket". */
  get transportKind(): TransportKind {
    return this.transport.kind;
  }

  get playerId(): number {
    return this.welcome?.player_id ?? 0;
  }

  get matchId(): string {
    return this.welcome?.match_id ?? "";
  }

  /** What gets this player back after a dropped connection. */
  get token(): string {
    return this.welcome?.token ?? "";
  }

  get spectating(): boolean {
    return this.welcome !== null && this.welcome.player_id === 0;
  }

  /** A spectator's: the server's tick when it sent the newest view; 0 for a player. */
  get serverTick(): number {
    return this.spectating ? this.world.serverSeq : 0;
  }

  /** The clock the world's interpolation runs on (seconds). */
  now(): number {
    return this.clock();
  }

  /** Seconds since the server last sent anything usable. */
  silentFor(): number {
    return this.clock() - this.heardAt;
  }

  // ------------------------------------------------------------ joining

  /**
   * Join a match as `name` and resolve with the welcome. A token kept from an earlier
   * page of this tab (same name) is tried first, so a reload gets the player back;
   * when the server refuses it (its grace ran out), the client joins afresh.
   */
  async join(name: string, options: { token?: string; connectToken?: string } = {}): Promise<Welcome> {
    const stored = options.token === undefined ? this.stored(name) : null;
    if (stored !== null) {
      this.retrying = true;
      try {
        return await this.sayHello(hello(name, { token: stored.token, caps: [DEFLATE, ACK_GRID] }));
      } catch (exc) {
        if (this.isClosed) throw exc;
        this.forget(); // refused (the grace period ran out) or unanswered: join afresh
        await this.reopen();
      } finally {
        this.retrying = false;
      }
    }
    const connectToken = options.connectToken;
    return await this.sayHello(hello(name, { token: options.token ?? "", caps: [DEFLATE, ACK_GRID], connectToken }));
  }

  /**
   * Watch match `matchId` (or the one match whose id starts with it): the whole match
   * (`follow` 0) or what player `follow` is shown, behind the server's spectator delay.
   */
  spectate(matchId: string, follow = 0, name = "spectator", connectToken = ""): Promise<Welcome> {
    return this.sayHello(hello(name, { spectate: matchId, follow, caps: [DEFLATE, ACK_GRID], connectToken }));
  }

  private sayHello(frame: Hello): Promise<Welcome> {
    if (this.welcome !== null && !this.reconnecting) {
      return Promise.reject(new ClientError("this client already joined a match"));
    }
    if (!this.connected) return Promise.reject(new ClientError(`not connected: ${this.closeReason}`));
    this.name = frame.name;
    const ms = this.options.welcomeTimeoutMs ?? 10_000;
    const welcome = new Promise<Welcome>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new ClientError(`no welcome within ${ms / 1000} s`));
      }, ms);
      this.waiting = {
        resolve: (w) => {
          clearTimeout(timer);
          resolve(w);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
    this.sendStream(frame);
    return welcome;
  }

  private welcomed(welcome: Welcome): void {
    this.welcome = welcome;
    const world = this.world;
    world.rules = rulesFor(welcome.game, welcome.game_version, welcome.config);
    world.playerId = welcome.player_id;
    world.tickRate = welcome.tick_rate;
    world.ackEvery = welcome.ack_every;
    const perS = welcome.tick_rate / (this.options.inputTicks ?? 1);
    this.inputBatch = Math.max(1, Math.floor(perS / (this.options.inputRate || welcome.send_rate)));
    if (welcome.player_id !== 0 && welcome.token) {
      const record: Stored = {
        token: welcome.token,
        name: this.name,
        match_id: welcome.match_id,
        player_id: welcome.player_id,
      };
      this.store(JSON.stringify(record));
    }
  }

  // ------------------------------------------------------------ playing

  /**
   * This tick's controls (call once per `inputTicks` ticks); returns the input's number.
   * Controls left out take their declared defaults on the server. Inputs go out
   * `inputBatch` at a time (or at once with `flush`), each datagram repeating the
   * inputs the server has not confirmed.
   */
  sendControls(controls: Partial<C>, flush = false): number {
    if (this.welcome === null) throw new ClientError("join a match before sending controls");
    if (this.spectating) throw new ClientError("spectators cannot send inputs");
    const seq = this.world.nextInput(controls as Controls, this.clock(), this.options.inputTicks ?? 1);
    this.stats.inputsSent += 1;
    this.unsent += 1;
    if (flush || this.unsent >= this.inputBatch) this.flushInputs();
    return seq;
  }

  /**
   * Send `read()`'s controls once per input (every `inputTicks` ticks at the welcome's
   * tick rate) until the client ends or the returned function is called. Use this rather
   * than `setInterval(..., 1000 / tickRate)`: browsers round that interval down to whole
   * milliseconds (16 ms: 62.5 inputs a second against 60 ticks), so inputs pile up on the
   * server and every one waits longer (about 30 ms more at p99, measured). Here each input
   * has its own deadline on the client's clock, so the rate is the tick rate on average; a
   * tab whose timers were throttled resumes from now rather than sending a burst.
   */
  sendEveryTick(read: () => Partial<C>): () => void {
    if (this.welcome === null) throw new ClientError("join a match before sending controls");
    if (this.spectating) throw new ClientError("spectators cannot send inputs");
    const period = (this.options.inputTicks ?? 1) / this.welcome.tick_rate;
    let next = this.clock() + period;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    const stop = (): void => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
    };
    const run = (): void => {
      if (stopped || this.isClosed) return;
      const now = this.clock();
      if (now - next > MAX_CATCH_UP * period) next = now; // throttled: no burst of old inputs
      if (!this.reconnecting) this.sendControls(read());
      next += period;
      timer = setTimeout(run, Math.max(0, (next - this.clock()) * 1000));
    };
    timer = setTimeout(run, Math.max(0, (next - this.clock()) * 1000));
    void this.closed.then(stop);
    return stop;
  }

  /** Send the unconfirmed inputs now (`always`: even when there are none, as an ack). */
  flushInputs(always = false): void {
    if (!this.connected || !(always || this.world.unconfirmed)) return;
    const body = encode(this.world.inputFrame());
    this.stats.bytesUp += body.length;
    this.transport.sendDatagram(body);
    this.unsent = 0;
  }

  /** Resolves once everything received so far has been handled (packed deltas inflated and applied). */
  async settled(): Promise<void> {
    let chain;
    do {
      chain = this.chain;
      await chain;
    } while (chain !== this.chain);
  }

  /** Resolves true once the next view is applied; false on timeout or when the client ends. */
  waitUpdate(timeoutMs?: number): Promise<boolean> {
    if (this.isClosed) return Promise.resolve(false);
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        resolve(!this.isClosed);
      };
      this.updated.push(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.updated = this.updated.filter((f) => f !== done);
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  /** Leave: a goodbye (the server frees the player's place at once), then close. */
  close(reason = "client done"): void {
    if (this.isClosed) return;
    this.left = true;
    if (this.connected) this.sendStream(bye(reason));
    this.forget();
    this.transport.close(reason);
    this.end(reason);
  }

  /** Drop the connection without a goodbye, as a crash would: the server keeps the player's place. */
  abandon(): void {
    if (this.isClosed) return;
    this.left = true;
    this.transport.close("client gone");
    this.end("client gone");
  }

  /**
   * Come back as the same player on a new connection (the welcome's token); the world
   * starts again from a full view and keeps its input numbering.
   */
  async reconnect(): Promise<Welcome> {
    const token = this.token;
    if (!token) throw new ClientError("nothing to come back to: not a player in a match");
    this.reconnecting = true;
    try {
      await this.reopen();
      this.world = this.world.reconnected();
      const welcome = await this.sayHello(hello(this.name, { token, caps: [DEFLATE, ACK_GRID] }));
      this.stats.reconnects += 1;
      this.onReconnect?.(welcome);
      return welcome;
    } finally {
      this.reconnecting = false;
    }
  }

  // ------------------------------------------------------------ the connection

  private attach(transport: Transport): void {
    this.transport = transport;
    this.decoder = new StreamDecoder();
    this.connected = true;
    transport.listen({
      stream: (data) => this.enqueue(transport, () => this.onStream(data)),
      datagram: (data) => this.enqueue(transport, () => this.onDatagram(data)),
      closed: (reason) => this.enqueue(transport, () => this.onClosed(reason)),
    });
  }

  private async reopen(): Promise<void> {
    if (this.connected) this.transport.close("reconnecting");
    const opened = await openTransport(this.options);
    if (this.isClosed) {
      opened.transport.close("client done");
      throw new ClientError(`client closed: ${this.closeReason}`);
    }
    this.fallbacks = opened.failures;
    this.left = false;
    this.closeReason = "";
    this.attach(opened.transport);
  }

  // One queue for everything a connection delivers: frames are handled in arrival
  // order, a packed delta's inflating included. Frames of a replaced transport are dropped.
  private enqueue(from: Transport, handle: () => void | Promise<void>): void {
    this.chain = this.chain
      .then(() => (from === this.transport && !this.isClosed ? handle() : undefined))
      .catch((exc: unknown) => {
        if (from !== this.transport) return;
        const why =
          exc instanceof ProtocolError
            ? "bad frame from server"
            : exc instanceof DeltaError
              ? "delta does not apply"
              : "client error";
        this.fail(`${why}: ${exc instanceof Error ? exc.message : String(exc)}`);
      });
  }

  private sendStream(frame: Frame): void {
    const data = encodeStream(frame);
    this.stats.bytesUp += data.length;
    this.transport.sendStream(data);
  }

  private onStream(data: Uint8Array): void {
    this.stats.bytesDown += data.length;
    for (const frame of this.decoder.feed(data)) this.onFrame(frame);
  }

  private onFrame(frame: Frame): void {
    switch (frame.t) {
      case "welcome":
        if (this.waiting !== null) {
          const waiting = this.waiting;
          this.waiting = null;
          this.welcomed(frame);
          waiting.resolve(frame);
        }
        return;
      case "d":
        this.applied(this.world.onDelta(frame, this.clock()));
        return;
      case "ev":
        this.events.push(frame);
        this.onEvent?.(frame);
        return;
      case "bye":
        // The server is done with us and says why.
        this.left = true;
        this.closeReason = frame.reason;
        this.forget();
        this.transport.close("bye");
        return;
      default:
        return; // fast-path keys: a browser has no fast path
    }
  }

  private async onDatagram(data: Uint8Array): Promise<void> {
    this.stats.bytesDown += data.length;
    this.stats.datagramsDown += 1;
    if (isPackedDelta(data)) {
      const { tick, base, seq, packed } = splitPackedDelta(data);
      this.applied(await this.world.onPackedDelta(tick, base, seq, packed, this.clock(), this.inflate));
      return;
    }
    const frame = decode(data, MAX_DATAGRAM);
    if (frame.t === "d") this.applied(this.world.onDelta(frame, this.clock()));
  }

  private applied(applied: boolean): void {
    if (!applied) return;
    this.heardAt = this.clock();
    this.stats.deltasApplied += 1;
    if (this.spectating) this.flushInputs(true); // an ack alone: the next delta is against this view
    this.onView?.(this.world.tick, this.world.view);
    const waiting = this.updated;
    this.updated = [];
    for (const done of waiting) done();
  }

  private fail(reason: string): void {
    this.closeReason = reason;
    this.left = true;
    this.transport.close(reason);
  }

  private onClosed(reason: string): void {
    if (!this.connected) return;
    this.connected = false;
    this.closeReason = this.closeReason || reason;
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.reject(new ClientError(`server closed the connection: ${this.closeReason}`));
    if (this.reconnecting || this.retrying) return; // whoever waits tries again
    const within = this.options.reconnectMs ?? 20_000;
    if (waiting === null && !this.left && within > 0 && this.token && !this.spectating) {
      void this.comeBack(within);
    } else {
      this.end(this.closeReason);
    }
  }

  // A dropped connection: try again, backing off, until the server gives the player
  // back, refuses the token, or the time is up.
  private async comeBack(within: number): Promise<void> {
    const deadline = this.clock() + within / 1000;
    const reason = this.closeReason;
    let pause = 250;
    for (;;) {
      try {
        await this.reconnect();
        return;
      } catch {
        // the transport would not open, or the server did not answer: try again, unless it
        // said no (a goodbye: the token is refused) or the time is up
      }
      if (this.left || this.isClosed || this.clock() + pause / 1000 >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 2000);
    }
    if (this.left) this.forget();
    this.end(this.closeReason || reason);
  }

  private end(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.connected = false;
    this.closeReason = this.closeReason || reason;
    this.finish(this.closeReason);
    const waiting = this.updated;
    this.updated = [];
    for (const done of waiting) done();
  }

  // ------------------------------------------------------------ the token

  private stored(name: string): Stored | null {
    try {
      const raw = this.storage?.getItem(this.storageKey);
      if (!raw) return null;
      const record = JSON.parse(raw) as Stored;
      return typeof record.token === "string" && record.name === name ? record : null;
    } catch {
      return null;
    }
  }

  private store(value: string): void {
    try {
      this.storage?.setItem(this.storageKey, value);
    } catch {
      // storage full or disabled: a reload then joins afresh
    }
  }

  private forget(): void {
    try {
      this.storage?.removeItem(this.storageKey);
    } catch {
      // as above
    }
  }
}
