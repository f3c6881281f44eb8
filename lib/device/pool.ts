/**
 * @file A pool of GPU storage buffers keyed by size class. Freed buffers go back to the pool
 * at once: every later use is recorded after the last use of the old owner in the same
 * command stream, so reuse is ordered correctly without waiting for the GPU.
 * @module
 */

/**
 * Usage of every pooled storage buffer. UNIFORM too: on CPU adapters the matmul reads a
 * weight through a uniform binding of part of its buffer (kernels/matmul.ts `uniformChunk`).
 */
export const STORAGE_USAGE: number = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ |
  0x08 /* COPY_DST */ | 0x40; /* UNIFORM */

/**
 * Round a byte size up to its size class: powers of two up to 64 KiB, then eight classes
 * per octave (at most 12.5% waste), always a multiple of 16 bytes and never below 16.
 * A class never exceeds `limit` when the request itself fits under it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sizeClass } from "./pool.ts";
 * assert.equal(sizeClass(100), 128);
 * assert.equal(sizeClass(70000), 81920);
 * ```
 */
export function sizeClass(bytes: number, limit = Infinity): number {
  // Multiples of 16 bytes: vec4 kernels may then run over the tail of any storage.
  const b = Math.max(16, Math.ceil(bytes / 16) * 16);
  let c: number;
  if (b <= 65536) c = 2 ** Math.ceil(Math.log2(b));
  else {
    const step = 2 ** Math.ceil(Math.log2(b)) / 8;
    c = Math.ceil(b / step) * step;
  }
  return c > limit && b <= limit ? b : c;
}

/** Counters a pool reports. */
export interface PoolStats {
  /** Bytes held by buffers waiting in the pool. */
  pooledBytes: number;
  /** Buffers created since the pool was made. */
  created: number;
  /** Acquisitions served from the pool. */
  reused: number;
}

/**
 * Size-classed buffer pool with a cap on retained bytes. Buffers above the cap are handed
 * to `discard` (the runtime destroys them after the next submit, since recorded but
 * unsubmitted work may still reference them).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { BufferPool } from "./pool.ts";
 * const made: number[] = [];
 * const pool = new BufferPool<{ size: number }>(
 *   (bytes) => { made.push(bytes); return { size: bytes }; },
 *   () => {},
 *   1 << 20,
 * );
 * const a = pool.acquire(100);
 * pool.release(a);
 * const b = pool.acquire(120); // same class (128 bytes): reused
 * assert.equal(b, a);
 * assert.deepEqual(made, [128]);
 * ```
 */
export class BufferPool<B extends { size: number }> {
  #free = new Map<number, B[]>();
  // When each pooled buffer became safe to overwrite from the queue (see `acquireIdle`).
  #mark = new WeakMap<B, number>();
  #pooled = 0;
  #created = 0;
  #reused = 0;

  /**
   * @param create makes a buffer of exactly `bytes` bytes
   * @param discard disposes of a buffer the pool will not keep
   * @param capBytes the most bytes the pool retains
   * @param limit the largest size class (the device's binding limit)
   */
  constructor(
    readonly create: (bytes: number) => B,
    readonly discard: (b: B) => void,
    readonly capBytes: number,
    readonly limit = Infinity,
    readonly clock: { releaseMark(): number; now(): number } = {
      releaseMark: () => 0,
      now: () => 0,
    },
  ) {}

  /**
   * A pooled buffer of `bytes`' size class that no unsubmitted work can still read, or `null`:
   * one whose release mark (`clock.releaseMark()` when it was released) is at most
   * `clock.now()`. `queue.writeBuffer` into it is then safe, since the write is ordered after
   * every submitted command buffer and nothing pending refers to it. The oldest release is
   * tried, as the likeliest to qualify.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { BufferPool } from "./pool.ts";
   * let submits = 0, open = true; // an encoder is recording work
   * const pool = new BufferPool((n) => ({ size: n }), () => {}, 1 << 20, Infinity, {
   *   releaseMark: () => submits + (open ? 1 : 0),
   *   now: () => submits,
   * });
   * const b = pool.acquire(64);
   * pool.release(b); // the open encoder may still read b
   * assert.equal(pool.acquireIdle(64), null);
   * submits++; // that encoder is submitted
   * assert.equal(pool.acquireIdle(64), b);
   * ```
   */
  acquireIdle(bytes: number): B | null {
    const c = sizeClass(bytes, this.limit);
    const list = this.#free.get(c);
    const b = list?.[0];
    if (!b || (this.#mark.get(b) ?? 0) > this.clock.now()) return null;
    list!.shift();
    this.#pooled -= c;
    this.#reused++;
    return b;
  }

  /** A buffer of at least `bytes` bytes (its `size` is the size class). */
  acquire(bytes: number): B {
    const c = sizeClass(bytes, this.limit);
    const list = this.#free.get(c);
    const b = list?.pop();
    if (b) {
      this.#pooled -= c;
      this.#reused++;
      return b;
    }
    this.#created++;
    return this.create(c);
  }

  /** Return a buffer; it is kept if the pool is under its cap, else discarded. */
  release(b: B): void {
    if (this.#pooled + b.size > this.capBytes) {
      this.discard(b);
      return;
    }
    let list = this.#free.get(b.size);
    if (!list) this.#free.set(b.size, list = []);
    list.push(b);
    this.#mark.set(b, this.clock.releaseMark());
    this.#pooled += b.size;
  }

  /** Discard every pooled buffer. */
  clear(): void {
    for (const list of this.#free.values()) for (const b of list) this.discard(b);
    this.#free.clear();
    this.#pooled = 0;
  }

  /** Counters. */
  stats(): PoolStats {
    return { pooledBytes: this.#pooled, created: this.#created, reused: this.#reused };
  }
}
