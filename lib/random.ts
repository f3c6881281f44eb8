/**
 * @file Counter-based random numbers (Philox 4x32-10). A `Generator` is a key plus a block
 * counter; every draw advances the counter by the blocks it used, so a run is reproducible
 * from its seed and the counter can be saved in a checkpoint. The same bits come out of the
 * CPU and WebGPU backends.
 * @module
 */
import { Tensor, unary } from "./tensor.ts";
import { getBackend } from "./backend/select.ts";
import { philox4x32, randomBlocks, type RandomKind } from "./philox.ts";
import { checkShape, sizeOf } from "./shape.ts";
import { checkInt } from "./_util.ts";
import { captureHooks } from "./capture.ts";

/** Serializable generator state. */
export interface GeneratorState {
  /** The seed (the Philox key). */
  seed: number;
  /** Philox blocks consumed so far. */
  counter: number;
}

/**
 * A seeded stream of random tensors.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator } from "../mod.ts";
 * import { randomStream } from "./philox.ts";
 * const g = new Generator(0);
 * const x = g.normal([4, 2]);
 * const y = g.uniform([3]);
 * // Counter-based: the draws are Philox blocks 0–3 (8 normals, two per block) and then
 * // block 4 (uniforms) under key (seed, 0), on any backend.
 * assert.deepEqual([...await x.data()], [...randomStream("normal", 8, { key: [0, 0], counter: [0, 0] })]);
 * assert.deepEqual([...await y.data()], [...randomStream("uniform", 3, { key: [0, 0], counter: [4, 0] })]);
 * assert.equal(g.counter, 5);
 * ```
 */
export class Generator {
  /** The seed (the Philox key is derived from it). */
  readonly seed: number;
  /** Blocks consumed so far. */
  counter: number;
  readonly #key: [number, number];

  /** A generator for `seed` (an integer in [0, 2^53)). */
  constructor(seed: number, counter = 0) {
    checkInt("seed", seed, 0, Number.MAX_SAFE_INTEGER);
    this.seed = seed;
    this.counter = counter;
    this.#key = [seed >>> 0, Math.floor(seed / 0x100000000) >>> 0];
  }

  /** State for a checkpoint. */
  state(): GeneratorState {
    return { seed: this.seed, counter: this.counter };
  }

  /** Restore from `state()`. */
  static fromState(s: GeneratorState): Generator {
    return new Generator(s.seed, s.counter);
  }

  #draw(kind: RandomKind, shape: readonly number[]): Tensor {
    const s = checkShape(shape);
    const n = sizeOf(s);
    const be = getBackend();
    const c = this.counter;
    const blocks = randomBlocks(kind, n);
    // Inside a captured step, a replay redoes this draw's advance and reads its counter.
    const hooks = captureHooks();
    let at = c;
    hooks?.host(() => {
      at = this.counter;
      this.counter += blocks;
    });
    const st = be.random(kind, n, {
      key: this.#key,
      counter: [c >>> 0, Math.floor(c / 0x100000000) >>> 0],
      ...(hooks ? { dynamicCounter: () => at } : {}),
    });
    this.counter += blocks;
    return Tensor._fromStorage(st, s, be);
  }

  /** Uniform in [0, 1) (24-bit resolution), or [low, high). */
  uniform(shape: readonly number[], low = 0, high = 1): Tensor {
    const u = this.#draw("uniform", shape);
    if (low === 0 && high === 1) return u;
    const r = unary("affine", u, high - low, low);
    u.dispose();
    return r;
  }

  /** Standard normal (Box–Muller), or N(mean, std²). */
  normal(shape: readonly number[], mean = 0, std = 1): Tensor {
    const z = this.#draw("normal", shape);
    if (mean === 0 && std === 1) return z;
    const r = unary("affine", z, std, mean);
    z.dispose();
    return r;
  }

  /** Raw 32-bit words, bit-cast to f32 (for tests of the generator itself). */
  bits(shape: readonly number[]): Tensor {
    return this.#draw("bits", shape);
  }

  /** Integers uniform in [low, high), as f32. */
  randint(low: number, high: number, shape: readonly number[]): Tensor {
    checkInt("low", low);
    checkInt("high", high, low + 1);
    // f32 holds integers exactly only up to 2^24.
    checkInt("high - low", high - low, 1, 2 ** 24);
    const u = this.#draw("uniform", shape);
    // floor(u·n) < n holds in f32 for n <= 2^24 since u <= 1 − 2^-24; shifting by `low` after
    // the floor keeps it, whereas floor(u·n + low) rounds up to `high` when |low| >> n.
    const scaled = unary("affine", u, high - low, 0);
    const f = unary("floor", scaled);
    const r = unary("affine", f, 1, low);
    u.dispose();
    scaled.dispose();
    f.dispose();
    return r;
  }

  /** Host-side uniform numbers from the same stream (for shuffling and index choice). */
  uniformHost(n: number): Float64Array {
    // Host numbers drawn inside a captured step would be stale in a replay.
    captureHooks()?.refuse("the step drew host random numbers");
    const out = new Float64Array(n);
    const blocks = Math.ceil(n / 4);
    for (let b = 0; b < blocks; b++) {
      const c = this.counter + b;
      const w = philox4x32([c >>> 0, Math.floor(c / 0x100000000) >>> 0, 0, 0], this.#key);
      for (let h = 0; h < 4 && 4 * b + h < n; h++) out[4 * b + h] = (w[h]! >>> 8) / 16777216;
    }
    this.counter += blocks;
    return out;
  }

  /** A random permutation of [0, n) (Fisher–Yates on host draws) as an Int32Array. */
  permutationHost(n: number): Int32Array {
    checkInt("n", n, 0);
    const u = this.uniformHost(n);
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(u[i]! * (i + 1));
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }

  /** A random permutation of [0, n) as a 1-D f32 tensor (identical on both backends). */
  permutation(n: number): Tensor {
    const p = this.permutationHost(n);
    const be = getBackend();
    return Tensor._fromStorage(be.upload(Float32Array.from(p)), [n], be);
  }

  /** A new generator whose stream is independent of this one's (a derived key). */
  fork(): Generator {
    const w = philox4x32([this.counter >>> 0, 0, 0xa5a5a5a5, 0x5a5a5a5a], this.#key);
    this.counter += 1;
    return new Generator(w[0]! + (w[1]! & 0x1fffff) * 0x100000000);
  }
}

let globalGen = new Generator(0);

/**
 * Reseed the global generator used when no `seed`/`generator` is given.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { manualSeed, randn } from "../mod.ts";
 * manualSeed(42);
 * const a = await randn([3]).data();
 * manualSeed(42);
 * assert.deepEqual([...await randn([3]).data()], [...a]); // same seed, same draws
 * ```
 */
export function manualSeed(seed: number): void {
  globalGen = new Generator(seed);
}

/** Options for the random creation functions. */
export interface RandomOptions {
  /** A fixed seed: the same tensor on every call and on both backends. */
  seed?: number;
  /** A generator to draw from (advances it). */
  generator?: Generator;
}

function gen(o: RandomOptions): Generator {
  if (o.generator) return o.generator;
  if (o.seed !== undefined) return new Generator(o.seed);
  return globalGen;
}

/**
 * Standard normal samples.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randn } from "../mod.ts";
 * const x = await randn([1000, 2], { seed: 0 }).data();
 * // 2000 standard normals: the sample mean is within 4 standard errors (4/√2000) of 0 and
 * // the sample variance within 4·√(2/2000) of 1.
 * const m = x.reduce((s, v) => s + v, 0) / x.length;
 * const v = x.reduce((s, u) => s + (u - m) ** 2, 0) / x.length;
 * assert.ok(Math.abs(m) < 4 / Math.sqrt(2000), `mean ${m}`);
 * assert.ok(Math.abs(v - 1) < 4 * Math.sqrt(2 / 2000), `variance ${v}`);
 * ```
 */
export function randn(shape: readonly number[], opts: RandomOptions = {}): Tensor {
  return gen(opts).normal(shape);
}

/**
 * Uniform samples in [0, 1).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { rand } from "../mod.ts";
 * const u = await rand([10], { seed: 1 }).data();
 * assert.ok(u.every((v) => v >= 0 && v < 1));
 * assert.deepEqual([...await rand([10], { seed: 1 }).data()], [...u]); // reproducible
 * ```
 */
export function rand(shape: readonly number[], opts: RandomOptions = {}): Tensor {
  return gen(opts).uniform(shape);
}

/**
 * Integers uniform in [low, high), as f32.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randint } from "../mod.ts";
 * const k = await randint(0, 10, [5], { seed: 2 }).data();
 * assert.ok(k.every((v) => Number.isInteger(v) && v >= 0 && v < 10));
 * ```
 */
export function randint(
  low: number,
  high: number,
  shape: readonly number[],
  opts: RandomOptions = {},
): Tensor {
  return gen(opts).randint(low, high, shape);
}

/**
 * A random permutation of [0, n).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { permutation } from "../mod.ts";
 * const p = await permutation(5, { seed: 3 }).data();
 * assert.deepEqual([...p].sort(), [0, 1, 2, 3, 4]); // each index exactly once
 * ```
 */
export function permutation(n: number, opts: RandomOptions = {}): Tensor {
  return gen(opts).permutation(n);
}

/**
 * Normal samples shaped like `x`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { randn, randnLike, zeros } from "../mod.ts";
 * const e = randnLike(zeros([3, 2]), { seed: 0 });
 * assert.deepEqual([...e.shape], [3, 2]);
 * assert.deepEqual([...await e.data()], [...await randn([3, 2], { seed: 0 }).data()]);
 * ```
 */
export function randnLike(x: Tensor, opts: RandomOptions = {}): Tensor {
  // Drawn in x's shape directly: a reshape of a flat draw would pin the flat tensor's
  // storage after the caller disposes the result (the stream is the same either way).
  return randn(x.shape, opts);
}
