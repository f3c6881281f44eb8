/**
 * @file Generic helpers with no dependencies on library code: products, assertions,
 * and the typed errors every layer raises.
 * @module
 */

/**
 * Product of a list of integers (1 for an empty list).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { prod } from "./_util.ts";
 * assert.equal(prod([2, 3, 4]), 24);
 * assert.equal(prod([]), 1); // the empty product (a scalar's size)
 * ```
 */
export function prod(xs: readonly number[]): number {
  let p = 1;
  for (const x of xs) p *= x;
  return p;
}

/**
 * Format a shape the way error messages show it: `[2, 3]`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fmtShape } from "./_util.ts";
 * assert.equal(fmtShape([2, 3]), "[2, 3]");
 * ```
 */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * Throw a `RangeError` unless `n` is an integer in `[lo, hi]`; `name` names the input.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkInt } from "./_util.ts";
 * assert.equal(checkInt("steps", 10, 1), 10);
 * assert.throws(() => checkInt("steps", 0, 1), /Expected steps to be an integer >= 1 but found 0/);
 * assert.throws(() => checkInt("steps", 2.5), RangeError);
 * ```
 */
export function checkInt(name: string, n: number, lo = -Infinity, hi = Infinity): number {
  if (!Number.isInteger(n) || n < lo || n > hi) {
    const range = hi === Infinity ? `>= ${lo}` : `in [${lo}, ${hi}]`;
    throw new RangeError(`Expected ${name} to be an integer ${range} but found ${n}`);
  }
  return n;
}

/**
 * Throw a `RangeError` unless `x` is a finite number within `[lo, hi]`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkNumber } from "./_util.ts";
 * assert.equal(checkNumber("lr", 1e-3, 0), 1e-3);
 * assert.throws(() => checkNumber("lr", NaN), RangeError);
 * assert.throws(() => checkNumber("lr", -1, 0), /lr/);
 * ```
 */
export function checkNumber(name: string, x: number, lo = -Infinity, hi = Infinity): number {
  if (typeof x !== "number" || !Number.isFinite(x) || x < lo || x > hi) {
    throw new RangeError(`Expected ${name} to be a finite number in [${lo}, ${hi}] but found ${x}`);
  }
  return x;
}

/**
 * Throw a `RangeError` unless `value` is one of `choices`; the message lists them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkChoice } from "./_util.ts";
 * const s: "a" | "b" = checkChoice("mode", "a", ["a", "b"] as const);
 * assert.equal(s, "a");
 * assert.throws(() => checkChoice("mode", "c", ["a", "b"]), /expected one of "a", "b"/);
 * ```
 */
export function checkChoice<T extends string>(
  name: string,
  value: string,
  choices: readonly T[],
): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new RangeError(
      `Unknown ${name} "${value}": expected one of ${choices.map((c) => `"${c}"`).join(", ")}`,
    );
  }
  return value as T;
}

/**
 * Read an environment variable without requiring `--allow-env` to have been granted:
 * returns `undefined` when permission is missing, so importing the library stays
 * permission-free.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { envGet } from "./_util.ts";
 * // Only FLOWGPU_BACKEND may be read here: any other variable reads as unset, without throwing.
 * assert.equal(envGet("FLOWGPU_BACKEND"), Deno.env.get("FLOWGPU_BACKEND"));
 * assert.equal(envGet("HOME"), undefined);
 * ```
 */
export function envGet(name: string): string | undefined {
  try {
    // deno-lint-ignore no-explicit-any
    const d = (globalThis as any).Deno;
    if (!d?.permissions?.querySync) return undefined;
    if (d.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return d.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * The `Deno` namespace, for the few functions that read or write files; the one place the
 * library reaches it, so the library imports (and bundles for a browser) without touching
 * `Deno` at module load. Outside Deno it throws a `TypeError` that names the function
 * (`what`) and what to do in a browser instead (`instead`).
 *
 * @example
 * ```ts
 * import { denoApi } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 * assert.equal(typeof denoApi("loadNpy", "pass bytes to decodeNpy").readFile, "function");
 * ```
 */
export function denoApi(what: string, instead: string): typeof Deno {
  const d = (globalThis as { Deno?: typeof Deno }).Deno;
  if (d === undefined || typeof d.readFile !== "function") {
    throw new TypeError(`${what} needs file access (Deno); in a browser ${instead} instead`);
  }
  return d;
}

/**
 * Whether `e` is Deno's "file not found" error (checked by name, so no `Deno` global is
 * needed to ask).
 *
 * @example
 * ```ts
 * import { isNotFound } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 * assert.equal(isNotFound(await Deno.stat("./no-such-file.txt").catch((e) => e)), true);
 * ```
 */
export function isNotFound(e: unknown): boolean {
  return e instanceof Error && e.name === "NotFound";
}
