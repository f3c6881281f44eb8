/**
 * @file k-means clustering on tensors (k-means++ or random init, then Lloyd iterations),
 * written against Tensor ops so it runs on the CPU and WebGPU backends alike. The data stays
 * on the device: each iteration reads back only k + 2 numbers (cluster sizes, inertia and
 * the largest point-to-center distance) for the convergence check and empty-cluster repair;
 * the n assignments are read once at the end.
 * @module
 */
import { Tensor, tidy } from "../tensor.ts";
import { linear } from "../ops/linear.ts";
import {
  argmax,
  argmin,
  binary,
  concat,
  full,
  gather,
  matmul,
  min,
  reduce,
  reshape,
  scatterAdd,
  sliceRows,
  tensor,
  unary,
  where,
} from "../ops/ops.ts";
import { Generator } from "../random.ts";
import type { Backend } from "../backend/backend.ts";
import { checkChoice, checkInt, checkNumber, fmtShape } from "../_util.ts";

/** How the initial centers are chosen. */
export type KMeansInit = "k-means++" | "random";

/** Options of {@linkcode kmeans}. */
export interface KMeansOptions {
  /** Seed of the initialisation (default 0); ignored when `generator` is given. */
  seed?: number;
  /** Random stream for the initialisation (advanced by the draws). */
  generator?: Generator;
  /** Most Lloyd updates (default 100); 0 returns the initial centers with their assignment. */
  maxIters?: number;
  /**
   * Stop when the relative change of the inertia between two consecutive assignments,
   * |J_prev − J| / J_prev, is at most `tol` (default 1e-4; 0 runs until the assignment is
   * a fixed point or `maxIters`).
   */
  tol?: number;
  /**
   * `"k-means++"` (default: D² sampling, Arthur & Vassilvitskii 2007), `"random"` (k distinct
   * rows of x), or a [k, d] tensor of initial centers on x's backend (copied, not consumed).
   */
  init?: KMeansInit | Tensor;
  /**
   * Rows per distance block: the [rows, k] distance and one-hot matrices are built a block at
   * a time, which bounds memory for large n (default: all rows while rows·k ≤ 2^24).
   */
  batch?: number;
  /** Called after every assignment step (iteration 0 is the assignment to the initial centers). */
  onIteration?: (info: KMeansIteration) => void;
}

/** What {@linkcode KMeansOptions.onIteration} receives. */
export interface KMeansIteration {
  /** Lloyd updates done so far (0 for the assignment to the initial centers). */
  iteration: number;
  /** Σ‖x_i − c_{a_i}‖² of the current assignment (as ‖x‖² + ‖c‖² − 2x·c, in f32). */
  inertia: number;
  /** |J_prev − J| / J_prev (Infinity at iteration 0). */
  relativeChange: number;
  /** Clusters left without a point by this assignment (they are re-seeded before the update). */
  emptyClusters: number;
}

/** The result of {@linkcode kmeans}. */
export interface KMeansResult {
  /**
   * [k, d] centers on x's backend (dispose it when done): those of the last assignment step,
   * so every row's assignment is its nearest center; after a stop at `tol` they are not
   * re-averaged once more.
   */
  centers: Tensor;
  /** [n] index of the nearest center of each row (ties go to the lowest index). */
  assignments: Int32Array;
  /** [k] rows assigned to each center. */
  counts: Int32Array;
  /**
   * Σ‖x_i − c_{a_i}‖² for the returned centers and assignments, summed from the differences
   * (the per-iteration values use the faster expanded form and may differ in the last digits).
   */
  inertia: number;
  /** Lloyd updates performed. */
  iterations: number;
  /** Whether the tolerance was met before `maxIters`. */
  converged: boolean;
  /** How many times an empty cluster was re-seeded. */
  reseeded: number;
}

/** One block of rows of the data, with its row norms. */
interface Block {
  /** [rows, d]. */
  x: Tensor;
  /** Index of its first row in the whole data. */
  off: number;
  rows: number;
  /** ‖x_i‖², [rows]. */
  xx: Tensor;
}

/** The data as row blocks, and the rows per distance chunk. */
interface Data {
  blocks: Block[];
  n: number;
  batch: number;
}

/** Rows [s, e) of a tensor of `n` rows (the tensor itself when that is all of it). */
function rowsOf(t: Tensor, s: number, e: number, n: number): Tensor {
  return s === 0 && e === n ? t : sliceRows(t, s, e);
}

/** Call `fn` for each chunk of at most `batch` rows of each block (global row offset `g`). */
function forChunks(
  data: Data,
  fn: (x: Tensor, xx: Tensor, g: number, rows: number) => void,
): void {
  for (const b of data.blocks) {
    for (let s = 0; s < b.rows; s += data.batch) {
      const e = Math.min(b.rows, s + data.batch);
      fn(rowsOf(b.x, s, e, b.rows), rowsOf(b.xx, s, e, b.rows), b.off + s, e - s);
    }
  }
}

function cat(ts: Tensor[]): Tensor {
  return ts.length === 1 ? ts[0]! : concat(ts, 0);
}

/** Row `idx` (a [1] index tensor into the whole data, never read back) as [1, d]. */
function rowAt(data: Data, idx: Tensor): Tensor {
  return tidy(() => {
    if (data.blocks.length === 1) return gather(data.blocks[0]!.x, idx);
    // Gather the clamped local index from every block and keep the block that holds it.
    let row: Tensor | null = null;
    for (const b of data.blocks) {
      const local = unary("clamp", unary("affine", idx, 1, -b.off), 0, b.rows - 1);
      const inside = binary("eq", local, unary("affine", idx, 1, -b.off)); // [1]
      const r = binary("mul", gather(b.x, local), reshape(inside, [1, 1]));
      row = row ? binary("add", row, r) : r;
    }
    return row!;
  });
}

/** ‖x_i − c‖² for one center c [1, d]: [n], clamped at 0 against rounding. */
function distToOne(data: Data, c: Tensor): Tensor {
  return tidy(() => {
    const cc = reduce("sum", unary("square", c), 1); // [1]
    const cm2 = unary("affine", c, -2, 0);
    return cat(data.blocks.map((b) => {
      const xc = linear(b.x, cm2, cc); // ‖c‖² − 2x·c, [rows, 1]
      return unary("clamp", binary("add", reshape(xc, [b.rows]), b.xx), 0, Infinity);
    }));
  });
}

/**
 * Assignment step: nearest center of every row, its squared distance, and `stats` =
 * [cluster sizes (k), inertia, largest distance] for the one readback of the iteration.
 */
function assign(data: Data, centers: Tensor, k: number) {
  return tidy(() => {
    const cc = reduce("sum", unary("square", centers), 1); // [k]
    const cm2 = unary("affine", centers, -2, 0);
    const as: Tensor[] = [], ds: Tensor[] = [];
    forChunks(data, (x, xx) => {
      // ‖c‖² − 2x·c: the row's own ‖x‖² does not change its argmin, so it is added after.
      const part = linear(x, cm2, cc); // [rows, k], one matmul with the bias in its epilogue
      as.push(argmin(part, 1));
      ds.push(binary("add", min(part, 1), xx));
    });
    const a = cat(as);
    const minD = unary("clamp", cat(ds), 0, Infinity);
    const counts = scatterAdd(full([data.n], 1, centers.backend), a, 0, k);
    const stats = concat([
      counts,
      reshape(reduce("sum", minD), [1]),
      reshape(reduce("max", minD), [1]),
    ]);
    return { a, minD, stats };
  });
}

/** Update step: the mean of each cluster's rows (a one-hot matmul per chunk), [k, d]. */
function means(data: Data, a: Tensor, counts: Tensor, iotaK: Tensor): Tensor {
  return tidy(() => {
    let sums: Tensor | null = null;
    forChunks(data, (x, _xx, g, rows) => {
      const oneHotT = binary("eq", iotaK, reshape(rowsOf(a, g, g + rows, data.n), [1, rows]));
      const p = matmul(oneHotT, x); // [k, rows] · [rows, d]
      sums = sums ? binary("add", sums, p) : p;
    });
    const k = iotaK.shape[0]!;
    return binary("div", sums!, reshape(unary("clamp", counts, 1, Infinity), [k, 1]));
  });
}

/**
 * Σ‖x_i − c_{a_i}‖² from the differences themselves, in chunks of at most 2^22 values: the
 * expanded form ‖x‖² + ‖c‖² − 2x·c used while iterating loses digits to cancellation when the
 * clusters are small next to their distance from the origin.
 */
function exactInertia(data: Data, centers: Tensor, a: Tensor): Tensor {
  return tidy(() => {
    const d = centers.shape[1]!;
    const rows = Math.max(1, Math.floor(2 ** 22 / d));
    let total: Tensor | null = null;
    forChunks({ ...data, batch: Math.min(data.batch, rows) }, (x, _xx, g, r) => {
      const diff = binary("sub", x, gather(centers, rowsOf(a, g, g + r, data.n)));
      const s = reduce("sum", unary("square", diff));
      total = total ? binary("add", total, s) : s;
    });
    return total!;
  });
}

/** k-means++: the first center uniformly, each next one with probability ∝ D(x)². */
function initPlusPlus(data: Data, k: number, gen: Generator, be: Backend): Tensor {
  const n = data.n;
  const first = Math.min(n - 1, Math.floor(gen.uniformHost(1)[0]! * n));
  const chosen: Tensor[] = [rowAt(data, tensor([first], [1], be))];
  let minD = distToOne(data, chosen[0]!);
  const w = new Float32Array(n);
  for (let j = 1; j < k; j++) {
    // Sample i with probability D_i / Σ D on the device, without a readback, by an exponential
    // race: i* = argmax_i D_i / E_i with E_i ~ Exp(1) (E_i/D_i ~ Exp(D_i), and the smallest of
    // independent exponentials is index i with probability D_i / Σ D). E is drawn on the host
    // from the generator's stream, so both backends see the same numbers.
    const u = gen.uniformHost(n);
    for (let i = 0; i < n; i++) w[i] = 1 / Math.max(-Math.log1p(-u[i]!), 1e-30);
    const cur = minD;
    const next = tidy(() => {
      const idx = reshape(argmax(binary("mul", cur, tensor(w, [n], be))), [1]);
      const c = rowAt(data, idx);
      return { c, minD: binary("minimum", cur, distToOne(data, c)) };
    });
    minD.dispose();
    minD = next.minD;
    chosen.push(next.c);
  }
  minD.dispose();
  const centers = cat(chosen);
  if (chosen.length > 1) { for (const c of chosen) c.dispose(); }
  return centers;
}

/** Validate x (a tensor or row blocks): [n, d] and the blocks. */
function checkInput(
  x: Tensor | readonly Tensor[],
  k: number,
): { xs: Tensor[]; n: number; d: number } {
  const xs = x instanceof Tensor ? [x] : Array.isArray(x) ? [...x] : null;
  if (!xs || xs.length === 0 || xs.some((t) => !(t instanceof Tensor))) {
    throw new TypeError(
      `Expected kmeans input x to be a Tensor [n, d] or a non-empty array of [rows, d] ` +
        `Tensors but found ${x === null ? "null" : Array.isArray(x) ? "another array" : typeof x}`,
    );
  }
  const d = xs[0]!.shape[1];
  let n = 0;
  for (const [i, t] of xs.entries()) {
    const name = xs.length === 1 ? "kmeans input x" : `kmeans input block x[${i}]`;
    if (t.rank !== 2) {
      throw new RangeError(
        `Expected ${name} to be a 2-D Tensor [n, d] but found shape ${fmtShape(t.shape)}`,
      );
    }
    if (t.shape[0]! < 1 || t.shape[1]! < 1 || t.shape[1] !== d) {
      throw new RangeError(
        `Expected ${name} to have rows and ${d} columns but found shape ${fmtShape(t.shape)}`,
      );
    }
    if (t.backend !== xs[0]!.backend) {
      throw new TypeError(
        `Expected every kmeans input block on one backend but x[${i}] is on ${t.backend.name}`,
      );
    }
    n += t.shape[0]!;
  }
  if (!Number.isInteger(k) || k < 1 || k > n) {
    throw new RangeError(
      `Expected k (the number of clusters) to be an integer in [1, ${n}] (at most the ${n} ` +
        `rows of x) but found ${k}`,
    );
  }
  return { xs, n, d: d! };
}

/**
 * k-means: k-means++ (or random) initialisation, then Lloyd iterations until the inertia
 * Σ‖x_i − c_{a_i}‖² changes by at most `tol` relative to the previous assignment, or
 * `maxIters` updates. A cluster left empty by an assignment is re-seeded with the point
 * farthest from its own center (the point contributing most to the inertia, as scikit-learn
 * does; each such point is used once), so every cluster keeps at least one point whenever the
 * data has k distinct rows.
 *
 * Works on x's backend: distances are one matmul per block (‖c‖² − 2x·cᵀ, with the row norms
 * added afterwards), the update a one-hot matmul. One readback of k + 2 numbers per iteration.
 * `x` is a [n, d] tensor, or an array of [rows, d] tensors holding its rows in order, for data
 * larger than one device buffer (WebGPU adapters commonly bind at most 128 MiB, i.e. 42 800
 * rows of 784 floats); k-means++ sampling and re-seeding pick rows across blocks on the device.
 *
 * Throws a `TypeError` when x is not a Tensor, and a `RangeError` for a wrong rank, k outside
 * [1, n], non-finite entries in x, or a bad option.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { kmeans, tensor } from "../../mod.ts";
 * const x = tensor([[0, 0], [0, 1], [10, 10], [10, 11], [0, 0.5]]);
 * const r = await kmeans(x, 2, { seed: 0 });
 * const [a0, a1, a2, a3, a4] = r.assignments;
 * assert.equal(a0, a1);
 * assert.equal(a0, a4);
 * assert.equal(a2, a3);
 * assert.notEqual(a0, a2);
 * assert.ok(Math.abs(r.inertia - 1) < 1e-4); // 0.25 + 0.25 + 0 + 2 · 0.25
 * assert.ok(r.converged);
 * assert.deepEqual(r.centers.shape, [2, 2]);
 * r.centers.dispose();
 * ```
 */
export async function kmeans(
  x: Tensor | readonly Tensor[],
  k: number,
  opts: KMeansOptions = {},
): Promise<KMeansResult> {
  const { xs, n, d } = checkInput(x, k);
  const maxIters = checkInt("kmeans maxIters", opts.maxIters ?? 100, 0);
  const tol = checkNumber("kmeans tol", opts.tol ?? 1e-4, 0);
  const batch = checkInt("kmeans batch", opts.batch ?? Math.max(1, Math.floor(2 ** 24 / k)), 1);
  if (opts.generator !== undefined && !(opts.generator instanceof Generator)) {
    throw new TypeError("Expected kmeans generator to be a Generator");
  }
  const gen = opts.generator ?? new Generator(checkInt("kmeans seed", opts.seed ?? 0, 0));
  const be = xs[0]!.backend;
  const init = opts.init ?? "k-means++";
  if (init instanceof Tensor) {
    if (init.rank !== 2 || init.shape[0] !== k || init.shape[1] !== d) {
      throw new RangeError(
        `Expected kmeans init to be centers of shape [${k}, ${d}] but found ${
          fmtShape(init.shape)
        }`,
      );
    }
    if (init.backend !== be) {
      throw new TypeError(
        `Expected kmeans init on the ${be.name} backend of x but it is on ${init.backend.name}`,
      );
    }
  } else checkChoice("kmeans init", init, ["k-means++", "random"] as const);

  // Non-finite check on the device (one readback): x·0 is NaN exactly where x is ±Infinity or
  // NaN; isNan tests the bits, which survives shader compilers' fast math.
  const badT = tidy(() => {
    const nanCount = (t: Tensor) =>
      reshape(reduce("sum", unary("isNan", unary("affine", t, 0, 0))), [1]);
    let bx = nanCount(xs[0]!);
    for (const t of xs.slice(1)) bx = binary("add", bx, nanCount(t));
    return concat([bx, init instanceof Tensor ? nanCount(init) : full([1], 0, be)]);
  });
  const [badX, badInit] = await badT.data();
  badT.dispose();
  if (badX! > 0) {
    throw new RangeError(
      `Expected kmeans input x to hold finite values but found ${badX} NaN or infinite ` +
        `entries among its ${n * d}`,
    );
  }
  if (badInit! > 0) {
    throw new RangeError(`Expected kmeans init centers to be finite but found ${badInit} NaN/inf`);
  }

  let off = 0;
  const blocks: Block[] = xs.map((t) => {
    const b = {
      x: t,
      off,
      rows: t.shape[0]!,
      xx: tidy(() => reduce("sum", unary("square", t), 1)),
    };
    off += b.rows;
    return b;
  });
  const data: Data = { blocks, n, batch };
  const iotaK = tensor(Float32Array.from({ length: k }, (_, i) => i), [k, 1], be);
  const iotaN = tensor(Float32Array.from({ length: n }, (_, i) => i), [n], be);
  let centers: Tensor | null = null;
  let step: ReturnType<typeof assign> | null = null;
  const dropStep = () => {
    if (step) step.a.dispose(), step.minD.dispose(), step.stats.dispose();
    step = null;
  };
  try {
    centers = init instanceof Tensor ? unary("copy", init) : init === "random"
      ? tidy(() => {
        const idx = Float32Array.from(gen.permutationHost(n).subarray(0, k));
        if (blocks.length === 1) return gather(blocks[0]!.x, tensor(idx, [k], be));
        return cat(Array.from(idx, (i) => rowAt(data, tensor([i], [1], be))));
      })
      : initPlusPlus(data, k, gen, be);
    let prev = Infinity, iterations = 0, reseeded = 0, converged = false;
    let stats: Float32Array = new Float32Array(0);
    for (;;) {
      const cur = assign(data, centers, k);
      step = cur;
      stats = await cur.stats.data();
      const inertia = stats[k]!, maxD = stats[k + 1]!;
      const empty: number[] = [];
      for (let j = 0; j < k; j++) if (stats[j] === 0) empty.push(j);
      const rel = Number.isFinite(prev)
        ? Math.abs(prev - inertia) / Math.max(prev, 1e-30)
        : Infinity;
      opts.onIteration?.({
        iteration: iterations,
        inertia,
        relativeChange: rel,
        emptyClusters: empty.length,
      });
      // Empty clusters block convergence unless they cannot be repaired (every point sits on
      // a center: fewer than k distinct rows).
      converged = rel <= tol && (empty.length === 0 || maxD === 0);
      if (converged || iterations >= maxIters) break;
      const reseed = empty.length > 0 && maxD > 0;
      const next: Tensor = tidy(() => {
        let c = means(data, cur.a, sliceRows(cur.stats, 0, k), iotaK);
        if (!reseed) return c;
        // Re-seed each empty cluster with the point farthest from its center, then zero that
        // point's distance so the next empty cluster takes the next-farthest point.
        let dist = cur.minD;
        for (const j of empty) {
          const idx = reshape(argmax(dist), [1]);
          c = where(unary("eqScalar", iotaK, j), rowAt(data, idx), c);
          dist = binary("mul", dist, binary("ne", iotaN, idx));
        }
        return c;
      });
      if (reseed) reseeded += empty.length;
      centers.dispose();
      centers = next;
      dropStep();
      prev = inertia;
      iterations++;
    }
    const a = await step!.a.data();
    const exact = exactInertia(data, centers, step!.a);
    const inertia = await exact.item();
    exact.dispose();
    return {
      centers,
      assignments: Int32Array.from(a),
      counts: Int32Array.from(stats.subarray(0, k)),
      inertia,
      iterations,
      converged,
      reseeded,
    };
  } catch (e) {
    centers?.dispose();
    throw e;
  } finally {
    dropStep();
    for (const b of blocks) b.xx.dispose();
    iotaK.dispose(), iotaN.dispose();
  }
}
