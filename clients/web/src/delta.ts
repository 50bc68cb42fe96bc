/**
 * Applying a snapshot delta, with the semantics of shared/delta.py's `apply`:
 *
 *     {"s": {key: new value},   keys set or replaced whole
 *      "n": {key: increment},   integer leaves: new = old + increment
 *      "u": {key: nested delta}, dict-valued keys changed in part
 *      "r": [key, ...]}          keys removed
 *
 * The base is never modified; subtrees the delta does not touch are shared with it,
 * so views are immutable once built and a ring of recent views costs little.
 */

import { type JsonObject, isObject } from "./protocol.js";

export class DeltaError extends Error {
  override name = "DeltaError";
}

const PARTS = new Set(["s", "n", "u", "r"]);

function short(key: string): string {
  return JSON.stringify(key.slice(0, 32));
}

// A key such as "__proto__" must become an own property, never the prototype.
function put(out: JsonObject, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    (out as Record<string, unknown>)[key] = value;
  }
}

/** `base` with `delta` applied, as a new object; throws DeltaError when the delta does not fit. */
export function apply(base: JsonObject, delta: unknown): JsonObject {
  if (!isObject(delta)) throw new DeltaError("delta is not an object");
  const parts = Object.keys(delta);
  if (parts.length === 0) return base;
  const out: JsonObject = { ...base };
  for (const part of parts) {
    const value = delta[part];
    if (part === "u" && isObject(value)) {
      for (const key of Object.keys(value)) {
        const old = Object.hasOwn(out, key) ? out[key] : undefined;
        if (!isObject(old)) throw new DeltaError(`delta updates ${short(key)}, which the base lacks`);
        put(out, key, apply(old, value[key]));
      }
    } else if (part === "n" && isObject(value)) {
      for (const key of Object.keys(value)) {
        const old = Object.hasOwn(out, key) ? out[key] : undefined;
        const inc = value[key];
        if (!Number.isInteger(old) || !Number.isInteger(inc)) {
          throw new DeltaError(`delta adds to ${short(key)}, which is not an integer on both sides`);
        }
        put(out, key, (old as number) + (inc as number));
      }
    } else if (part === "s" && isObject(value)) {
      for (const key of Object.keys(value)) put(out, key, value[key]);
    } else if (part === "r" && Array.isArray(value)) {
      for (const key of value) {
        if (typeof key !== "string") throw new DeltaError("delta removes a key that is not a string");
        delete out[key];
      }
    } else if (PARTS.has(part)) {
      throw new DeltaError("delta parts have the wrong type");
    } else {
      throw new DeltaError("delta has unknown parts");
    }
  }
  return out;
}
