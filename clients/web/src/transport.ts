/**
 * How a browser's bytes reach a tickline server: a control stream (reliable, ordered,
 * length-prefixed frames) and datagrams (one frame each, may be lost). Two
 * implementations of the same interface:
 *
 * - WebTransport (HTTP/3): the first bidirectional stream is the control stream;
 *   datagrams are WebTransport datagrams. A server with a self-signed certificate
 *   is reached through `serverCertificateHashes` (certificates valid < 14 days);
 * - WebSocket: binary messages with a one-byte kind prefix, 0x00 + control-stream
 *   bytes, 0x01 + one datagram frame (the server's `/ws`), for browsers and
 *   networks without WebTransport.
 *
 * `openTransport` tries them in order and says which one it got, and why the others failed.
 */

import { MAX_DATAGRAM } from "./protocol.js";

export type TransportKind = "webtransport" | "websocket";

export interface TransportHandlers {
  /** Bytes that arrived on the control stream (any chunking). */
  stream(data: Uint8Array): void;
  /** One datagram that arrived. */
  datagram(data: Uint8Array): void;
  /** The connection ended (by either side), and why. Called once. */
  closed(reason: string): void;
}

export interface Transport {
  readonly kind: TransportKind;
  /** Start delivering what arrives; nothing is delivered (or lost) before this. */
  listen(handlers: TransportHandlers): void;
  /** Bytes for the control stream (already length-prefixed). */
  sendStream(data: Uint8Array): void;
  /** One datagram; one too large for the path is dropped, as an unreliable datagram may be. */
  sendDatagram(data: Uint8Array): void;
  /** Close, telling the server `reason` where the transport can. */
  close(reason?: string): void;
}

export interface WebTransportOptions {
  /** e.g. "https://game.example:4433/" (the server's WebTransport endpoint). */
  url: string;
  /** SHA-256 hashes of the server's certificate (hex, colons allowed, or bytes) for a self-signed one. */
  certificateHashes?: readonly (string | BufferSource)[];
}

export interface WebSocketOptions {
  /** e.g. "wss://game.example/ws". */
  url: string;
}

export interface OpenOptions {
  webTransport?: WebTransportOptions;
  webSocket?: WebSocketOptions;
  /** The order to try them in (default: WebTransport, then WebSocket). */
  transports?: readonly TransportKind[];
  /** Milliseconds each attempt may take (default 5000). */
  timeoutMs?: number;
  /** Replaces how a transport of a kind is opened (tests; a custom carrier). */
  openers?: Partial<Record<TransportKind, (options: OpenOptions) => Promise<Transport>>>;
}

/** Where a tickline server takes browsers, as its HTTP side's `/cert-hashes` says. */
export interface Discovered {
  webTransport: WebTransportOptions;
  webSocket: WebSocketOptions;
}

/**
 * Ask a server's HTTP side (`tickline serve --http-port`) where its WebTransport
 * endpoint is and which certificate hashes to pin; the WebSocket fallback is `/ws` on
 * the same HTTP side. The hashes rotate (every ~12 days): ask again for each page.
 */
export async function discover(httpUrl: string, fetcher: typeof fetch = fetch): Promise<Discovered> {
  const base = new URL(httpUrl);
  const response = await fetcher(new URL("/cert-hashes", base), { cache: "no-store" });
  if (!response.ok) throw new TransportError(`${base.origin}/cert-hashes answered HTTP ${response.status}`);
  const info = (await response.json()) as { port: number; path: string; hashes: { algorithm: string; value: string }[] };
  return {
    webTransport: {
      url: `https://${base.hostname}:${info.port}${info.path}`,
      certificateHashes: info.hashes.filter((h) => h.algorithm === "sha-256").map((h) => h.value),
    },
    webSocket: { url: `${base.protocol === "https:" ? "wss:" : "ws:"}//${base.host}/ws` },
  };
}

/**
 * A connect token from the server's lobby (`POST /lobby/token` on its HTTP side) for
 * `name` to join `match` ("" for any open match, and for spectators): what
 * `join(name, { connectToken })` and `spectate(..., connectToken)` send. A server with
 * its HTTP side on requires one; a token is good once, for a minute. Told to wait (429,
 * the lobby's rate per address), it waits as `Retry-After` says, up to `maxWaitMs`.
 */
export async function connectToken(
  httpUrl: string,
  name: string,
  match = "",
  fetcher: typeof fetch = fetch,
  maxWaitMs = 10_000,
): Promise<string> {
  const url = new URL("/lobby/token", new URL(httpUrl));
  let waited = 0;
  for (;;) {
    const response = await fetcher(url, {
      method: "POST",
      cache: "no-store",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(match ? { name, match } : { name }),
    });
    if (response.ok) return ((await response.json()) as { token: string }).token;
    const reason = (await response.text()).trim() || `HTTP ${response.status}`;
    const wait = response.status === 429 ? Number(response.headers.get("Retry-After") ?? "1") * 1000 : NaN;
    if (!(wait >= 0) || waited + wait > maxWaitMs) throw new TransportError(`no connect token from ${url}: ${reason}`);
    await new Promise((resolve) => setTimeout(resolve, wait));
    waited += wait;
  }
}

export class TransportError extends Error {
  override name = "TransportError";
}

/** The transport opened, and why each one tried before it failed. */
export interface Opened {
  transport: Transport;
  failures: string[];
}

/** Open the first transport that works, in `options.transports` order. */
export async function openTransport(options: OpenOptions): Promise<Opened> {
  const order = options.transports ?? ["webtransport", "websocket"];
  const failures: string[] = [];
  for (const kind of order) {
    const custom = options.openers?.[kind];
    try {
      if (custom !== undefined) return { transport: await custom(options), failures };
      if (kind === "webtransport") {
        if (options.webTransport === undefined) continue;
        if (typeof WebTransport === "undefined") {
          failures.push("webtransport: this browser has no WebTransport");
          continue;
        }
        return { transport: await openWebTransport(options.webTransport, options.timeoutMs), failures };
      }
      if (options.webSocket === undefined) continue;
      return { transport: await openWebSocket(options.webSocket, options.timeoutMs), failures };
    } catch (exc) {
      failures.push(`${kind}: ${exc instanceof Error ? exc.message : String(exc)}`);
    }
  }
  if (!failures.length) throw new TransportError("no transport to try: give webTransport or webSocket a url");
  throw new TransportError(`cannot connect: ${failures.join("; ")}`);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout();
      reject(new TransportError(`${what} timed out after ${ms} ms`));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (exc: unknown) => {
        clearTimeout(timer);
        reject(exc instanceof Error ? exc : new TransportError(String(exc)));
      },
    );
  });
}

export function hexToBytes(hex: string): Uint8Array {
  const clean = hex.replace(/[\s:]/g, "");
  if (!/^([0-9a-fA-F]{2})+$/.test(clean)) throw new TransportError(`not a hex certificate hash: ${hex.slice(0, 20)}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A handler set that keeps what arrives until `listen` replaces it. */
class Inbox implements TransportHandlers {
  private queue: [keyof TransportHandlers, Uint8Array | string][] = [];
  target: TransportHandlers | null = null;
  private done = false;

  private put(kind: keyof TransportHandlers, value: Uint8Array | string): void {
    if (this.target === null) {
      this.queue.push([kind, value]);
    } else if (kind === "closed") {
      this.target.closed(value as string);
    } else {
      this.target[kind](value as Uint8Array);
    }
  }

  stream(data: Uint8Array): void {
    this.put("stream", data);
  }
  datagram(data: Uint8Array): void {
    this.put("datagram", data);
  }
  closed(reason: string): void {
    if (this.done) return;
    this.done = true;
    this.put("closed", reason);
  }

  listen(handlers: TransportHandlers): void {
    this.target = handlers;
    const queue = this.queue;
    this.queue = [];
    for (const [kind, value] of queue) this.put(kind, value);
  }
}

/** Open a WebTransport session and its control stream. */
export async function openWebTransport(options: WebTransportOptions, timeoutMs = 5000): Promise<Transport> {
  const hashes = options.certificateHashes?.map((h) => ({
    algorithm: "sha-256",
    value: typeof h === "string" ? (hexToBytes(h) as BufferSource) : h,
  }));
  const wt = new WebTransport(options.url, hashes?.length ? { serverCertificateHashes: hashes } : {});
  const giveUp = (): void => {
    try {
      wt.close();
    } catch {
      // closing a session that never opened: nothing to tell anyone
    }
  };
  wt.closed.catch(() => undefined); // reported through the inbox once open; before, through ready
  await withTimeout(wt.ready, timeoutMs, "WebTransport", giveUp);
  const bidi = await withTimeout(wt.createBidirectionalStream(), timeoutMs, "WebTransport stream", giveUp);
  const inbox = new Inbox();
  const streamWriter = bidi.writable.getWriter();
  const datagramWriter = wt.datagrams.writable.getWriter();
  const maxDatagram = (): number => Math.min(MAX_DATAGRAM, wt.datagrams.maxDatagramSize ?? MAX_DATAGRAM);
  const fail = (exc: unknown): void => inbox.closed(exc instanceof Error ? exc.message : String(exc));
  let lastWrite: Promise<unknown> = Promise.resolve();

  void (async () => {
    const reader = bidi.readable.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      inbox.stream(value);
    }
  })().catch(fail);
  void (async () => {
    const reader = wt.datagrams.readable.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      inbox.datagram(value);
    }
  })().catch(() => undefined); // the session's end is reported by `closed`
  wt.closed.then(
    (info) => inbox.closed(info.reason || `WebTransport closed (code ${info.closeCode ?? 0})`),
    fail,
  );

  return {
    kind: "webtransport",
    listen: (handlers) => inbox.listen(handlers),
    sendStream: (data) => {
      lastWrite = streamWriter.write(data).catch(fail);
    },
    sendDatagram: (data) => {
      if (data.length > maxDatagram()) return;
      datagramWriter.write(data).catch(() => undefined); // a datagram may be lost; so may this one
    },
    close: (reason = "client done") => {
      inbox.closed(reason);
      // What was written (a goodbye) goes out before the session closes, or after 200 ms, not at all.
      const flushed = new Promise((resolve) => setTimeout(resolve, 200));
      void Promise.race([lastWrite, flushed]).then(() => {
        try {
          wt.close({ closeCode: 0, reason: reason.slice(0, 200) });
        } catch {
          // already closed
        }
      });
    },
  };
}

const STREAM = 0x00;
const DATAGRAM = 0x01;

function prefixed(kind: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length + 1);
  out[0] = kind;
  out.set(data, 1);
  return out;
}

/** Open a WebSocket carrying the control stream and datagrams, each message prefixed by its kind. */
export async function openWebSocket(options: WebSocketOptions, timeoutMs = 5000): Promise<Transport> {
  const ws = new WebSocket(options.url);
  ws.binaryType = "arraybuffer";
  const inbox = new Inbox();
  let open = false;
  const opened = new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => {
      open = true;
      resolve();
    });
    ws.addEventListener("error", () => {
      if (!open) reject(new TransportError(`WebSocket to ${options.url} failed`));
    });
    ws.addEventListener("close", (event) => {
      if (!open) reject(new TransportError(`WebSocket closed before it opened (code ${event.code})`));
      inbox.closed(event.reason || `WebSocket closed (code ${event.code})`);
    });
  });
  ws.addEventListener("message", (event: MessageEvent) => {
    if (!(event.data instanceof ArrayBuffer)) return; // the protocol is binary; text is nobody's
    const data = new Uint8Array(event.data);
    if (data[0] === STREAM) inbox.stream(data.subarray(1));
    else if (data[0] === DATAGRAM) inbox.datagram(data.subarray(1));
  });
  await withTimeout(opened, timeoutMs, "WebSocket", () => ws.close());
  return {
    kind: "websocket",
    listen: (handlers) => inbox.listen(handlers),
    sendStream: (data) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(prefixed(STREAM, data));
    },
    sendDatagram: (data) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(prefixed(DATAGRAM, data));
    },
    close: (reason = "client done") => {
      try {
        ws.close(1000, reason.slice(0, 40)); // a close reason holds at most 123 bytes
      } catch {
        ws.close(1000);
      }
      inbox.closed(reason);
    },
  };
}
