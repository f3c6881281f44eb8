/**
 * @file Shared pieces of the flow benchmark cases (`toy-cfm`, `sinkhorn`, `sample`) and of the
 * A/B scripts of bench/: the context they need from `bench/bench.ts`, number formatting, timing
 * helpers, and seeded inputs.
 * @module
 */
import type { Gpu } from "../harness.ts";
import type { TfjsPeer } from "../peers/tfjs.ts";
import { getBackend, init, setBackend } from "../../mod.ts";

/** What a case needs from the bench run (a structural subset of `bench.ts`'s context). */
export interface CaseContext {
  gpu: Gpu;
  smoke: boolean;
  /** tfjs on the same adapter, loaded on first use (`null` if it failed to load). */
  tfjs(): Promise<TfjsPeer | null>;
}

/** One line of output. */
export type BenchRecord = Record<string, unknown>;

/**
 * Round to `d + 2` significant digits; non-finite and missing values become `null`.
 *
 * @example
 * ```ts
 * import { round } from "./common.ts";
 * if (round(1.234567, 1) !== 1.23 || round(NaN) !== null) throw new Error("bad");
 * ```
 */
export function round(x: number | null | undefined, d = 3): number | null {
  return x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toPrecision(d + 2));
}

/**
 * Median of a non-empty list.
 *
 * @example
 * ```ts
 * import { median } from "./common.ts";
 * if (median([3, 1, 2]) !== 2 || median([1, 2, 3, 4]) !== 2.5) throw new Error("bad");
 * ```
 */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError("Expected a non-empty list of samples but found []");
  const s = [...xs].sort((x, y) => x - y), h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

/**
 * `n` seeded uniform floats in [−scale, scale), made on the host by an LCG: the numbers only need
 * to be non-degenerate, and any backend (another checkout's too) can upload them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { floats } from "./common.ts";
 * const x = floats(1000, 1), y = floats(1000, 1, 2);
 * assert.deepEqual(x, floats(1000, 1));
 * assert.notDeepEqual(x, floats(1000, 2));
 * assert.ok(x.every((v) => v >= -1 && v < 1) && y.every((v, i) => v === 2 * x[i]!));
 * ```
 */
export function floats(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return scale * (s / 2 ** 31 - 1);
  });
}

/** Median, min and max of a list of repetitions. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

/**
 * Median, min and max of a non-empty list (every bench figure is reported with its spread).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { spread } from "./common.ts";
 * assert.deepEqual(spread([3, 1, 2, 9, 5]), { median: 3, min: 1, max: 9 });
 * ```
 */
export function spread(xs: readonly number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/**
 * Fields `<name>_min` and `<name>_max`, rounded, for a record; none when `s` is missing.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { spreadFields } from "./common.ts";
 * assert.deepEqual(spreadFields("ours", { min: 1, max: 3 }), { ours_min: 1, ours_max: 3 });
 * assert.deepEqual(spreadFields("torch_cpu", null), {});
 * ```
 */
export function spreadFields(
  name: string,
  s: { min: number; max: number } | null | undefined,
): Record<string, number | null> {
  return s ? { [`${name}_min`]: round(s.min), [`${name}_max`]: round(s.max) } : {};
}

/** Timed repetitions per figure outside `--smoke` (issue 18: the median of at least 5). */
export const BENCH_REPS = 5;

/**
 * a / b, rounded, or `null` when either is missing.
 *
 * @example
 * ```ts
 * import { ratio } from "./common.ts";
 * if (ratio(6, 3) !== 2 || ratio(1, null) !== null) throw new Error("bad");
 * ```
 */
export function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : round(a / b);
}

/**
 * The message of a thrown value, for `*_skipped` fields.
 *
 * @example
 * ```ts
 * import { why } from "./common.ts";
 * if (why(new Error("no torch")) !== "no torch") throw new Error("bad");
 * ```
 */
export function why(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  // Python tracebacks are long; the last line names the error.
  const lines = m.trim().split("\n");
  return lines.length > 2 ? `${lines[0]} … ${lines[lines.length - 1]}` : m;
}

/**
 * Fields naming our backend and the adapter, shared by every record of these cases.
 *
 * @example
 * ```ts
 * import { ourBackend } from "./common.ts";
 * console.log(ourBackend().backend); // "webgpu" or "cpu"
 * ```
 */
export function ourBackend(): { backend: string; backend_device: string } {
  const be = getBackend();
  return { backend: be.name, backend_device: be.description };
}

/**
 * Run `f` with the `wasm` backend current (WebAssembly SIMD on this machine's cores, the
 * CPU-only alternative to a software WebGPU adapter), then restore the previous backend.
 * Returns `{ skipped }` when the engine cannot start it.
 *
 * @example
 * ```ts
 * import { onWasm } from "./common.ts";
 * import { getBackend } from "../../mod.ts";
 * const r = await onWasm(() => Promise.resolve(getBackend().name));
 * if ("value" in r && r.value !== "wasm") throw new Error("bad");
 * ```
 */
export async function onWasm<T>(
  f: () => Promise<T>,
): Promise<{ value: T; device: string } | { skipped: string }> {
  const prev = getBackend().name;
  let be;
  try {
    be = await init({ backend: "wasm" });
  } catch (e) {
    return { skipped: why(e) };
  }
  try {
    return { value: await f(), device: be.description };
  } finally {
    setBackend(prev);
  }
}
