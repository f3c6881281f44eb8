/**
 * @file Stable Velocity Matching (SV StableVM/loss.py `StableVMLoss`, `MemoryBank`) and the
 * Stable Target Field (STF training/loss.py `stf_targets`), in our time convention.
 *
 * Ours: t = 0 noise, t = 1 data, x_t = (1−t)·ε + t·x, plain target x − ε. SV writes
 * τ = 1 − t, x_τ = (1−τ)x + τε (the same point) and, for τ ≥ 0.5,
 *
 *   w_j = softmax_j(−‖x_τ − (1−τ) b_j‖² / 2τ²),  target_SV = Σ_j w_j (x_τ − b_j)/τ
 *
 * whose velocity points to the noise (ε − x). Substituting τ = 1 − t and negating:
 *
 *   w_j = softmax_j(−‖x_t − t·b_j‖² / 2(1−t)²)                                    (S1)
 *   target = Σ_j w_j (b_j − x_t)/(1−t) = (Σ_j w_j b_j − x_t)/(1−t)      for t ≤ splitT (S2)
 *   target = x − ε                                                       for t > splitT
 *
 * (S1) is the posterior over the bank entries of x_t | b_j ~ N(t·b_j, (1−t)²I), so
 * Σ_j w_j b_j estimates E[x1 | x_t] and (S2) is E[x1 − x0 | x_t] with
 * E[x0 | x_t] = (x_t − t·E[x1 | x_t])/(1−t). The score version is
 * ∇ log p_t ≈ (t·Σ_j w_j b_j − x_t)/(1−t)² (S3), and SV's "score" network regresses
 * −E[x0 | x_t] = (t·Σ_j w_j b_j − x_t)/(1−t) = (1−t)·∇ log p_t (S4).
 * @module
 */
import { type Tensor, tidy } from "../tensor.ts";
import {
  add,
  clamp,
  exp,
  full,
  matmul,
  max,
  maximum,
  mean,
  mul,
  reshape,
  square,
  stopGradient,
  sub,
  sum,
  tensor,
  unary,
  where,
} from "../ops/ops.ts";
import type { Generator } from "../random.ts";
import { checkChoice, checkInt, checkNumber } from "../_util.ts";
import {
  PATH_TYPES,
  type PathCoefficients,
  pathCoefficients,
  type PathType,
  sampleTimes,
} from "./paths.ts";

// SV's guards: logits are clamped at −1e4, then at −50 after subtracting the max.
const LOGIT_FLOOR = -1e4;
const SHIFTED_FLOOR = -50;

/** Options for `MemoryBank`. */
export interface MemoryBankOptions {
  /** Number of data classes C; the null label is C (it uses the global pool). */
  numClasses: number;
  /** Entries kept per class (FIFO). Default 256. */
  capacityPerClass?: number;
  /**
   * Entries in the global pool used by the null label. Default: `capacityPerClass`, as SV's
   * `MemoryBank` (its global pool is sized like a class's, so `--bank-capacity-per-class`
   * sizes both).
   */
  globalCapacity?: number;
  /** Dimension of an entry (flattened). */
  dim: number;
}

/** A host-side dataset: `x` is n·dim row-major values and `labels` n class indices. */
export interface LabelledData {
  /** Samples, n·dim values row-major. */
  x: ArrayLike<number>;
  /** Class index of each sample. */
  labels: ArrayLike<number>;
}

/** Serializable bank contents (for checkpoints). */
export interface MemoryBankState {
  /** All slots, (numClasses + 1)·capacity·dim values (capacity = the largest of the two). */
  data: Float32Array;
  /** Valid entries per slot. */
  counts: Int32Array;
  /** Next write position per slot. */
  heads: Int32Array;
}

/**
 * Per-class FIFO memory bank (ring buffers on the host) plus a global pool for the null
 * label (index `numClasses`). Every added sample enters its class ring and the global pool.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, MemoryBank } from "../../mod.ts";
 * const bank = new MemoryBank({ numClasses: 2, capacityPerClass: 3, dim: 2 });
 * bank.add([0, 0, 1, 1, 2, 2], [0, 1, 0]);
 * const x = await bank.sample([0, 1, 2], new Generator(0)).data(); // label 2 = null → global pool
 * assert.deepEqual([bank.count(0), bank.count(1), bank.count(2)], [2, 1, 3]);
 * // Row 0 is an entry of class 0, row 1 the only entry of class 1, row 2 any entry.
 * assert.ok([0, 2].includes(x[0]!) && x[0] === x[1]);
 * assert.deepEqual([x[2], x[3]], [1, 1]);
 * assert.ok([0, 1, 2].includes(x[4]!) && x[4] === x[5]);
 * ```
 */
export class MemoryBank {
  /** Number of data classes. */
  readonly numClasses: number;
  /** Capacity of each class ring. */
  readonly capacityPerClass: number;
  /** Capacity of the global pool. */
  readonly globalCapacity: number;
  /** Entry dimension. */
  readonly dim: number;
  readonly #slot: number;
  #data: Float32Array;
  #counts: Int32Array;
  #heads: Int32Array;

  /** An empty bank. */
  constructor(opts: MemoryBankOptions) {
    this.numClasses = checkInt("number of bank classes", opts.numClasses, 1);
    this.capacityPerClass = checkInt("bank capacity", opts.capacityPerClass ?? 256, 1);
    this.globalCapacity = checkInt(
      "bank global capacity",
      opts.globalCapacity ?? this.capacityPerClass,
      1,
    );
    this.dim = checkInt("bank entry dim", opts.dim, 1);
    this.#slot = Math.max(this.capacityPerClass, this.globalCapacity);
    this.#data = new Float32Array((this.numClasses + 1) * this.#slot * this.dim);
    this.#counts = new Int32Array(this.numClasses + 1);
    this.#heads = new Int32Array(this.numClasses + 1);
  }

  /** The label that draws from the global pool (= numClasses). */
  get nullLabel(): number {
    return this.numClasses;
  }

  #cap(label: number): number {
    return label === this.numClasses ? this.globalCapacity : this.capacityPerClass;
  }

  #checkLabel(l: number, allowNull: boolean): number {
    const hi = allowNull ? this.numClasses : this.numClasses - 1;
    if (!Number.isInteger(l) || l < 0 || l > hi) {
      throw new RangeError(
        `Expected bank label to be an integer in [0, ${hi}]${
          allowNull ? ` (${this.numClasses} = null label)` : ""
        } but found ${l}`,
      );
    }
    return l;
  }

  #push(slot: number, x: ArrayLike<number>, off: number): void {
    const d = this.dim, cap = this.#cap(slot);
    const h = this.#heads[slot]!;
    const base = (slot * this.#slot + h) * d;
    for (let j = 0; j < d; j++) this.#data[base + j] = x[off + j]!;
    this.#heads[slot] = (h + 1) % cap;
    if (this.#counts[slot]! < cap) this.#counts[slot]!++;
  }

  /**
   * Append samples (n·dim values, row-major) with their class labels in [0, numClasses);
   * the oldest entry of a full ring is overwritten.
   */
  add(x: ArrayLike<number>, labels: ArrayLike<number>): void {
    const n = labels.length;
    if (x.length !== n * this.dim) {
      throw new RangeError(
        `Expected ${n}·${this.dim} = ${
          n * this.dim
        } bank values for ${n} labels but found ${x.length}`,
      );
    }
    for (let i = 0; i < n; i++) this.#checkLabel(labels[i]!, false);
    for (let i = 0; i < n; i++) {
      this.#push(labels[i]!, x, i * this.dim);
      this.#push(this.numClasses, x, i * this.dim);
    }
  }

  /**
   * `add` for tensors ([n, dim] or [n, …] samples and [n] labels); reads them back first.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { MemoryBank, tensor } from "../../mod.ts";
   * const bank = new MemoryBank({ numClasses: 2, dim: 1 });
   * await bank.addTensors(tensor([[1], [2]]), tensor([0, 1]));
   * assert.deepEqual([...bank.entries(0)], [1]);
   * assert.deepEqual([...bank.entries(1)], [2]);
   * ```
   */
  async addTensors(x: Tensor, labels: Tensor): Promise<void> {
    this.add(await x.data(), await labels.data());
  }

  /**
   * Fill the bank from a dataset, in a random order when `generator` is given: until every
   * class holds at least one entry, or (`fully`) until every class ring is full or the data
   * run out. Returns the number of samples consumed; throws if a class has no sample.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { MemoryBank } from "../../mod.ts";
   * const bank = new MemoryBank({ numClasses: 2, capacityPerClass: 2, dim: 1 });
   * const used = bank.prefill({ x: [1, 2, 3, 4, 5], labels: [0, 0, 0, 1, 1] }, { fully: true });
   * // In order until both rings are full: class 0 keeps its newest two (2, 3).
   * assert.equal(used, 5);
   * assert.deepEqual([bank.count(0), bank.count(1)], [2, 2]);
   * assert.deepEqual([...bank.entries(0)], [2, 3]);
   * assert.deepEqual([...bank.entries(1)], [4, 5]);
   * ```
   */
  prefill(source: LabelledData, opts: { fully?: boolean; generator?: Generator } = {}): number {
    const n = source.labels.length;
    if (source.x.length !== n * this.dim) {
      throw new RangeError(
        `Expected the prefill source to have ${n}·${this.dim} values but found ${source.x.length}`,
      );
    }
    const order = opts.generator ? opts.generator.permutationHost(n) : null;
    const target = opts.fully ? this.capacityPerClass : 1;
    const done = () => {
      for (let c = 0; c < this.numClasses; c++) if (this.#counts[c]! < target) return false;
      return true;
    };
    let used = 0;
    const x = source.x;
    while (!done() && used < n) {
      const i = order ? order[used]! : used;
      const l = this.#checkLabel(source.labels[i]!, false);
      this.#push(l, x, i * this.dim);
      this.#push(this.numClasses, x, i * this.dim);
      used++;
    }
    for (let c = 0; c < this.numClasses; c++) {
      if (this.#counts[c] === 0) {
        throw new RangeError(
          `Cannot prefill the memory bank: class ${c} has no samples in the source (${n} samples)`,
        );
      }
    }
    return used;
  }

  /** Valid entries for `label` (the null label counts the global pool). */
  count(label: number): number {
    return this.#counts[this.#checkLabel(label, true)]!;
  }

  /**
   * The entries of `label`, oldest first, as count·dim values.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { MemoryBank } from "../../mod.ts";
   * const bank = new MemoryBank({ numClasses: 1, capacityPerClass: 2, dim: 1 });
   * bank.add([1, 2, 3], [0, 0, 0]);
   * assert.deepEqual([...bank.entries(0)], [2, 3]); // a ring of 2: the oldest (1) was dropped
   * ```
   */
  entries(label: number): Float32Array {
    const l = this.#checkLabel(label, true);
    const n = this.#counts[l]!, cap = this.#cap(l), d = this.dim;
    const start = n < cap ? 0 : this.#heads[l]!;
    const out = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      const p = (start + i) % cap;
      out.set(this.#data.subarray((l * this.#slot + p) * d, (l * this.#slot + p + 1) * d), i * d);
    }
    return out;
  }

  #requireEntries(l: number): number {
    const n = this.#counts[l]!;
    if (n === 0) {
      throw new RangeError(
        `Cannot draw from the memory bank: ${
          l === this.numClasses ? "the global pool" : `class ${l}`
        } has no entries (prefill the bank first)`,
      );
    }
    return n;
  }

  /**
   * One uniformly chosen entry per requested label (labels in [0, numClasses]; the null
   * label draws from the global pool), as a [n, dim] tensor.
   */
  sample(labels: ArrayLike<number>, gen: Generator): Tensor {
    const n = labels.length, d = this.dim;
    for (let i = 0; i < n; i++) this.#requireEntries(this.#checkLabel(labels[i]!, true));
    const u = gen.uniformHost(n);
    const out = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      const l = labels[i]!;
      const j = Math.min(this.#counts[l]! - 1, Math.floor(u[i]! * this.#counts[l]!));
      out.set(this.#data.subarray((l * this.#slot + j) * d, (l * this.#slot + j + 1) * d), i * d);
    }
    return tensor(out, [n, d]);
  }

  /** The largest entry count among `labels`. */
  maxCount(labels: ArrayLike<number>): number {
    let m = 0;
    for (let i = 0; i < labels.length; i++) {
      m = Math.max(m, this.#counts[this.#checkLabel(labels[i]!, true)]!);
    }
    return m;
  }

  /**
   * Entries [start, end) of each requested label's slot, padded: `refs` [n, end−start, dim]
   * and `mask` [n, end−start] (1 = a valid entry). Row order inside a slot is storage order.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { MemoryBank } from "../../mod.ts";
   * const bank = new MemoryBank({ numClasses: 2, dim: 1 });
   * bank.add([1, 2, 3], [0, 0, 1]);
   * const { refs, mask } = bank.refs([0, 1], 0, 2);
   * // Row 0 (class 0) holds entries 1, 2; row 1 (class 1) holds 3 and one empty slot.
   * assert.deepEqual([...refs.shape], [2, 2, 1]);
   * assert.deepEqual([...await mask.data()], [1, 1, 1, 0]);
   * const r = await refs.data();
   * assert.deepEqual([r[0], r[1], r[2]], [1, 2, 3]);
   * ```
   */
  refs(labels: ArrayLike<number>, start: number, end: number): { refs: Tensor; mask: Tensor } {
    const n = labels.length, d = this.dim, m = end - start;
    checkInt("bank chunk size", m, 1);
    const r = new Float32Array(n * m * d), mk = new Float32Array(n * m);
    for (let i = 0; i < n; i++) {
      const l = this.#checkLabel(labels[i]!, true), c = this.#counts[l]!;
      for (let j = start; j < Math.min(end, c); j++) {
        const src = (l * this.#slot + j) * d;
        r.set(this.#data.subarray(src, src + d), (i * m + j - start) * d);
        mk[i * m + j - start] = 1;
      }
    }
    return { refs: tensor(r, [n, m, d]), mask: tensor(mk, [n, m]) };
  }

  /** A copy of the contents, for checkpoints. */
  state(): MemoryBankState {
    return {
      data: this.#data.slice(),
      counts: this.#counts.slice(),
      heads: this.#heads.slice(),
    };
  }

  /** Restore contents from `state()` (same sizes required). */
  loadState(s: MemoryBankState): void {
    if (
      s.data.length !== this.#data.length || s.counts.length !== this.#counts.length ||
      s.heads.length !== this.#heads.length
    ) {
      throw new RangeError(
        `Expected a memory bank state with ${this.#data.length} values and ${this.#counts.length} slots but found ${s.data.length} and ${s.counts.length}`,
      );
    }
    this.#data = Float32Array.from(s.data);
    this.#counts = Int32Array.from(s.counts);
    this.#heads = Int32Array.from(s.heads);
  }
}

/**
 * Which field a target estimates: the velocity E[x1 − x0 | x_t]; the score ∇ log p_t; or
 * `"noise"`, −E[x0 | x_t] = (1−t)·∇ log p_t — the parameterisation SV's gmm_exp.py calls
 * "score" (it divides by τ = 1−t, not τ², so its network regresses −E[ε | x] (S4)).
 */
export type FieldKind = "velocity" | "score" | "noise";

/** Every {@linkcode FieldKind}, for flag validation. */
export const FIELD_KINDS: readonly FieldKind[] = ["velocity", "score", "noise"];

/**
 * The conditional (single-sample) target of a field kind: x1 − x0, −x0/(1−t) or −x0. `tc` is
 * t broadcastable against the rows.
 *
 * @example
 * ```ts
 * import { plainTarget, tensor } from "../../mod.ts";
 * import { strict as assert } from "node:assert";
 * const v = plainTarget(tensor([[1, 1]]), tensor([[0.5, -0.5]]), 0.75, "score");
 * assert.deepEqual(Array.from(await v.data()), [-2, 2]); // −x0/(1−t)
 * ```
 */
export function plainTarget(
  x1: Tensor,
  x0: Tensor,
  tc: Tensor | number,
  kind: FieldKind,
): Tensor {
  if (kind === "velocity") return sub(x1, x0);
  if (kind === "noise") return mul(x0, -1);
  return mul(x0, -1).div(typeof tc === "number" ? 1 - tc : sub(1, tc));
}

function timeCol(t: Tensor | number, n: number): Tensor | number {
  return typeof t === "number" ? t : reshape(t, [n, 1]);
}

// Posterior mean → field: (S2) for velocity, (S3) for score.
function toField(mean1: Tensor, xt: Tensor, t: Tensor | number, kind: FieldKind): Tensor {
  const omt = typeof t === "number" ? 1 - t : sub(1, t);
  if (kind === "velocity") return sub(mean1, xt).div(omt);
  // (S4): −E[x0 | x_t] = (t·E[x1 | x_t] − x_t)/(1−t).
  if (kind === "noise") return sub(mul(mean1, t), xt).div(omt);
  const omt2 = typeof omt === "number" ? omt * omt : square(omt);
  return sub(mul(mean1, t), xt).div(omt2);
}

// A field of an affine path from E[x1 | x_t] = m: E[x0 | x_t] = (x_t − α·m)/σ, so the velocity
// is α̇·m + σ̇·E[x0 | x_t], the score (α·m − x_t)/σ², and "noise" (α·m − x_t)/σ.
function affineField(m: Tensor, xt: Tensor, c: PathCoefficients, kind: FieldKind): Tensor {
  const r = sub(mul(c.alpha, m), xt); // −σ·E[x0 | x_t]
  if (kind === "noise") return r.div(c.sigma);
  if (kind === "score") return r.div(square(c.sigma));
  return sub(mul(c.dAlpha, m), mul(c.dSigma, r.div(c.sigma)));
}

// (S1) logits with SV's floor; masked entries sit at the floor and get weight 0 below.
function bankLogits(xt: Tensor, t: Tensor | number, refs: Tensor, mask: Tensor): Tensor {
  const [n, m, d] = refs.shape as [number, number, number];
  const tt = typeof t === "number" ? t : reshape(t, [n, 1, 1]);
  const diff = sub(reshape(xt, [n, 1, d]), mul(refs, tt));
  const omt = typeof t === "number" ? 1 - t : reshape(sub(1, t), [n, 1]);
  const den = typeof omt === "number" ? 2 * omt * omt : mul(square(omt), 2);
  const l = maximum(mul(sum(square(diff), 2), -1).div(den), LOGIT_FLOOR);
  return where(mask, l, full([n, m], LOGIT_FLOOR));
}

/**
 * The stable posterior mean Σ_j w_j b_j (S1) over per-sample reference sets, as the
 * velocity (S2) or score (S3). `xt` [n, d]; `t` a number or [n]; `refs` [n, m, d];
 * `mask` [n, m] marks valid entries (default all). Gradients do not flow into the result.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { stableTarget, tensor } from "../../mod.ts";
 * const refs = tensor([[[1, 0], [0, 1]]]); // one sample, two bank entries
 * const v = await stableTarget(tensor([[0.2, 0.1]]), tensor([0.3]), refs).data();
 * // By hand (S1, S2): w_j ∝ exp(−‖x_t − t·b_j‖²/(2(1 − t)²)), v = (Σ w_j b_j − x_t)/(1 − t).
 * const t = 0.3, xt = [0.2, 0.1], b = [[1, 0], [0, 1]];
 * const l = b.map((bj) => -((xt[0]! - t * bj[0]!) ** 2 + (xt[1]! - t * bj[1]!) ** 2) / (2 * (1 - t) ** 2));
 * const e = l.map(Math.exp), z = e[0]! + e[1]!;
 * [0, 1].forEach((i) => {
 *   const m = (e[0]! * b[0]![i]! + e[1]! * b[1]![i]!) / z;
 *   assert.ok(Math.abs(v[i]! - (m - xt[i]!) / (1 - t)) < 1e-5);
 * });
 * ```
 */
export function stableTarget(
  xt: Tensor,
  t: Tensor | number,
  refs: Tensor,
  mask?: Tensor,
  kind: FieldKind = "velocity",
): Tensor {
  const [n, , d] = refs.shape as [number, number, number];
  if (refs.rank !== 3 || xt.rank !== 2 || xt.shape[0] !== n || xt.shape[1] !== d) {
    throw new RangeError(
      `Expected xt [n, d] and refs [n, m, d] but found [${xt.shape.join(", ")}] and [${
        refs.shape.join(", ")
      }]`,
    );
  }
  return tidy(() => stopGradient(toField(bankMean(xt, t, refs, mask), xt, timeCol(t, n), kind)));
}

// Σ_j w_j b_j (S1) over per-row reference sets refs [n, m, d] (mask [n, m]).
function bankMean(xt: Tensor, t: Tensor | number, refs: Tensor, mask?: Tensor): Tensor {
  const [n, m, d] = refs.shape as [number, number, number];
  const mk = mask ?? full([n, m], 1);
  const l = bankLogits(xt, t, refs, mk);
  const sh = clamp(sub(l, max(l, 1, true)), SHIFTED_FLOOR, Infinity);
  const e = mul(exp(sh), mk);
  const w = e.div(sum(e, 1, true));
  return reshape(matmul(reshape(w, [n, 1, m]), refs), [n, d]);
}

/**
 * STF stable target field over one shared reference batch (which should include the
 * minibatch): (S1)–(S3) with the same refs for every row. `xt` [n, d], `t` a number or [n],
 * `refs` [R, d]. STF writes the EDM x0-prediction target Σ w_j ref_j with
 * w = softmax(−‖y + n − ref_j‖²/2σ²); on our path y + n = x_t/t and σ = (1−t)/t, so the
 * weights are (S1).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { stfTarget, tensor } from "../../mod.ts";
 * const refs = [[1, 0], [0, 1], [-1, 0]];
 * const xt = [[0.1, 0.1], [0.5, 0]];
 * const v = await stfTarget(tensor(xt), 0.4, tensor(refs)).data();
 * // By hand, per row: the same weights (S1) over the shared refs, velocity (S2).
 * const t = 0.4;
 * xt.forEach((x, r) => {
 *   const e = refs.map((b) => Math.exp(-((x[0]! - t * b[0]!) ** 2 + (x[1]! - t * b[1]!) ** 2) / (2 * (1 - t) ** 2)));
 *   const z = e.reduce((a, c) => a + c, 0);
 *   [0, 1].forEach((i) => {
 *     const m = e.reduce((a, w, j) => a + w * refs[j]![i]!, 0) / z;
 *     assert.ok(Math.abs(v[2 * r + i]! - (m - x[i]!) / (1 - t)) < 1e-5);
 *   });
 * });
 * ```
 */
export function stfTarget(
  xt: Tensor,
  t: Tensor | number,
  refs: Tensor,
  kind: FieldKind = "velocity",
): Tensor {
  const n = xt.shape[0]!, d = xt.shape[1]!;
  if (xt.rank !== 2 || refs.rank !== 2 || refs.shape[1] !== d) {
    throw new RangeError(
      `Expected xt [n, d] and refs [R, d] but found [${xt.shape.join(", ")}] and [${
        refs.shape.join(", ")
      }]`,
    );
  }
  return tidy(() => {
    const tc = timeCol(t, n);
    return stopGradient(toField(sharedMean(xt, tc, refs), xt, tc, kind));
  });
}

// Σ_j w_j r_j (S1) over refs [R, d] shared by every row.
function sharedMean(xt: Tensor, tc: Tensor | number, refs: Tensor): Tensor {
  const l = sharedLogits(xt, tc, refs);
  const sh = clamp(sub(l, max(l, 1, true)), SHIFTED_FLOOR, Infinity);
  const e = exp(sh);
  return matmul(e.div(sum(e, 1, true)), refs);
}

// (S1) logits against refs [R, d] shared by every row, with SV's floor:
// ‖x_t − t r_j‖² = ‖x_t‖² − 2t x_t·r_j + t²‖r_j‖², one [n, R] matmul.
function sharedLogits(xt: Tensor, tc: Tensor | number, refs: Tensor): Tensor {
  const R = refs.shape[0]!;
  const x2 = sum(square(xt), 1, true);
  const r2 = reshape(sum(square(refs), 1), [1, R]);
  const xr = matmul(xt, refs, { transB: true });
  const t2 = typeof tc === "number" ? tc * tc : square(tc);
  const dist = maximum(add(sub(x2, mul(mul(xr, tc), 2)), mul(r2, t2)), 0);
  const omt = typeof tc === "number" ? 1 - tc : sub(1, tc);
  const den = typeof omt === "number" ? 2 * omt * omt : mul(square(omt), 2);
  return maximum(mul(dist, -1).div(den), LOGIT_FLOOR);
}

/** Options for `stableVmTarget`. */
export interface StableVmTargetOptions {
  /** Use the stable target for t ≤ splitT (ours; SV's τ ≥ 0.5). Default 0.5. */
  splitT?: number;
  /** Chunk the bank (memory O(n·chunk·d)); same result within 1e-5. Default false. */
  efficient?: boolean;
  /** Entries per chunk for `efficient`. Default 64. */
  chunkSize?: number;
  /** Velocity or score target. Default velocity. */
  kind?: FieldKind;
  /** The interpolation path the batch was drawn on (default `"linear"`). */
  path?: PathType;
}

// Online log-sum-exp over bank chunks (stable_vm_efficient): running max m, running
// normaliser s and running Σ e_j b_j, rescaled by exp(m_old − m_new) when the max grows.
function bankMeanChunked(
  bank: MemoryBank,
  labels: ArrayLike<number>,
  xt: Tensor,
  t: Tensor,
  chunk: number,
): Tensor {
  const n = xt.shape[0]!, d = xt.shape[1]!;
  const M = bank.maxCount(labels);
  const shared = sameLabel(labels);
  const all = shared === null ? null : bank.entries(shared);
  let m: Tensor | null = null, s: Tensor | null = null, acc: Tensor | null = null;
  for (let c0 = 0; c0 < M; c0 += chunk) {
    const c1 = Math.min(M, c0 + chunk);
    const next = tidy(() => {
      let l: Tensor, e: Tensor, part: Tensor, cm: Tensor, mNew: Tensor;
      if (all) {
        // One label: the chunk [m, d] is shared by every row, so logits are one matmul.
        const refs = tensor(all.subarray(c0 * d, c1 * d), [c1 - c0, d]);
        l = sharedLogits(xt, reshape(t, [n, 1]), refs);
        cm = max(l, 1, true);
        mNew = m ? maximum(m, cm) : cm;
        e = exp(clamp(sub(l, mNew), SHIFTED_FLOOR, Infinity));
        part = matmul(e, refs);
      } else {
        const { refs, mask } = bank.refs(labels, c0, c1);
        l = bankLogits(xt, t, refs, mask);
        cm = max(l, 1, true);
        mNew = m ? maximum(m, cm) : cm;
        e = mul(exp(clamp(sub(l, mNew), SHIFTED_FLOOR, Infinity)), mask);
        part = reshape(matmul(reshape(e, [n, 1, c1 - c0]), refs), [n, d]);
      }
      if (!m) return [mNew, sum(e, 1, true), part];
      const scale = exp(sub(m, mNew));
      return [mNew, add(mul(s!, scale), sum(e, 1, true)), add(mul(acc!, scale), part)];
    });
    m?.dispose();
    s?.dispose();
    acc?.dispose();
    [m, s, acc] = next as [Tensor, Tensor, Tensor];
  }
  const out = acc!.div(s!);
  m!.dispose();
  s!.dispose();
  acc!.dispose();
  return out;
}

// Σ_j w_j b_j (S1) over each row's own label's entries, for a batch of mixed labels, by the
// cheaper of two equal sums: per-row gathered entries (~5 passes over n·m·d values) or all
// present labels' entries at once (~15 passes over n·R values, R ≈ labels·m). Measured on
// `wasm` at n 256, m 256: d 2 gather 16 vs grouped 49 ms, d 16 28 vs 34 ms; at d 784 the
// gather's 51 MB a step made a DiT step 2.0 s against 0.8 s grouped.
function mixedMean(bank: MemoryBank, labels: ArrayLike<number>, xt: Tensor, tc: Tensor): Tensor {
  if (3 * new Set(Array.from(labels)).size < bank.dim) return groupedMean(bank, labels, xt, tc);
  const { refs, mask } = bank.refs(labels, 0, Math.max(1, bank.maxCount(labels)));
  return bankMean(xt, reshape(tc, [xt.shape[0]!]), refs, mask);
}

// Σ_j w_j b_j (S1) over each row's own label's entries, for a batch of mixed labels: the
// entries of every label present, concatenated [R, d], one [n, R] logits matmul and one
// [n, R]·[R, d] mean, other labels' entries masked out. The per-row [n, m, d] gather
// (`bank.refs` + `bankMean`) is the same sum, but its difference tensor costs n·m·d values a
// step (51 MB at Fashion-MNIST's n 64, m 256, d 784).
function groupedMean(
  bank: MemoryBank,
  labels: ArrayLike<number>,
  xt: Tensor,
  tc: Tensor,
): Tensor {
  const n = labels.length, d = bank.dim;
  const present = [...new Set(Array.from(labels))].sort((a, b) => a - b);
  const parts = present.map((l) => bank.entries(l));
  const offset = new Map<number, [number, number]>();
  let R = 0;
  present.forEach((l, i) => {
    // An empty label leaves its rows all masked: 0/0, NaN, and the plain target (SV's fallback).
    const c = parts[i]!.length / d;
    offset.set(l, [R, R + c]);
    R += c;
  });
  if (R === 0) return full([n, d], NaN);
  const all = new Float32Array(R * d);
  parts.forEach((p, i) => all.set(p, offset.get(present[i]!)![0] * d));
  const mk = new Float32Array(n * R);
  for (let i = 0; i < n; i++) {
    const [a, b] = offset.get(labels[i]!)!;
    mk.fill(1, i * R + a, i * R + b);
  }
  const refs = tensor(all, [R, d]), mask = tensor(mk, [n, R]);
  // Masked entries sit at the floor, as in bankLogits, so the row max is a valid entry's.
  const l = where(mask, sharedLogits(xt, tc, refs), full([n, R], LOGIT_FLOOR));
  const e = mul(exp(clamp(sub(l, max(l, 1, true)), SHIFTED_FLOOR, Infinity)), mask);
  return matmul(e.div(sum(e, 1, true)), refs);
}

function sameLabel(labels: ArrayLike<number>): number | null {
  for (let i = 1; i < labels.length; i++) if (labels[i] !== labels[0]) return null;
  return labels.length > 0 ? labels[0]! : null;
}

/**
 * The StableVM regression target for a batch drawn from `bank`: the stable target (S2) over
 * the bank entries of each row's label where t ≤ splitT, the plain x − ε elsewhere, and the
 * plain target wherever the stable one is NaN (SV's fallback).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { MemoryBank, stableVmTarget, tensor } from "../../mod.ts";
 * const bank = new MemoryBank({ numClasses: 1, dim: 1 });
 * bank.add([1, 2, 3], [0, 0, 0]);
 * const x = tensor([[2]]), eps = tensor([[0.5]]), t = tensor([0.3]);
 * const xt = x.mul(0.3).add(eps.mul(0.7));
 * const target = await stableVmTarget(bank, [0], { x, eps, xt, t }).item();
 * // t = 0.3 ≤ splitT 0.5: the stable target over the class's entries 1, 2, 3, by hand.
 * const xv = 0.3 * 2 + 0.7 * 0.5;
 * const w = [1, 2, 3].map((b) => Math.exp(-((xv - 0.3 * b) ** 2) / (2 * 0.7 ** 2)));
 * const m = (w[0]! + 2 * w[1]! + 3 * w[2]!) / (w[0]! + w[1]! + w[2]!);
 * assert.ok(Math.abs(target - (m - xv) / 0.7) < 1e-5);
 * // Above splitT the plain target x − ε.
 * const late = await stableVmTarget(bank, [0], { x, eps, xt: x.mul(0.9).add(eps.mul(0.1)), t: tensor([0.9]) }).item();
 * assert.equal(late, 1.5);
 * ```
 */
export function stableVmTarget(
  bank: MemoryBank,
  labels: ArrayLike<number>,
  batch: { x: Tensor; eps: Tensor; xt: Tensor; t: Tensor },
  opts: StableVmTargetOptions = {},
): Tensor {
  const splitT = checkNumber("splitT", opts.splitT ?? 0.5, 0, 1);
  const kind = opts.kind ?? "velocity";
  const chunk = checkInt("chunk size", opts.chunkSize ?? 64, 1);
  const { x, eps, xt, t } = batch;
  const n = xt.shape[0]!;
  const path = checkChoice("path type", opts.path ?? "linear", PATH_TYPES);
  return tidy(() => {
    const tc = reshape(t, [n, 1]);
    let plain: Tensor, stable: Tensor;
    const shared = sameLabel(labels);
    if (path === "linear") {
      plain = plainTarget(x, eps, tc, kind); // (S2)–(S4) with the one sample b = x
      if (opts.efficient) {
        stable = toField(bankMeanChunked(bank, labels, xt, t, chunk), xt, tc, kind);
      } else if (shared !== null) {
        // Every row has the same label: one shared reference set, no [n, m, d] tensor.
        const e = bank.entries(shared);
        stable = stfTarget(xt, t, tensor(e, [e.length / bank.dim, bank.dim]), kind);
      } else stable = toField(mixedMean(bank, labels, xt, tc), xt, tc, kind);
    } else {
      // Any affine path x_t = α·x1 + σ·x0 is the linear path at s = α/(α+σ) scaled by α+σ, so
      // the posterior over the bank (S1) is the linear one at (x_t/(α+σ), s): its logits
      // −‖x_t − α·b‖²/2σ² are the same numbers. The field then follows SV's general form
      // (σ̇/σ)·x_t + (α̇ − σ̇α/σ)·E[x1 | x_t] (loss.py `_stable_target`).
      const c = pathCoefficients(path, tc);
      const ab = add(c.alpha, c.sigma);
      const s = reshape(c.alpha.div(ab), [n]), xs = xt.div(ab);
      let mean1: Tensor;
      if (opts.efficient) mean1 = bankMeanChunked(bank, labels, xs, s, chunk);
      else if (shared !== null) {
        const e = bank.entries(shared);
        mean1 = sharedMean(xs, reshape(s, [n, 1]), tensor(e, [e.length / bank.dim, bank.dim]));
      } else mean1 = mixedMean(bank, labels, xs, reshape(s, [n, 1]));
      plain = affineField(x, xt, c, kind);
      stable = affineField(mean1, xt, c, kind);
    }
    const use = unary("leScalar", tc, splitT);
    const chosen = where(use, stable, plain);
    return stopGradient(where(unary("isNan", chosen), plain, chosen));
  });
}

/** A conditional model: x [n, d], t [n], class labels [n] (null = numClasses) → [n, d]. */
export type ConditionalField = (x: Tensor, t: Tensor, y: Tensor) => Tensor;

/** Options for `stableVmLoss` and `siLoss`. */
export interface StableVmLossOptions {
  /** The memory bank the batch is drawn from (needed by stableVmLoss, and by siLoss without `x`). */
  bank?: MemoryBank;
  /** Rows per batch (ignored when `x` is given). */
  batchSize?: number;
  /** Number of data classes C (default bank.numClasses); the null label is C. */
  numClasses?: number;
  /** Source of every random draw (labels, entries, t, ε). */
  generator: Generator;
  /** Probability that a label is replaced by the null label. Default 0.1. */
  nullProb?: number;
  /** t ~ U[tEps, 1 − tEps]. Default 1e-4. */
  tEps?: number;
  /** siLoss only: a data batch [n, d] to use instead of drawing from the bank. */
  x?: Tensor;
  /** siLoss only: the host labels of `x`. */
  labels?: ArrayLike<number>;
  /** Use the stable target for t ≤ splitT. Default 0.5. */
  splitT?: number;
  /** Memory-efficient chunked bank pass (`stable_vm_efficient`). */
  efficient?: boolean;
  /** Entries per chunk for `efficient`. Default 64. */
  chunkSize?: number;
  /** Regress the velocity (default), the score, or SV's "score" (`"noise"`). */
  kind?: FieldKind;
  /** The interpolation path (SV `--path-type`): `"linear"` (default) or `"cosine"`. */
  path?: PathType;
  /**
   * How t is drawn (SV `--weighting`): `"uniform"` (default) on [tEps, 1 − tEps], or
   * `"lognormal"` (see `sampleTimes`), clipped to the same range.
   */
  weighting?: "uniform" | "lognormal";
}

/** What the losses return: the scalar loss and the batch it was computed on. */
export interface FlowLossResult {
  /** Mean squared error (a scalar). */
  loss: Tensor;
  /** Noisy inputs x_t [n, d]. */
  xt: Tensor;
  /** Times [n]. */
  t: Tensor;
  /** Labels given to the model [n] (null = numClasses). */
  y: Tensor;
  /** Regression targets [n, d]. */
  target: Tensor;
  /** The host labels. */
  labels: Int32Array;
  /** The clean samples x [n, d]. */
  x: Tensor;
  /** The noise ε [n, d]. */
  eps: Tensor;
}

function drawLabels(n: number, C: number, nullProb: number, gen: Generator): Int32Array {
  const u = gen.uniformHost(n), v = gen.uniformHost(n);
  return Int32Array.from(
    u,
    (ui, i) => (v[i]! < nullProb ? C : Math.min(C - 1, Math.floor(ui * C))),
  );
}

function commonOpts(opts: StableVmLossOptions) {
  const nullProb = checkNumber("nullProb", opts.nullProb ?? 0.1, 0, 1);
  const tEps = checkNumber("tEps", opts.tEps ?? 1e-4, 0, 0.5);
  return { nullProb, tEps };
}

// t and x_t = α·x + σ·ε for the losses (the linear path keeps its own two-op form, so its
// numbers are unchanged).
function drawPath(x: Tensor, opts: StableVmLossOptions, tEps: number) {
  const gen = opts.generator, B = x.shape[0]!;
  const weighting = checkChoice(
    "weighting",
    opts.weighting ?? "uniform",
    [
      "uniform",
      "lognormal",
    ] as const,
  );
  const path = checkChoice("path type", opts.path ?? "linear", PATH_TYPES);
  const t = weighting === "uniform"
    ? gen.uniform([B], tEps, 1 - tEps)
    : sampleTimes(B, { schedule: "lognormal", eps: Math.max(tEps, 1e-4), generator: gen });
  const eps = gen.normal(x.shape);
  const tc = reshape(t, [B, ...x.shape.slice(1).map(() => 1)]);
  if (path === "linear") return { t, eps, tc, xt: add(mul(eps, sub(1, tc)), mul(x, tc)) };
  const c = pathCoefficients(path, tc);
  return { t, eps, tc, c, xt: add(mul(c.alpha, x), mul(c.sigma, eps)) };
}

function regress(
  f: ConditionalField,
  b: { x: Tensor; eps: Tensor; xt: Tensor; t: Tensor },
  labels: Int32Array,
  target: Tensor,
): FlowLossResult {
  const y = tensor(Float32Array.from(labels), [labels.length]);
  const out = f(b.xt, b.t, y);
  const loss = mean(square(sub(out, target)));
  return { loss, y, target, labels, ...b };
}

/**
 * Stable Velocity Matching loss (SV `StableVMLoss`): labels y ~ U{0..C−1} (a fraction
 * `nullProb` replaced by the null label C), x drawn from the bank entries of y (the data
 * batch only refills the bank), t ~ U[tEps, 1−tEps], ε ~ N(0, I), x_t = (1−t)ε + t·x,
 * target from `stableVmTarget`, loss = mean ‖f(x_t, t, y) − target‖². Use inside
 * `valueAndGrad`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, MemoryBank, stableVmLoss } from "../../mod.ts";
 * const bank = new MemoryBank({ numClasses: 2, dim: 2 });
 * bank.add([1, 1, -1, -1, 1, 0], [0, 1, 0]);
 * const r = stableVmLoss((x) => x.mul(0), { bank, batchSize: 4, generator: new Generator(0) });
 * // With a zero field the loss is the mean squared target; x_t = t·x + (1 − t)·ε.
 * const tg = await r.target.data(), x = await r.x.data(), e = await r.eps.data();
 * const xt = await r.xt.data(), t = await r.t.data();
 * assert.ok(Math.abs(await r.loss.item() - tg.reduce((s, v) => s + v * v, 0) / tg.length) < 1e-5);
 * xt.forEach((v, k) => assert.ok(Math.abs(v - (t[k >> 1]! * x[k]! + (1 - t[k >> 1]!) * e[k]!)) < 1e-5));
 * ```
 */
export function stableVmLoss(f: ConditionalField, opts: StableVmLossOptions): FlowLossResult {
  const bank = opts.bank;
  if (!bank) throw new TypeError("stableVmLoss needs a memory bank (opts.bank)");
  const C = checkInt("numClasses", opts.numClasses ?? bank.numClasses, 1, bank.numClasses);
  const B = checkInt("batch size", opts.batchSize ?? 256, 1);
  const { nullProb, tEps } = commonOpts(opts);
  const gen = opts.generator;
  const labels = drawLabels(B, C, nullProb, gen).map((l) => (l === C ? bank.nullLabel : l));
  const x = bank.sample(labels, gen);
  const { t, eps, xt } = drawPath(x, opts, tEps);
  const target = stableVmTarget(bank, labels, { x, eps, xt, t }, opts);
  return regress(f, { x, eps, xt, t }, labels, target);
}

/**
 * Plain conditional flow matching (`--loss-type si`) with the `stableVmLoss` interface:
 * target x − ε (or the conditional score −ε/(1−t)). Uses `opts.x`/`opts.labels` when given
 * (labels dropped to null with probability `nullProb`), else draws from `opts.bank`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generator, randn, siLoss } from "../../mod.ts";
 * const r = siLoss((x) => x.mul(0), {
 *   x: randn([4, 2], { seed: 0 }), labels: [0, 1, 0, 1], numClasses: 2,
 *   generator: new Generator(0),
 * });
 * // The SiT target is x − ε (our t = 1 is data); a zero field's loss is its mean square.
 * const tg = await r.target.data(), x = await r.x.data(), e = await r.eps.data();
 * tg.forEach((v, k) => assert.ok(Math.abs(v - (x[k]! - e[k]!)) < 1e-6));
 * assert.ok(Math.abs(await r.loss.item() - tg.reduce((s, v) => s + v * v, 0) / 8) < 1e-5);
 * ```
 */
export function siLoss(f: ConditionalField, opts: StableVmLossOptions): FlowLossResult {
  const { nullProb, tEps } = commonOpts(opts);
  const gen = opts.generator;
  let x: Tensor, labels: Int32Array;
  if (opts.x) {
    const C = checkInt("numClasses", opts.numClasses ?? opts.bank?.numClasses ?? NaN, 1);
    const B = opts.x.shape[0]!;
    if (!opts.labels || opts.labels.length !== B) {
      throw new RangeError(`siLoss needs ${B} host labels for the ${B} rows of opts.x`);
    }
    const drop = gen.uniformHost(B);
    labels = Int32Array.from(opts.labels, (l, i) => (drop[i]! < nullProb ? C : l));
    x = opts.x;
  } else {
    const bank = opts.bank;
    if (!bank) throw new TypeError("siLoss needs a data batch (opts.x) or a memory bank");
    const C = checkInt("numClasses", opts.numClasses ?? bank.numClasses, 1, bank.numClasses);
    const B = checkInt("batch size", opts.batchSize ?? 256, 1);
    labels = drawLabels(B, C, nullProb, gen).map((l) => (l === C ? bank.nullLabel : l));
    x = bank.sample(labels, gen);
  }
  const { t, eps, tc, c, xt } = drawPath(x, opts, tEps);
  const kind = opts.kind ?? "velocity";
  const target = c ? affineField(x, xt, c, kind) : plainTarget(x, eps, tc, kind);
  return regress(f, { x, eps, xt, t }, labels, target);
}
