/**
 * @file The timing loop the A/B scripts of bench/ share: variants run in turns within each round
 * in one process, so load from other jobs on a shared machine hits them alike, each timed in wall
 * and process CPU ms (lavapipe's and the `wasm` backend's workers run in this process, so the
 * CPU time counts their work too, and moves less with other jobs than the wall time).
 * @module
 */
import process from "node:process";
import { pathToFileURL } from "node:url";
import { median } from "./cases/common.ts";

/** Per-unit times of one variant, one entry a round. */
export interface Timings {
  /** Wall ms per unit (a call, a step). */
  wall: number[];
  /** Process CPU ms (user + system, every thread) per unit. */
  cpu: number[];
}

/** How {@linkcode alternate} runs its variants. */
export interface AlternateOptions {
  /** Rounds; every variant runs once a round. */
  rounds: number;
  /** Units (calls, steps) a run; what `run` is asked for. */
  reps: number;
  /**
   * Reverse the order of the variants on odd rounds, so none always follows another's garbage
   * or runs on the caches another left.
   */
  alternateOrder?: boolean;
}

/**
 * Run each variant `rounds` times, in turns within each round, and time each run: `run(v, reps)`
 * does the work of `reps` units, or of as many as it returns (a step count that is not `reps`).
 * Returns each variant's {@linkcode Timings} by `name`, in the order of the variants.
 * Warm-up (compiles, pools) is the caller's: every run here is timed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { alternate } from "./_ab.ts";
 * const order: string[] = [];
 * const res = await alternate(
 *   [{ name: "a" }, { name: "b" }],
 *   { rounds: 3, reps: 2, alternateOrder: true },
 *   (v) => void order.push(v.name),
 * );
 * assert.deepEqual(order, ["a", "b", "b", "a", "a", "b"]);
 * assert.deepEqual([...res.keys()], ["a", "b"]);
 * assert.equal(res.get("a")!.wall.length, 3);
 * assert.ok(res.get("b")!.cpu.every((ms) => ms >= 0));
 * await assert.rejects(alternate([{ name: "a" }, { name: "a" }], { rounds: 1, reps: 1 }, () => {}));
 * ```
 */
export async function alternate<V extends { readonly name: string }>(
  variants: readonly V[],
  { rounds, reps, alternateOrder = false }: AlternateOptions,
  run: (v: V, reps: number) => number | void | Promise<number | void>,
): Promise<Map<string, Timings>> {
  const res = new Map<string, Timings>();
  for (const v of variants) {
    if (res.has(v.name)) {
      throw new RangeError(`Expected distinct variant names but found "${v.name}" twice`);
    }
    res.set(v.name, { wall: [], cpu: [] });
  }
  for (let r = 0; r < rounds; r++) {
    for (const v of alternateOrder && r % 2 ? [...variants].reverse() : variants) {
      const t0 = performance.now(), c0 = process.cpuUsage();
      const done = run(v, reps);
      // A synchronous run is timed without the microtask an `await` would add.
      const units = (done instanceof Promise ? await done : done) ?? reps;
      const cu = process.cpuUsage(c0);
      const e = res.get(v.name)!;
      e.wall.push((performance.now() - t0) / units);
      e.cpu.push((cu.user + cu.system) / 1000 / units);
    }
  }
  return res;
}

/** Medians and minima of a variant's {@linkcode Timings}, ms, rounded. */
export interface Summary {
  wallMs: number;
  wallMinMs: number;
  cpuMs: number;
  cpuMinMs: number;
}

/**
 * Median and min wall and CPU ms of `e`, each to `digits` decimals (each script prints them
 * under its own field names).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { summary } from "./_ab.ts";
 * assert.deepEqual(
 *   summary({ wall: [3.14, 1.04, 2.26], cpu: [6, 2, 4] }),
 *   { wallMs: 2.3, wallMinMs: 1, cpuMs: 4, cpuMinMs: 2 },
 * );
 * ```
 */
export function summary(e: Timings, digits = 1): Summary {
  const r = (x: number) => +x.toFixed(digits);
  return {
    wallMs: r(median(e.wall)),
    wallMinMs: r(Math.min(...e.wall)),
    cpuMs: r(median(e.cpu)),
    cpuMinMs: r(Math.min(...e.cpu)),
  };
}

/**
 * The checkouts an A/B script compares: each directory of `--base` (comma-separated; a plain
 * copy of another commit's tree, e.g. `git archive <rev> | tar -x -C DIR`), named `base`,
 * `base2`, …, then this checkout, named `this`. Throws when `--base` is missing.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { abRoots } from "./_ab.ts";
 * const roots = abRoots(".", new URL("../", import.meta.url));
 * assert.deepEqual(roots.map((r) => r.name), ["base", "this"]);
 * assert.throws(() => abRoots(undefined, new URL("../", import.meta.url)), RangeError);
 * ```
 */
export function abRoots(base: string | undefined, here: URL): { name: string; root: URL }[] {
  if (!base) throw new RangeError("--base: expected the directory of the other commit");
  const roots = base.split(",").map((dir, i) => ({
    name: i === 0 ? "base" : `base${i + 1}`,
    root: pathToFileURL(Deno.realPathSync(dir) + "/"),
  }));
  return [...roots, { name: "this", root: here }];
}
