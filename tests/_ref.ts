/**
 * @file Independent f64 reference implementations for tests: plain loops over row-major
 * arrays with NumPy broadcasting, a seeded JS PRNG (not the engine's Philox), and a
 * high-precision erf. Nothing here calls the engine, so it can check every backend.
 * @module
 */

/** A dense row-major f64 array. */
export interface Arr {
  shape: number[];
  data: Float64Array;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Row-major strides. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** Wrap data (any array-like, copied to f64) with a shape. */
export function arr(shape: readonly number[], data: ArrayLike<number>): Arr {
  if (data.length !== numel(shape)) throw new Error(`ref: bad size for [${shape}]`);
  return { shape: [...shape], data: Float64Array.from(data) };
}

/** Multi-index of flat index `i`. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
}

/** NumPy broadcast of several shapes (throws on mismatch). */
export function bshape(...shapes: (readonly number[])[]): number[] {
  const n = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let d = 1;
    for (const s of shapes) {
      const v = s[s.length - n + i] ?? 1;
      if (v !== 1) {
        if (d !== 1 && d !== v) throw new Error("ref: no broadcast");
        d = v;
      }
    }
    out.push(d);
  }
  return out;
}

/** Element of `a` that lands at output multi-index `idx` under broadcasting. */
export function bget(a: Arr, idx: readonly number[]): number {
  const off = idx.length - a.shape.length;
  let flat = 0;
  for (let d = 0; d < a.shape.length; d++) {
    flat = flat * a.shape[d]! + (a.shape[d] === 1 ? 0 : idx[off + d]!);
  }
  return a.data[flat]!;
}

/** Elementwise map over broadcast inputs. */
export function mapN(inputs: readonly Arr[], f: (...v: number[]) => number): Arr {
  const shape = bshape(...inputs.map((a) => a.shape));
  const n = numel(shape);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape);
    data[i] = f(...inputs.map((a) => bget(a, idx)));
  }
  return { shape, data };
}

/** Fold over `axes` (sorted, unique) with keepdims. `f` gets all values of one group. */
export function reduceRef(
  a: Arr,
  axes: readonly number[],
  keepdims: boolean,
  f: (vals: number[]) => number,
): Arr {
  const kept = a.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const groups = new Map<number, number[]>();
  for (let i = 0; i < a.data.length; i++) {
    const idx = unravel(i, a.shape);
    let k = 0;
    for (let d = 0; d < idx.length; d++) k = k * kept[d]! + (axes.includes(d) ? 0 : idx[d]!);
    let g = groups.get(k);
    if (!g) groups.set(k, g = []);
    g.push(a.data[i]!);
  }
  const n = numel(kept);
  const data = new Float64Array(n);
  for (let k = 0; k < n; k++) data[k] = f(groups.get(k) ?? []);
  const shape = keepdims ? kept : a.shape.filter((_, i) => !axes.includes(i));
  return { shape, data };
}

/** 2-D matrix product of [m, k] and [k, n] (plain triple loop). */
export function matmul2d(a: Float64Array, b: Float64Array, m: number, k: number, n: number) {
  const o = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
      o[i * n + j] = s;
    }
  }
  return o;
}

/** Transpose the last two axes. */
export function tlast(a: Arr): Arr {
  const r = a.shape.length;
  const m = a.shape[r - 2]!, n = a.shape[r - 1]!;
  const batch = numel(a.shape.slice(0, -2));
  const data = new Float64Array(a.data.length);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) data[b * m * n + j * m + i] = a.data[b * m * n + i * n + j]!;
    }
  }
  return { shape: [...a.shape.slice(0, -2), n, m], data };
}

/** NumPy matmul semantics for rank >= 2 operands (batch axes broadcast). */
export function matmulRef(a: Arr, b: Arr): Arr {
  const m = a.shape.at(-2)!, k = a.shape.at(-1)!, n = b.shape.at(-1)!;
  if (b.shape.at(-2) !== k) throw new Error("ref: matmul mismatch");
  const batch = bshape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const nb = numel(batch);
  const data = new Float64Array(nb * m * n);
  const pick = (x: Arr, bi: number[], rows: number, cols: number) => {
    const xb = x.shape.slice(0, -2);
    const off = bi.length - xb.length;
    let flat = 0;
    for (let d = 0; d < xb.length; d++) flat = flat * xb[d]! + (xb[d] === 1 ? 0 : bi[off + d]!);
    return x.data.subarray(flat * rows * cols, (flat + 1) * rows * cols);
  };
  for (let q = 0; q < nb; q++) {
    const bi = unravel(q, batch);
    data.set(
      matmul2d(
        Float64Array.from(pick(a, bi, m, k)),
        Float64Array.from(pick(b, bi, k, n)),
        m,
        k,
        n,
      ),
      q * m * n,
    );
  }
  return { shape: [...batch, m, n], data };
}

/** All subsets of [0, rank). */
export function subsets(rank: number): number[][] {
  const out: number[][] = [];
  for (let mask = 0; mask < 1 << rank; mask++) {
    out.push([...Array(rank).keys()].filter((i) => mask & (1 << i)));
  }
  return out;
}

/** mulberry32: a tiny seeded PRNG, independent of the engine's generator. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [lo, hi), rounded to f32 (so engine inputs equal reference inputs). */
export function randArray(r: () => number, n: number, lo = -1, hi = 1): Float64Array {
  const o = new Float64Array(n);
  for (let i = 0; i < n; i++) o[i] = Math.fround(lo + (hi - lo) * r());
  return o;
}

/**
 * erf in f64 to ~1e-15: the Maclaurin series for |x| < 2.5 (terms alternate and shrink
 * fast enough there), and the Laplace continued fraction for erfc beyond.
 */
export function erf64(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // erf x = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
    let term = ax, sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= -ax * ax / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    const r = sum * 2 / Math.sqrt(Math.PI);
    return x < 0 ? -r : r;
  }
  // erfc x = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))), evaluated bottom-up.
  let f = ax;
  for (let n = 80; n >= 1; n--) f = ax + (n / 2) / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  const r = 1 - erfc;
  return x < 0 ? -r : r;
}

/** Standard normal CDF via `erf64`. */
export function normalCdf(x: number): number {
  return 0.5 * (1 + erf64(x / Math.SQRT2));
}
