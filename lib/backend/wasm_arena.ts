/**
 * @file Where the `wasm` backend's arrays live: regions of its one shared WebAssembly memory,
 * handed out as `Float32Array` views, so its kernels read their inputs and write their results
 * where the arrays are. Before this, every kernel call copied its inputs into the memory and its
 * results out (~790 MB and ~54 ms of a 370 ms DiT training step, on the calling thread while
 * the workers waited).
 *
 * Regions come in size classes (16 per power of two, so at most 1/16 of a region is unused and
 * nearby lengths, such as a product's padded rows and an activation, share a class), are kept
 * by class when freed, and are cut from the top of the memory when no freed one fits. The
 * memory never shrinks (a WebAssembly memory cannot), so the arena stops at `limit` floats:
 * past it, {@linkcode Arena.take} returns null and the backend uses plain arrays (copied in
 * and out as before). A view dropped without being given back (its storage collected by the GC)
 * returns its region through a FinalizationRegistry.
 * @module
 */

/** Floats a region is aligned to (64 bytes: one cache line). */
const ALIGN = 16;

/**
 * The size class of `n` floats: `n` rounded up to 16 steps per power of two and to whole
 * cache lines.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sizeClass } from "./wasm_arena.ts";
 * assert.equal(sizeClass(1), 16);
 * assert.equal(sizeClass(401408), 409600); // [3136, 128]: 25 · 2^14
 * assert.equal(sizeClass(401408 + 5 * 128), 409600); // and a product's padded rows: the same class
 * ```
 */
export function sizeClass(n: number): number {
  if (n <= ALIGN) return ALIGN;
  const e = Math.max(0, Math.floor(Math.log2(n)) - 4);
  const c = Math.ceil(n / 2 ** e) * 2 ** e;
  return Math.ceil(c / ALIGN) * ALIGN;
}

/**
 * Float32Array regions of a shared WebAssembly memory (see the module doc). Offsets are in
 * floats; `base` floats at the start are not the arena's (the workers' control blocks).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Arena } from "./wasm_arena.ts";
 * const mem = new WebAssembly.Memory({ initial: 1, maximum: 1024, shared: true });
 * const arena = new Arena(mem, 256, 1 << 20);
 * const a = arena.take(1000)!;
 * assert.equal(a.length, 1000);
 * assert.equal(arena.offsetOf(a), 256); // where a kernel finds it
 * assert.equal(arena.offsetOf(new Float32Array(4)), -1); // not in the memory
 * arena.give(a);
 * assert.equal(arena.offsetOf(arena.take(1001)!), 256); // the same class: the region again
 * ```
 */
export class Arena {
  readonly #mem: WebAssembly.Memory;
  readonly #limit: number;
  #top: number;
  #cut = 0; // floats of the regions cut for arrays (not forced ones)
  readonly #free = new Map<number, number[]>();
  // The region (offset, class) behind each view handed out and not yet given back.
  readonly #regions = new WeakMap<Float32Array, { at: number; cls: number }>();
  readonly #buffers = new WeakSet<ArrayBufferLike>();
  readonly #registry: FinalizationRegistry<{ at: number; cls: number }>;
  /** Called before a freed region is handed out again (the backend waits for its workers). */
  beforeReuse: () => void = () => {};

  /**
   * An arena over `mem` from float `base`, whose arrays' regions take at most `limit` floats
   * (forced regions, the backend's scratch, do not count).
   */
  constructor(mem: WebAssembly.Memory, base: number, limit: number) {
    this.#mem = mem;
    this.#top = Math.ceil(base / ALIGN) * ALIGN;
    this.#limit = limit;
    this.#buffers.add(mem.buffer);
    this.#registry = new FinalizationRegistry((r) => this.#release(r.at, r.cls));
  }

  /** The first float no region has reached (the memory past it is unused). */
  get top(): number {
    return this.#top;
  }

  /** Grow the memory to at least `floats` (plus a page of slack for kernels' over-reads). */
  ensure(floats: number): void {
    const bytes = floats * 4 + 65536, have = this.#mem.buffer.byteLength;
    if (bytes > have) {
      this.#mem.grow(Math.ceil((bytes - have) / 65536));
      this.#buffers.add(this.#mem.buffer);
    }
  }

  /** A region of at least `cap` floats (offset), or -1 past the arena's limit (unless `force`). */
  region(cap: number, force = false): number {
    const cls = sizeClass(cap);
    const list = this.#free.get(cls);
    if (list !== undefined && list.length > 0) {
      this.beforeReuse();
      return list.pop()!;
    }
    if (!force) {
      if (this.#cut + cls > this.#limit) return -1;
      this.#cut += cls;
    }
    const at = this.#top;
    this.#top += cls;
    this.ensure(this.#top);
    return at;
  }

  /** Return a region of `cap` floats taken with {@linkcode Arena.region}. */
  release(at: number, cap: number): void {
    this.#release(at, sizeClass(cap));
  }

  #release(at: number, cls: number): void {
    let list = this.#free.get(cls);
    if (list === undefined) this.#free.set(cls, list = []);
    list.push(at);
  }

  /**
   * A view of `n` floats on a region of at least `cap` (≥ n: room a kernel may write past the
   * view's end), or null past the arena's limit. Contents are unspecified.
   */
  take(n: number, cap = n): Float32Array | null {
    const at = this.region(Math.max(n, cap, 1));
    if (at < 0) return null;
    const a = new Float32Array(this.#mem.buffer, at * 4, n);
    const r = { at, cls: sizeClass(Math.max(n, cap, 1)) };
    this.#regions.set(a, r);
    this.#registry.register(a, r, a);
    return a;
  }

  /** Give back a view from {@linkcode Arena.take}; false (and nothing done) for any other. */
  give(a: Float32Array): boolean {
    const r = this.#regions.get(a);
    if (r === undefined) return false;
    this.#regions.delete(a);
    this.#registry.unregister(a);
    this.#release(r.at, r.cls);
    return true;
  }

  /**
   * Floats of the region behind `a` (a view from {@linkcode Arena.take}, not given back; ≥ its
   * length), or 0 for any other array.
   */
  capacity(a: Float32Array): number {
    return this.#regions.get(a)?.cls ?? 0;
  }

  /** The float offset of `a` in the memory, or -1 when `a` is not a view of it. */
  offsetOf(a: Float32Array): number {
    return this.#buffers.has(a.buffer) ? a.byteOffset >> 2 : -1;
  }
}
