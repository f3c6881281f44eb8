/**
 * @file Deterministic minibatch index streams: a seeded shuffle per epoch, and row gathering
 * from host arrays.
 * @module
 */
import type { Generator } from "../random.ts";
import { checkInt } from "../_util.ts";

/**
 * One epoch of shuffled index batches over [0, n), from a permutation drawn from `generator`.
 * With `dropLast` (default true) a final short batch is skipped.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, shuffledBatches } from "../../mod.ts";
 * const batches = [...shuffledBatches(10, 4, new Generator(0))];
 * assert.deepEqual(batches.map((b) => b.length), [4, 4]); // the partial batch of 2 is dropped
 * const seen = new Set(batches.flatMap((b) => [...b]));
 * assert.equal(seen.size, 8); // no index twice within the epoch
 * assert.ok([...seen].every((i) => i >= 0 && i < 10));
 * ```
 */
export function* shuffledBatches(
  n: number,
  batchSize: number,
  generator: Generator,
  opts: { dropLast?: boolean } = {},
): IterableIterator<Int32Array> {
  checkInt("dataset size", n, 1);
  checkInt("batch size", batchSize, 1);
  const dropLast = opts.dropLast ?? true;
  if (dropLast && batchSize > n) {
    throw new RangeError(
      `Expected batch size <= dataset size ${n} (with dropLast) but found ${batchSize}`,
    );
  }
  const perm = generator.permutationHost(n);
  for (let s = 0; s < n; s += batchSize) {
    if (dropLast && s + batchSize > n) break;
    yield perm.slice(s, Math.min(n, s + batchSize));
  }
}

/**
 * An endless stream of shuffled index batches: each epoch is a fresh permutation from the
 * generator, so a run is reproducible from its seed. Batches never straddle epochs (the short
 * tail is dropped).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Batcher, Generator } from "../../mod.ts";
 * const b = new Batcher(10, 4, new Generator(0));
 * b.next(); b.next();
 * assert.equal(b.epoch, 0);
 * b.next(); // 10 rows give two batches of 4: the third starts epoch 1
 * assert.equal(b.epoch, 1);
 * ```
 */
export class Batcher {
  /** Dataset size. */
  readonly n: number;
  /** Batch size. */
  readonly batchSize: number;
  /** Completed epochs before the current batch (0 during the first epoch). */
  epoch = 0;
  #gen: Generator;
  #perm: Int32Array;
  #pos = 0;

  /** Batches of `batchSize` indices over [0, n), shuffled by `generator`. */
  constructor(n: number, batchSize: number, generator: Generator) {
    this.n = checkInt("dataset size", n, 1);
    this.batchSize = checkInt("batch size", batchSize, 1, n);
    this.#gen = generator;
    this.#perm = generator.permutationHost(n);
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    return Math.floor(this.n / this.batchSize);
  }

  /** The next batch of indices. */
  next(): Int32Array {
    if (this.#pos + this.batchSize > this.n) {
      this.#perm = this.#gen.permutationHost(this.n);
      this.#pos = 0;
      this.epoch++;
    }
    const out = this.#perm.slice(this.#pos, this.#pos + this.batchSize);
    this.#pos += this.batchSize;
    return out;
  }
}

/**
 * Gather rows of `rowSize` values from a flat host array: out[k] = data[idx[k]].
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gatherRows } from "../../mod.ts";
 * // rows 2 and 0 of [[1, 2], [3, 4], [5, 6]]
 * assert.deepEqual([...gatherRows(new Float32Array([1, 2, 3, 4, 5, 6]), 2, Int32Array.of(2, 0))], [5, 6, 1, 2]);
 * ```
 */
export function gatherRows(
  data: Float32Array,
  rowSize: number,
  idx: ArrayLike<number>,
): Float32Array {
  checkInt("row size", rowSize, 1);
  const rows = Math.floor(data.length / rowSize);
  const out = new Float32Array(idx.length * rowSize);
  for (let k = 0; k < idx.length; k++) {
    const i = idx[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= rows) {
      throw new RangeError(`Expected row indices in [0, ${rows}) but found ${i} at position ${k}`);
    }
    out.set(data.subarray(i * rowSize, (i + 1) * rowSize), k * rowSize);
  }
  return out;
}
