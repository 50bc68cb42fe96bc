// Test helpers: a transport that records what the client sends and lets a test deliver bytes.

import { readFileSync } from "node:fs";

import type { Transport, TransportHandlers, TransportKind } from "../src/transport.js";

export class FakeTransport implements Transport {
  handlers: TransportHandlers | null = null;
  stream: Uint8Array[] = [];
  datagrams: Uint8Array[] = [];
  closedWith: string | null = null;

  constructor(readonly kind: TransportKind = "websocket") {}

  listen(handlers: TransportHandlers): void {
    this.handlers = handlers;
  }
  sendStream(data: Uint8Array): void {
    this.stream.push(data.slice());
  }
  sendDatagram(data: Uint8Array): void {
    this.datagrams.push(data.slice());
  }
  close(reason = "client done"): void {
    if (this.closedWith !== null) return;
    this.closedWith = reason;
    this.handlers?.closed(reason);
  }

  /** The server's side: bytes on the control stream. */
  deliverStream(data: Uint8Array): void {
    this.handlers!.stream(data);
  }
  deliverDatagram(data: Uint8Array): void {
    this.handlers!.datagram(data);
  }
  /** The connection drops (not a goodbye). */
  drop(reason = "connection lost"): void {
    if (this.closedWith !== null) return;
    this.closedWith = reason;
    this.handlers?.closed(reason);
  }
}

export function b64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "base64"));
}

export function utf8(data: Uint8Array): string {
  return new TextDecoder().decode(data);
}

export function loadVectors(name: string): any {
  return JSON.parse(readFileSync(new URL(`../../test/vectors/${name}.json`, import.meta.url), "utf8"));
}

/** A sessionStorage stand-in. */
export class MemoryStorage {
  items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}
