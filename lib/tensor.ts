/**
 * @file The Tensor class, lifetimes (dispose, `using`, scopes), autodiff plumbing, and the
 * primitive ops. Every primitive computes through the backend and attaches its vjp and jvp
 * rule (`attachRules` records what reverse mode's tapes and forward mode's tangents need);
 * every other op is composed from these, so it is differentiable in both modes.
 *
 * The primitives live beside the class so that Tensor methods (`x.add(y)`, `x.sum()`) call
 * them directly: value imports flow one way (lib/ops → lib/tensor → lib/backend → lib/ir),
 * with no cycle and no registration step. Elementwise primitives take their derivatives from
 * the op table (lib/ir.ts): `g · f'(x)` runs as one fused kernel, or op by op when an input
 * is itself being differentiated, so higher-order derivatives stay exact.
 * @module
 */
import type { Backend, Storage, View } from "./backend/backend.ts";
import { getBackend } from "./backend/select.ts";
import {
  binaryDerivatives,
  type BinaryOp,
  binaryRow,
  chain,
  type Expr,
  exprInputs,
  exprJvp,
  exprVjp,
  Fx,
  type ReduceOp,
  renumberInputs,
  unaryDerivative,
  type UnaryOp,
  unaryRow,
} from "./ir.ts";
import {
  broadcastShapes,
  broadcastStrides,
  normAxes,
  normAxis,
  shapesEqual,
  sizeOf,
  stridesOf,
} from "./shape.ts";
import { fmtShape } from "./_util.ts";
import { captureHooks } from "./capture.ts";

class Buf {
  refs = 1;
  constructor(public storage: Storage, public backend: Backend) {}
}

let nextId = 1;

/**
 * A vjp rule: cotangent of the output -> cotangents of the inputs (null = no gradient).
 * `need[i]` says whether input i is differentiated at all; rules skip the work for the others
 * (e.g. a network's input batch, or constants fed to a matmul). Only a rule recorded with
 * `accumulates` (see {@linkcode PrimRules}) is given `acc`: for each input i it lists, `acc[i]`,
 * when not null, is the cotangent input i has gathered so far, and the rule must then return
 * input i's total, acc[i] + its own gradient (which its kernel may add as it stores, saving the
 * tape's add); `acc[i]` is null for every other input.
 */
export type VjpRule = (
  g: Tensor,
  need: readonly boolean[],
  acc?: readonly (Tensor | null)[],
) => (Tensor | null)[];
/** A jvp rule: tangents of the inputs (null = zero) -> tangent of the output. */
export type JvpRule = (tangents: (Tensor | null)[]) => Tensor | null;

interface TapeNode {
  out: Tensor;
  inputs: Tensor[];
  vjp: VjpRule;
  /** Set when the output is the box of input 0 at this offset (a slice): see PrimRules.region. */
  region?: readonly number[];
  accumulates?: readonly number[];
}

/** A reverse-mode tape: nodes in creation (topological) order. */
export class Tape {
  /** Unique id. */
  readonly id: number = nextId++;
  /** Recorded nodes. */
  readonly nodes: TapeNode[] = [];
}

const activeTapes: Tape[] = [];
const activeJvpLevels: number[] = [];
const scopes: Set<Tensor>[] = [];

/**
 * An n-dimensional f32 array on one backend. Create tensors with `tensor`, `zeros`, `randn`
 * and friends; free them with `dispose()`, `using`, or a `tidy` scope.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor } from "../mod.ts";
 * const x = tensor([1, 2, 3, 4], [2, 2]);
 * const y = x.add(1).mul(x); // (x + 1)·x
 * assert.deepEqual([...await y.data()], [2, 6, 12, 20]);
 * y.dispose();
 * x.dispose();
 * assert.ok(x.isDisposed);
 * ```
 */
export class Tensor {
  /** Unique id (for debugging and cotangent maps). */
  readonly id: number = nextId++;
  /** Extents of each axis. */
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  #buf: Buf | null;
  /** @internal Ids of the tapes tracking this tensor. */
  _tapes: Set<number> | undefined;
  /** @internal Tangents per jvp level. */
  _tangents: Map<number, Tensor> | undefined;
  /** @internal Ids of the tapes whose recorded nodes read this tensor (vjp rules need it). */
  _held: Set<number> | undefined;

  /** @internal Use the creation functions instead. */
  constructor(buf: Buf, shape: readonly number[]) {
    this.#buf = buf;
    this.shape = Object.freeze([...shape]);
    this.size = shape.reduce((a, b) => a * b, 1);
    scopes[scopes.length - 1]?.add(this);
  }

  /** @internal Wrap new storage (refcount 1). */
  static _fromStorage(storage: Storage, shape: readonly number[], backend: Backend): Tensor {
    return new Tensor(new Buf(storage, backend), shape);
  }

  /** @internal A new tensor sharing this one's storage (reshape). */
  _share(shape: readonly number[]): Tensor {
    const b = this._buf();
    b.refs++;
    return new Tensor(b, shape);
  }

  /** @internal The buffer, or a clear error when disposed. */
  _buf(): Buf {
    if (!this.#buf) {
      throw new Error(
        `Tensor ${this.id} of shape ${fmtShape(this.shape)} was used after dispose()`,
      );
    }
    return this.#buf;
  }

  /** @internal Backend storage. */
  get storage(): Storage {
    return this._buf().storage;
  }

  /** The backend this tensor lives on. */
  get backend(): Backend {
    return this._buf().backend;
  }

  /** Number of axes. */
  get rank(): number {
    return this.shape.length;
  }

  /** Whether `dispose()` has been called. */
  get isDisposed(): boolean {
    return this.#buf === null;
  }

  /**
   * Free this tensor's memory (shared storage is freed when its last user is disposed).
   * Tensors recorded on an active gradient tape are kept until the tape finishes.
   */
  dispose(): void {
    if (!this.#buf) return;
    if (
      (this._tapes || this._held) &&
      activeTapes.some((t) => this._tapes?.has(t.id) || this._held?.has(t.id))
    ) return;
    const b = this.#buf;
    this.#buf = null;
    if (--b.refs === 0) b.backend.free(b.storage);
    for (const s of scopes) s.delete(this);
  }

  /** `using x = ...` frees the tensor at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal Replace this tensor's storage with `other`'s (optimizer updates). Disposes `other`. */
  _assign(other: Tensor): void {
    if (other.size !== this.size) {
      throw new RangeError(
        `Cannot assign a tensor of shape ${fmtShape(other.shape)} to one of shape ${
          fmtShape(this.shape)
        }`,
      );
    }
    const nb = other._buf();
    nb.refs++;
    other.dispose();
    const old = this._buf();
    this.#buf = nb;
    if (--old.refs === 0) old.backend.free(old.storage);
  }

  /** Copy the elements to the host. */
  data(): Promise<Float32Array> {
    const b = this._buf();
    return b.backend.read(b.storage);
  }

  /** Copy the elements to the host as a nested array. */
  async array(): Promise<unknown> {
    const d = await this.data();
    const build = (axis: number, off: number): unknown => {
      if (axis === this.rank) return d[off];
      const n = this.shape[axis]!;
      const stride = this.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: n }, (_, i) => build(axis + 1, off + i * stride));
    };
    return build(0, 0);
  }

  /** The single element of a size-1 tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new RangeError(
        `item() needs a tensor of size 1 but found shape ${fmtShape(this.shape)}`,
      );
    }
    return (await this.data())[0]!;
  }

  /** Synchronous copy to the host (CPU backend only). */
  dataSync(): Float32Array {
    const b = this._buf();
    return b.backend.readSync(b.storage);
  }

  /** Human-readable summary. */
  toString(): string {
    return `Tensor(${fmtShape(this.shape)}, ${this.isDisposed ? "disposed" : this.backend.name})`;
  }

  // ---- methods: the primitives and scalar arithmetic defined below ----
  /** Elementwise a + b (broadcasting). */
  add(b: Tensor | number): Tensor {
    return add(this, b);
  }
  /** Elementwise a − b. */
  sub(b: Tensor | number): Tensor {
    return sub(this, b);
  }
  /** Elementwise a · b. */
  mul(b: Tensor | number): Tensor {
    return mul(this, b);
  }
  /** Elementwise a / b. */
  div(b: Tensor | number): Tensor {
    return div(this, b);
  }
  /** Elementwise a ** b. */
  pow(b: Tensor | number): Tensor {
    return pow(this, b);
  }
  /** Elementwise maximum. */
  maximum(b: Tensor | number): Tensor {
    return maximum(this, b);
  }
  /** Elementwise minimum. */
  minimum(b: Tensor | number): Tensor {
    return minimum(this, b);
  }
  /** −x. */
  neg(): Tensor {
    return unary("neg", this);
  }
  /** eˣ. */
  exp(): Tensor {
    return unary("exp", this);
  }
  /** ln x. */
  log(): Tensor {
    return unary("log", this);
  }
  /** √x. */
  sqrt(): Tensor {
    return unary("sqrt", this);
  }
  /** x². */
  square(): Tensor {
    return unary("square", this);
  }
  /** |x|. */
  abs(): Tensor {
    return unary("abs", this);
  }
  /** tanh x. */
  tanh(): Tensor {
    return unary("tanh", this);
  }
  /** 1 / (1 + e⁻ˣ). */
  sigmoid(): Tensor {
    return unary("sigmoid", this);
  }
  /** max(x, 0). */
  relu(): Tensor {
    return unary("relu", this);
  }
  /** Sum over axes (all by default). */
  sum(axes?: number | readonly number[], keepdims = false): Tensor {
    return reduce("sum", this, axes, keepdims);
  }
  /** Mean over axes (all by default). */
  mean(axes?: number | readonly number[], keepdims = false): Tensor {
    return mean(this, axes, keepdims);
  }
  /** Maximum over axes. */
  max(axes?: number | readonly number[], keepdims = false): Tensor {
    return reduce("max", this, axes, keepdims);
  }
  /** Minimum over axes. */
  min(axes?: number | readonly number[], keepdims = false): Tensor {
    return reduce("min", this, axes, keepdims);
  }
  /** Matrix product (batched, broadcasting batch axes). */
  matmul(b: Tensor): Tensor {
    return matmul(this, b);
  }
  /** Same elements, new shape (one axis may be −1). */
  reshape(shape: readonly number[]): Tensor {
    return reshape(this, shape);
  }
  /** Permute axes (reverses them by default). */
  transpose(perm?: readonly number[]): Tensor {
    return transpose(this, perm);
  }
  /** A copy that is cut off from gradients. */
  detach(): Tensor {
    return stopGradient(this);
  }
}

/** Autodiff rules of one primitive application. */
export interface PrimRules {
  vjp?: VjpRule;
  jvp?: JvpRule;
  /**
   * The output is the box of its one input that starts at this offset (a slice), so the vjp
   * is that box's cotangent zero-padded to the input's shape. The reverse pass may instead
   * write the cotangent into the input's cotangent by region (lib/autodiff `backward`): the
   * pieces of a `split` then make one array, not one zero-padded array each and their sum.
   */
  region?: readonly number[];
  /**
   * The inputs (indices) whose cotangents so far the vjp takes (`acc`, see {@linkcode VjpRule})
   * and returns their totals: a fused backward adds the residual stream's gradient in its own
   * store.
   */
  accumulates?: readonly number[];
}

/**
 * Check that all inputs share a backend and return it.
 * @internal
 */
export function backendOf(inputs: readonly Tensor[]): Backend {
  const be = inputs[0]?.backend ?? getBackend();
  for (const t of inputs) {
    if (t.backend !== be) {
      throw new TypeError(
        `Cannot combine tensors on different backends (${be.name} and ${t.backend.name}); ` +
          `move one with toBackend()`,
      );
    }
  }
  return be;
}

/**
 * Wrap freshly computed storage as the output of a primitive, recording it on every active
 * tape that tracks an input (reverse mode) and computing its tangent for every active jvp
 * level where an input has one (forward mode). Rules are built from Tensor ops, so they are
 * themselves differentiable: reverse-of-jvp works.
 * @internal
 */
export function applyPrim(
  inputs: readonly Tensor[],
  storage: Storage,
  shape: readonly number[],
  backend: Backend,
  rules: PrimRules,
): Tensor {
  const out = Tensor._fromStorage(storage, shape, backend);
  attachRules(out, inputs, rules);
  return out;
}

/** @internal Record autodiff for an output that already exists (e.g. a reshape sharing storage). */
export function attachRules(out: Tensor, inputs: readonly Tensor[], rules: PrimRules): void {
  if (activeTapes.length > 0 && rules.vjp) {
    for (const tape of activeTapes) {
      if (inputs.some((x) => x._tapes?.has(tape.id))) {
        (out._tapes ??= new Set()).add(tape.id);
        tape.nodes.push({
          out,
          inputs: [...inputs],
          vjp: rules.vjp,
          ...(rules.region ? { region: rules.region } : {}),
          ...(rules.accumulates?.length ? { accumulates: rules.accumulates } : {}),
        });
        // Untracked inputs (constants, masks) are read by the vjp rule during the backward
        // pass, so a tidy or dispose inside the differentiated function must not free them.
        for (const x of inputs) if (!x._tapes?.has(tape.id)) (x._held ??= new Set()).add(tape.id);
      }
    }
  }
  if (activeJvpLevels.length > 0) {
    for (const level of [...activeJvpLevels]) {
      const ts = inputs.map((x) => x._tangents?.get(level) ?? null);
      if (ts.every((t) => t === null)) continue;
      if (!rules.jvp) throw new Error("This operation has no forward-mode (jvp) rule");
      // Suspend this level while computing its tangent so the rule's own ops are not
      // differentiated at the same level (perturbation confusion).
      const idx = activeJvpLevels.indexOf(level);
      activeJvpLevels.splice(idx, 1);
      try {
        const t = rules.jvp(ts);
        if (t) (out._tangents ??= new Map()).set(level, t);
      } finally {
        activeJvpLevels.splice(idx, 0, level);
      }
    }
  }
}

/** @internal Autodiff state access for lib/autodiff. */
export const _autodiffState = {
  activeTapes,
  activeJvpLevels,
  newLevel(): number {
    return nextId++;
  },
};

/** A tree of tensors: a tensor, an array, or a plain object of trees. */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [k: string]: TensorTree };

/**
 * All tensors in a tree, depth first.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, treeLeaves } from "../mod.ts";
 * const a = tensor([1]), b = tensor([2]);
 * const leaves = treeLeaves({ a, b: [b], note: "not a tensor" });
 * assert.equal(leaves.length, 2);
 * assert.ok(leaves.includes(a) && leaves.includes(b));
 * ```
 */
export function treeLeaves(tree: unknown): Tensor[] {
  const out: Tensor[] = [];
  const walk = (t: unknown) => {
    if (t instanceof Tensor) out.push(t);
    else if (Array.isArray(t)) t.forEach(walk);
    else if (t && typeof t === "object" && !ArrayBuffer.isView(t)) {
      Object.values(t as Record<string, unknown>).forEach(walk);
    }
  };
  walk(tree);
  return out;
}

/**
 * Map a function over the tensors of a tree, keeping its structure.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, treeMap } from "../mod.ts";
 * const t = treeMap({ a: tensor([1]), b: [tensor([3])] }, (x) => x.mul(2));
 * assert.deepEqual([...await t.a.data()], [2]);
 * assert.deepEqual([...await t.b[0]!.data()], [6]);
 * ```
 */
export function treeMap<T>(tree: T, f: (t: Tensor) => Tensor): T {
  const walk = (t: unknown): unknown => {
    if (t instanceof Tensor) return f(t);
    if (Array.isArray(t)) return t.map(walk);
    if (t && typeof t === "object" && !ArrayBuffer.isView(t)) {
      return Object.fromEntries(
        Object.entries(t as Record<string, unknown>).map(([k, v]) => [k, walk(v)]),
      );
    }
    return t;
  };
  return walk(tree) as T;
}

/**
 * Run `fn`, then dispose every tensor created inside it except those in its result (which
 * move to the enclosing scope). `fn` must be synchronous.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { type Tensor, tensor, tidy } from "../mod.ts";
 * const x = tensor([1, 2]);
 * let mid: Tensor | undefined;
 * const y = tidy(() => {
 *   mid = x.mul(2);
 *   return mid.add(1);
 * });
 * assert.ok(mid!.isDisposed); // the intermediate x*2 was freed
 * assert.ok(!x.isDisposed); // made outside: kept
 * assert.deepEqual([...await y.data()], [3, 5]);
 * ```
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    throw new TypeError("tidy() takes a synchronous function; await outside the scope");
  }
  const keep = new Set(treeLeaves(result));
  // Inside a jvp, a returned tensor's tangents (and theirs, for nested levels) must survive.
  for (const t of keep) t._tangents?.forEach((tan) => keep.add(tan));
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (!keep.has(t)) t.dispose();
    // A tensor still alive here is returned, or is held by an active gradient tape.
    if (!t.isDisposed) parent?.add(t);
  }
  return result;
}

/**
 * Keep a tensor alive past the enclosing `tidy` scope(s).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { keep, type Tensor, tensor, tidy } from "../mod.ts";
 * let k: Tensor | undefined, d: Tensor | undefined;
 * tidy(() => {
 *   d = tensor([2]);
 *   k = keep(tensor([1]));
 * });
 * assert.ok(d!.isDisposed);
 * assert.ok(!k!.isDisposed);
 * assert.deepEqual([...await k!.data()], [1]);
 * ```
 */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

/** @internal Push a scope (used by valueAndGrad). */
export function _pushScope(): Set<Tensor> {
  const s = new Set<Tensor>();
  scopes.push(s);
  return s;
}
/** @internal Pop a scope, disposing its tensors except `keepSet`; survivors move up. */
export function _popScope(scope: Set<Tensor>, keepSet: Set<Tensor>, disposeRest: boolean): void {
  const i = scopes.lastIndexOf(scope);
  if (i >= 0) scopes.splice(i, 1);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (!keepSet.has(t) && disposeRest) t.dispose();
    if (!t.isDisposed) parent?.add(t);
  }
}

// ================================================================ primitives

function checkTensor(x: unknown, name: string): Tensor {
  if (!(x instanceof Tensor)) {
    throw new TypeError(`Expected ${name} to be a Tensor but found ${typeof x}`);
  }
  return x;
}

// ---------------------------------------------------------------- elementwise

// Leaf expressions: input i of an elementwise evaluation (immutable, so shared).
const IN: readonly Expr[] = [0, 1, 2, 3, 4].map((index) => ({ kind: "input", index }));

/**
 * Whether any of `xs` is being differentiated: tracked by an active tape or carrying a tangent
 * of an active jvp level. Fused evaluation must then go op by op, so gradients stay exact.
 * @internal
 */
export function differentiating(xs: readonly Tensor[]): boolean {
  if (activeTapes.length === 0 && activeJvpLevels.length === 0) return false;
  return xs.some((x) =>
    (x._tapes && activeTapes.some((t) => x._tapes!.has(t.id))) ||
    (x._tangents && activeJvpLevels.some((l) => x._tangents!.has(l)))
  );
}

function evalEager(
  e: Expr,
  xs: readonly Tensor[],
  be: Backend,
  memo: Map<Expr, Tensor>,
): Tensor {
  const have = memo.get(e);
  if (have) return have;
  let r: Tensor;
  switch (e.kind) {
    case "input":
      r = xs[e.index]!;
      break;
    case "const":
      if (e.dyn) captureHooks()?.refuse("a per-step constant took the node-by-node path");
      r = Tensor._fromStorage(be.fill(1, e.value), [], be);
      break;
    case "unary":
      r = unary(e.op, evalEager(e.x, xs, be, memo), e.p0, e.p1);
      break;
    case "binary":
      r = binary(e.op, evalEager(e.a, xs, be, memo), evalEager(e.b, xs, be, memo));
      break;
    case "where":
      r = where(
        evalEager(e.c, xs, be, memo),
        evalEager(e.a, xs, be, memo),
        evalEager(e.b, xs, be, memo),
      );
      break;
  }
  memo.set(e, r);
  return r;
}

/**
 * Evaluate elementwise expressions over `inputs` (broadcast to `shape`) in one backend call,
 * or op by op with the primitives when an input is being differentiated (an active tape or
 * jvp tangent), so that gradients through the result stay exact. With `fresh`, every result
 * is a new tensor; without (autodiff rules), an output that is a bare input of `shape` is
 * that input itself, as a hand-written rule would return it.
 * @internal
 */
export function evalExprs(
  inputs: readonly Tensor[],
  outs: readonly Expr[],
  shape: readonly number[],
  fresh: boolean,
): Tensor[] {
  const be = backendOf(inputs);
  if (differentiating(inputs)) {
    if (_fusedDifferentiation.enabled) return evalDifferentiable(inputs, outs, shape, fresh, be);
    const memo = new Map<Expr, Tensor>(), seen = new Set<Tensor>();
    return outs.map((o) => {
      let t = evalEager(o, inputs, be, memo);
      if (!shapesEqual(t.shape, shape)) t = broadcastTo(t, shape);
      else if (fresh && (inputs.includes(t) || seen.has(t))) t = unary("copy", t);
      seen.add(t);
      return t;
    });
  }
  return evalFused(inputs, outs, shape, fresh, be);
}

/**
 * @internal Whether `evalExprs` keeps a differentiated expression fused (one kernel, whose
 * vjp and jvp rules are the expression's own derivatives, themselves fused) instead of running
 * it op by op. On by default; tests switch it off to compare both.
 */
export const _fusedDifferentiation = { enabled: true };

// A differentiated expression as one kernel per call: each output becomes a primitive whose
// rules are the symbolic derivatives of its expression (exprVjp, exprJvp), evaluated through
// evalExprs again, so they are fused and differentiable in turn. The op-by-op chain rule
// recorded one tape node and one dispatch per op; the silu jvp inside a Lagrangian
// self-distillation loss was 6 dispatches forward and 10 backward per layer.
function evalDifferentiable(
  inputs: readonly Tensor[],
  outs: readonly Expr[],
  shape: readonly number[],
  fresh: boolean,
  be: Backend,
): Tensor[] {
  const n = inputs.length;
  const vals = evalFused(inputs, outs, shape, fresh, be);
  const gIn: Expr = { kind: "input", index: n };
  return vals.map((v, j) => {
    // An output that is an input itself (no kernel ran) already carries that input's rules.
    if (inputs.includes(v)) return v;
    const e = outs[j]!;
    attachRules(v, inputs, {
      vjp: (g, need) => {
        const ds = exprVjp(e, gIn, n);
        const want = ds.map((d, i) => d !== null && need[i] !== false);
        const exprs = ds.filter((_, i) => want[i]) as Expr[];
        const r = exprs.length ? evalExprs([...inputs, g], exprs, shape, false) : [];
        let k = 0;
        return inputs.map((x, i) => (want[i] ? sumTo(r[k++]!, x.shape) : null));
      },
      jvp: (ts) => {
        const t = exprJvp(e, ts.map((t, i) => (t ? { kind: "input", index: n + i } : null)));
        if (!t) return null;
        return evalExprs([...inputs, ...ts.map((t, i) => t ?? inputs[i]!)], [t], shape, false)[0]!;
      },
    });
    return v;
  });
}

function evalFused(
  inputs: readonly Tensor[],
  outs: readonly Expr[],
  shape: readonly number[],
  fresh: boolean,
  be: Backend,
): Tensor[] {
  const res = outs.map((o) =>
    !fresh && o.kind === "input" && shapesEqual(inputs[o.index]!.shape, shape)
      ? inputs[o.index]!
      : undefined
  );
  const todo = outs.filter((_, i) => res[i] === undefined);
  if (todo.length > 0) {
    // Bind only the inputs the expressions read (a rule passes every leaf it might use).
    const used = exprInputs(todo);
    const exprs = used.every((j, k) => j === k)
      ? todo
      : renumberInputs(todo, new Map(used.map((j, k) => [j, k])));
    const ins = used.map((j) => inputs[j]!);
    const ss = be.elementwise(
      exprs,
      ins.map((x) => x.storage),
      ins.map((x) => broadcastStrides(x.shape, shape)),
      shape,
    );
    let k = 0;
    for (let i = 0; i < res.length; i++) {
      res[i] ??= Tensor._fromStorage(ss[k++]!, shape, be);
    }
  }
  return res as Tensor[];
}

/**
 * Apply an elementwise unary op (a row of `UNARY` in lib/ir.ts). Its derivative comes from
 * the same row: `g · f'(x)` is one fused kernel (the backward of silu is one dispatch).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, unary } from "../mod.ts";
 * const y = unary("affine", tensor([1, 2]), 3, 1); // 3x + 1
 * assert.deepEqual([...await y.data()], [4, 7]);
 * ```
 */
export function unary(op: UnaryOp, x: Tensor, p0 = 0, p1 = 0): Tensor {
  checkTensor(x, "x");
  unaryRow(op);
  const be = x.backend;
  const [s] = be.elementwise(
    [{ kind: "unary", op, x: IN[0]!, p0, p1 }],
    [x.storage],
    [stridesOf(x.shape)],
    x.shape,
  );
  // Create the output before attaching rules: forward mode runs the jvp rule inside
  // attachRules, and rules that use the output (exp, tanh, …) must see it initialised.
  const out = Tensor._fromStorage(s!, x.shape, be);
  // g · f'(x) with f' from the op's row over leaves x (input 1) and y (input 2).
  const through = (g: Tensor): Tensor | null => {
    const d = unaryDerivative(op, IN[1]!, IN[2]!, p0, p1);
    return d ? evalExprs([g, x, out], [chain(IN[0]!, d)], x.shape, false)[0]! : null;
  };
  attachRules(out, [x], {
    vjp: (g) => [through(g)],
    jvp: ([t]) => through(t!),
  });
  return out;
}

/**
 * Apply an elementwise binary op (a row of `BINARY` in lib/ir.ts) with NumPy broadcasting.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { binary, tensor } from "../mod.ts";
 * // [3, 1] × [2] broadcasts to [3, 2]: an outer product.
 * const y = binary("mul", tensor([1, 2, 3], [3, 1]), tensor([10, 20], [2]));
 * assert.deepEqual(await y.array(), [[10, 20], [20, 40], [30, 60]]);
 * ```
 */
export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  checkTensor(a, "a");
  checkTensor(b, "b");
  binaryRow(op);
  const be = backendOf([a, b]);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const [s] = be.elementwise(
    [{ kind: "binary", op, a: IN[0]!, b: IN[1]! }],
    [a.storage, b.storage],
    [broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape)],
    shape,
  );
  // Output first, then rules (the div/pow rules read `out`; see `unary`).
  const out = Tensor._fromStorage(s!, shape, be);
  // ∂out/∂a and ∂out/∂b from the op's row, over leaves a, b, out (inputs 2, 3, 4); inputs 0
  // and 1 are the (co)tangents.
  const [da, db] = binaryDerivatives(op, IN[2]!, IN[3]!, IN[4]!);
  if (!da && !db) {
    attachRules(out, [a, b], { vjp: () => [null, null], jvp: () => null });
    return out;
  }
  attachRules(out, [a, b], {
    vjp: (g, need) => {
      // Both partial cotangents in one kernel, before each is summed down to its input.
      const wantA = need[0] !== false && da !== null, wantB = need[1] !== false && db !== null;
      const outs = [
        ...(wantA ? [chain(IN[0]!, da!)] : []),
        ...(wantB ? [chain(IN[0]!, db!)] : []),
      ];
      const r = outs.length ? evalExprs([g, g, a, b, out], outs, shape, false) : [];
      return [
        wantA ? sumTo(r[0]!, a.shape) : null,
        wantB ? sumTo(r[wantA ? 1 : 0]!, b.shape) : null,
      ];
    },
    jvp: ([ta, tb]) => {
      const pa = ta && da ? chain(IN[0]!, da) : null, pb = tb && db ? chain(IN[1]!, db) : null;
      if (!pa && !pb) return null;
      const e: Expr = pa && pb ? { kind: "binary", op: "add", a: pa, b: pb } : (pa ?? pb)!;
      return evalExprs([ta ?? a, tb ?? b, a, b, out], [e], shape, false)[0]!;
    },
  });
  return out;
}

/**
 * `cond ? a : b` elementwise with broadcasting (cond is nonzero = true; NaN counts as true).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { tensor, where } from "../mod.ts";
 * const y = where(tensor([1, 0]), tensor([5, 5]), tensor([7, 7]));
 * assert.deepEqual([...await y.data()], [5, 7]);
 * ```
 */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  const be = backendOf([cond, a, b]);
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape, "where"), b.shape, "where");
  const [s] = be.elementwise(
    [{ kind: "where", c: IN[0]!, a: IN[1]!, b: IN[2]! }],
    [cond.storage, a.storage, b.storage],
    [
      broadcastStrides(cond.shape, shape),
      broadcastStrides(a.shape, shape),
      broadcastStrides(b.shape, shape),
    ],
    shape,
  );
  const zero: Expr = { kind: "const", value: 0 };
  const pick = (x: Expr, y: Expr): Expr => ({ kind: "where", c: IN[0]!, a: x, b: y });
  return applyPrim([cond, a, b], s!, shape, be, {
    vjp: (g, need) => {
      const wantA = need[1] !== false, wantB = need[2] !== false;
      const outs = [...(wantA ? [pick(IN[1]!, zero)] : []), ...(wantB ? [pick(zero, IN[1]!)] : [])];
      const r = outs.length ? evalExprs([cond, g], outs, shape, false) : [];
      return [
        null,
        wantA ? sumTo(r[0]!, a.shape) : null,
        wantB ? sumTo(r[wantA ? 1 : 0]!, b.shape) : null,
      ];
    },
    // A missing tangent is zero; cond is piecewise constant (its tangent alone gives zero).
    jvp: ([, ta, tb]) =>
      ta || tb
        ? evalExprs(
          [cond, ta ?? a, tb ?? b],
          [pick(ta ? IN[1]! : zero, tb ? IN[2]! : zero)],
          shape,
          false,
        )[0]!
        : null,
  });
}

/**
 * Evaluate elementwise expressions of broadcast inputs in one fused kernel (one dispatch on
 * WebGPU instead of one per op: optimizer updates, sampler steps and EMA use this). Returns
 * one fresh tensor per expression, all of the broadcast shape. When any input is being
 * differentiated (an active tape or jvp tangent), the same expression runs op by op instead,
 * so gradients stay exact.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fused, tensor } from "../mod.ts";
 * const p = tensor([1, 2]), g = tensor([0.5, 0.5]);
 * // p − 0.1·g and g² in one kernel
 * const [p2, g2] = fused([p, g], (p, g) => [p.sub(g.mul(0.1)), g.square()]);
 * const a = await p2!.data();
 * assert.ok(Math.abs(a[0]! - 0.95) < 1e-6 && Math.abs(a[1]! - 1.95) < 1e-6);
 * assert.deepEqual([...await g2!.data()], [0.25, 0.25]);
 * ```
 */
export function fused(
  inputs: readonly Tensor[],
  build: (...xs: Fx[]) => Fx | Fx[],
): Tensor[] {
  inputs.forEach((x, i) => checkTensor(x, `inputs[${i}]`));
  const res = build(...inputs.map((_, i) => Fx.input(i)));
  const outs = (Array.isArray(res) ? res : [res]).map((f) => f.node);
  const shape = inputs.reduce<readonly number[]>((s, x) => broadcastShapes(s, x.shape), []);
  return evalExprs(inputs, outs, shape, true);
}

// ---------------------------------------------------------------- broadcasting helpers

/**
 * Sum a broadcast gradient back down to `shape`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ones, sumTo } from "../mod.ts";
 * const g = sumTo(ones([3, 4]), [1, 4]); // the gradient of a [1, 4] → [3, 4] broadcast
 * assert.deepEqual([...g.shape], [1, 4]);
 * assert.deepEqual([...await g.data()], [3, 3, 3, 3]);
 * ```
 */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  // tidy: the reduced tensor is an intermediate that the reshaped view would otherwise pin.
  return tidy(() => reshape(axes.length ? reduce("sum", g, axes) : g, shape));
}

// ---------------------------------------------------------------- creation helpers

/** @internal zeros on a given backend. */
export function zerosOn(be: Backend, shape: readonly number[]): Tensor {
  return Tensor._fromStorage(be.fill(sizeOf(shape), 0), shape, be);
}

// ---------------------------------------------------------------- reshape, permute, expand

/**
 * Same elements, new shape; one axis may be −1. Shares storage (no copy).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { arange, reshape } from "../mod.ts";
 * const y = reshape(arange(6), [2, -1]); // −1: inferred (6 / 2)
 * assert.deepEqual(await y.array(), [[0, 1, 2], [3, 4, 5]]);
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x");
  const s = [...shape];
  const neg = s.indexOf(-1);
  if (neg >= 0) {
    const rest = s.reduce((a, d, i) => (i === neg ? a : a * d), 1);
    s[neg] = rest === 0 ? 0 : x.size / rest;
  }
  if (s.some((d) => !Number.isInteger(d) || d < 0) || sizeOf(s) !== x.size) {
    throw new RangeError(
      `Cannot reshape a tensor of shape ${fmtShape(x.shape)} to ${fmtShape(shape)}`,
    );
  }
  if (shapesEqual(s, x.shape)) return x;
  const out = x._share(s);
  const from = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [reshape(g, from)],
    jvp: ([t]) => reshape(t!, s),
  });
  return out;
}

function stridedCopy(x: Tensor, view: View): Tensor {
  const be = x.backend;
  const size = sizeOf(view.shape);
  const dst = be.alloc(size);
  be.copyInto(
    dst,
    { shape: view.shape, strides: stridesOf(view.shape), offset: 0 },
    x.storage,
    view,
  );
  return Tensor._fromStorage(dst, view.shape, be);
}

/**
 * Permute axes (reverse them when `perm` is omitted). Materialises a contiguous copy.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { arange, transpose } from "../mod.ts";
 * const y = transpose(arange(6).reshape([2, 3]));
 * assert.deepEqual(await y.array(), [[0, 3], [1, 4], [2, 5]]);
 * ```
 */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  checkTensor(x, "x");
  const p = perm ?? [...Array(x.rank).keys()].reverse();
  const sorted = [...p].map((a) => normAxis(a, x.rank, x.shape)).sort((a, b) => a - b);
  if (p.length !== x.rank || sorted.some((a, i) => a !== i)) {
    throw new RangeError(
      `Expected perm to be a permutation of the ${x.rank} axes of shape ${
        fmtShape(x.shape)
      } but found [${p.join(", ")}]`,
    );
  }
  const pp = p.map((a) => normAxis(a, x.rank));
  if (pp.every((a, i) => a === i)) return x;
  const st = stridesOf(x.shape);
  const shape = pp.map((a) => x.shape[a]!);
  const out = stridedCopy(x, { shape, strides: pp.map((a) => st[a]!), offset: 0 });
  const inv = new Array<number>(pp.length);
  pp.forEach((a, i) => (inv[a] = i));
  attachRules(out, [x], {
    vjp: (g) => [transpose(g, inv)],
    jvp: ([t]) => transpose(t!, pp),
  });
  return out;
}

/**
 * Broadcast to a larger shape (materialised).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { broadcastTo, tensor } from "../mod.ts";
 * assert.deepEqual(await broadcastTo(tensor([1, 2]), [3, 2]).array(), [[1, 2], [1, 2], [1, 2]]);
 * ```
 */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  checkTensor(x, "x");
  const target = broadcastShapes(x.shape, shape, "broadcast");
  if (!shapesEqual(target, shape)) {
    throw new RangeError(
      `Cannot broadcast a tensor of shape ${fmtShape(x.shape)} to ${fmtShape(shape)}`,
    );
  }
  if (shapesEqual(x.shape, shape)) return x;
  const out = stridedCopy(x, { shape, strides: broadcastStrides(x.shape, shape), offset: 0 });
  const from = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [sumTo(g, from)],
    jvp: ([t]) => broadcastTo(t!, shape),
  });
  return out;
}

// ---------------------------------------------------------------- slicing, concat

/**
 * Take `x[begin[i] : begin[i] + size[i]]` on every axis (size −1 = to the end).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { arange, slice } from "../mod.ts";
 * // rows 0..1, columns 1..3 of [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
 * const y = slice(arange(10).reshape([2, 5]), [0, 1], [2, 3]);
 * assert.deepEqual(await y.array(), [[1, 2, 3], [6, 7, 8]]);
 * ```
 */
export function slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  checkTensor(x, "x");
  if (begin.length !== x.rank || size.length !== x.rank) {
    throw new RangeError(
      `slice() needs begin and size with one entry per axis of shape ${fmtShape(x.shape)}`,
    );
  }
  const sz = size.map((s, i) => (s === -1 ? x.shape[i]! - begin[i]! : s));
  for (let i = 0; i < x.rank; i++) {
    if (
      !Number.isInteger(begin[i]) || !Number.isInteger(sz[i]) || begin[i]! < 0 || sz[i]! < 0 ||
      begin[i]! + sz[i]! > x.shape[i]!
    ) {
      throw new RangeError(
        `Slice [${begin.join(", ")}] + [${sz.join(", ")}] is out of range for shape ${
          fmtShape(x.shape)
        }`,
      );
    }
  }
  if (shapesEqual(sz, x.shape)) return x;
  const st = stridesOf(x.shape);
  const offset = begin.reduce((a, b, i) => a + b * st[i]!, 0);
  const out = stridedCopy(x, { shape: sz, strides: st, offset });
  const from = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [padSlice(g, from, begin)],
    jvp: ([t]) => slice(t!, begin, sz),
    region: [...begin],
  });
  return out;
}

/**
 * Zeros of `shape` with `x` written at offset `begin` (the adjoint of `slice`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { padSlice, tensor } from "../mod.ts";
 * assert.deepEqual([...await padSlice(tensor([1, 2]), [4], [1]).data()], [0, 1, 2, 0]);
 * ```
 */
export function padSlice(x: Tensor, shape: readonly number[], begin: readonly number[]): Tensor {
  checkTensor(x, "x");
  // Without this check the strided copy silently drops (or misplaces) out-of-range elements.
  if (
    shape.length !== x.rank || begin.length !== x.rank ||
    x.shape.some((d, i) =>
      !Number.isInteger(begin[i]) || !Number.isInteger(shape[i]) || begin[i]! < 0 ||
      begin[i]! + d > shape[i]!
    )
  ) {
    throw new RangeError(
      `Cannot place a tensor of shape ${fmtShape(x.shape)} at offset [${begin.join(", ")}] ` +
        `in a tensor of shape ${fmtShape(shape)}`,
    );
  }
  const be = x.backend;
  const dst = be.fill(sizeOf(shape), 0);
  const st = stridesOf(shape);
  be.copyInto(
    dst,
    { shape: x.shape, strides: st, offset: begin.reduce((a, b, i) => a + b * st[i]!, 0) },
    x.storage,
    { shape: x.shape, strides: stridesOf(x.shape), offset: 0 },
  );
  const out = Tensor._fromStorage(dst, shape, be);
  const sz = x.shape;
  attachRules(out, [x], {
    vjp: (g) => [slice(g, begin, sz)],
    jvp: ([t]) => padSlice(t!, shape, begin),
  });
  return out;
}

/**
 * Join tensors along an existing axis.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { concat, tensor } from "../mod.ts";
 * assert.deepEqual([...await concat([tensor([1]), tensor([2, 3])], 0).data()], [1, 2, 3]);
 * assert.deepEqual(await concat([tensor([[1]]), tensor([[2, 3]])], 1).array(), [[1, 2, 3]]);
 * ```
 */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new RangeError("concat() needs at least one tensor");
  xs.forEach((x, i) => checkTensor(x, `tensors[${i}]`));
  const be = backendOf(xs);
  const ax = normAxis(axis, xs[0]!.rank, xs[0]!.shape);
  const base = xs[0]!.shape;
  for (const x of xs) {
    if (x.rank !== base.length || x.shape.some((d, i) => i !== ax && d !== base[i])) {
      throw new RangeError(
        `Cannot concat tensors of shapes ${xs.map((t) => fmtShape(t.shape)).join(", ")} ` +
          `along axis ${axis}`,
      );
    }
  }
  if (xs.length === 1) return xs[0]!;
  const shape = [...base];
  shape[ax] = xs.reduce((a, x) => a + x.shape[ax]!, 0);
  const dst = be.alloc(sizeOf(shape));
  const st = stridesOf(shape);
  let off = 0;
  const offsets: number[] = [];
  for (const x of xs) {
    offsets.push(off);
    if (x.size > 0) {
      be.copyInto(dst, { shape: x.shape, strides: st, offset: off * st[ax]! }, x.storage, {
        shape: x.shape,
        strides: stridesOf(x.shape),
        offset: 0,
      });
    }
    off += x.shape[ax]!;
  }
  const out = Tensor._fromStorage(dst, shape, be);
  attachRules(out, xs, {
    vjp: (g, need) =>
      xs.map((x, i) => {
        if (need[i] === false) return null;
        const b = new Array<number>(shape.length).fill(0);
        b[ax] = offsets[i]!;
        return slice(g, b, x.shape);
      }),
    jvp: (ts) => concat(ts.map((t, i) => t ?? zerosOn(be, xs[i]!.shape)), ax),
  });
  return out;
}

// ---------------------------------------------------------------- gather / scatter

/**
 * Select entries along `axis` by integer indices (a 1-D tensor of f32 integers).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gather, tensor } from "../mod.ts";
 * const y = gather(tensor([10, 20, 30]), tensor([2, 0]), 0);
 * assert.deepEqual([...await y.data()], [30, 10]);
 * ```
 */
export function gather(x: Tensor, indices: Tensor, axis = 0): Tensor {
  checkTensor(x, "x");
  checkTensor(indices, "indices");
  const be = backendOf([x, indices]);
  const ax = normAxis(axis, x.rank, x.shape);
  if (indices.rank !== 1) {
    throw new RangeError(`Expected indices to be 1-D but found shape ${fmtShape(indices.shape)}`);
  }
  const shape = [...x.shape];
  shape[ax] = indices.size;
  const s = be.gather(x.storage, x.shape, ax, indices.storage);
  const dim = x.shape[ax]!;
  return applyPrim([x, indices], s, shape, be, {
    vjp: (g) => [scatterAdd(g, indices, ax, dim), null],
    jvp: ([t]) => (t ? gather(t, indices, ax) : null),
  });
}

/**
 * Sum slices of `src` into a zero tensor whose `axis` has `dimSize` entries, at `indices`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { scatterAdd, tensor } from "../mod.ts";
 * // out[idx[i]] += src[i]: out[0] = 1 + 2, out[2] = 3
 * const y = scatterAdd(tensor([1, 2, 3]), tensor([0, 0, 2]), 0, 3);
 * assert.deepEqual([...await y.data()], [3, 0, 3]);
 * ```
 */
export function scatterAdd(src: Tensor, indices: Tensor, axis: number, dimSize: number): Tensor {
  checkTensor(src, "src");
  const be = backendOf([src, indices]);
  const ax = normAxis(axis, src.rank, src.shape);
  if (indices.rank !== 1 || indices.size !== src.shape[ax]) {
    throw new RangeError(
      `Expected indices of shape [${src.shape[ax]}] for src of shape ${
        fmtShape(src.shape)
      } along axis ${ax} but found ${fmtShape(indices.shape)}`,
    );
  }
  const shape = [...src.shape];
  shape[ax] = dimSize;
  const s = be.scatterAdd(src.storage, src.shape, ax, indices.storage, dimSize);
  return applyPrim([src, indices], s, shape, be, {
    vjp: (g) => [gather(g, indices, ax), null],
    jvp: ([t]) => (t ? scatterAdd(t, indices, ax, dimSize) : null),
  });
}

// ---------------------------------------------------------------- reductions

/**
 * Reduce over axes (all by default), keeping them as size-1 axes when `keepdims`.
 * `argmax`/`argmin` need exactly one axis (or a 1-D input) and are not differentiable.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { reduce, tensor } from "../mod.ts";
 * const y = reduce("max", tensor([1, 5, 2, 4], [2, 2]), [1]);
 * assert.deepEqual([...await y.data()], [5, 4]);
 * ```
 */
export function reduce(
  op: ReduceOp,
  x: Tensor,
  axes?: number | readonly number[],
  keepdims = false,
): Tensor {
  checkTensor(x, "x");
  const ax = normAxes(axes, x.shape);
  const be = x.backend;
  const keptShape = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const outShape = keepdims ? keptShape : x.shape.filter((_, i) => !ax.includes(i));
  if ((op === "max" || op === "min") && ax.some((a) => x.shape[a] === 0)) {
    throw new RangeError(`Cannot take the ${op} over an empty axis of shape ${fmtShape(x.shape)}`);
  }
  const s = be.reduce(op, x.storage, x.shape, ax);
  if (op === "argmax" || op === "argmin") {
    return applyPrim([x], s, outShape, be, { vjp: () => [null], jvp: () => null });
  }
  if (op === "sum") {
    return applyPrim([x], s, outShape, be, {
      vjp: (g) => [broadcastTo(reshape(g, keptShape), x.shape)],
      jvp: ([t]) => reduce("sum", t!, ax, keepdims),
    });
  }
  // max/min: the gradient is shared evenly among ties (like torch.amax).
  // Output and tieWeights exist before attachRules, which runs the jvp rule right away.
  const out = Tensor._fromStorage(s, outShape, be);
  const tieWeights = () => {
    const mask = binary("eq", x, reshape(out, keptShape));
    return binary("div", mask, reduce("sum", mask, ax, true));
  };
  attachRules(out, [x], {
    vjp: (g) => {
      const w = tieWeights();
      return [binary("mul", w, reshape(g, keptShape))];
    },
    jvp: ([t]) => reduce("sum", binary("mul", t!, tieWeights()), ax, keepdims),
  });
  return out;
}

// ---------------------------------------------------------------- matmul

/**
 * Matrix product with NumPy semantics: 1-D operands are promoted, batch axes broadcast.
 * `transA`/`transB` multiply by the transpose of the last two axes without a copy.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { matmul, tensor } from "../mod.ts";
 * const a = tensor([1, 2, 3, 4], [2, 2]);
 * assert.deepEqual([...await matmul(a, tensor([1, 0, 0, 1], [2, 2])).data()], [1, 2, 3, 4]);
 * // [[1, 2], [3, 4]]·[[5], [6]] = [[1·5 + 2·6], [3·5 + 4·6]]
 * assert.deepEqual([...await matmul(a, tensor([5, 6], [2, 1])).data()], [17, 39]);
 * ```
 */
export function matmul(
  a: Tensor,
  b: Tensor,
  opts: { transA?: boolean; transB?: boolean } = {},
): Tensor {
  checkTensor(a, "a");
  checkTensor(b, "b");
  const transA = opts.transA ?? false, transB = opts.transB ?? false;
  if (a.rank === 0 || b.rank === 0) {
    throw new RangeError(
      `Cannot matmul tensors: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} need rank >= 1`,
    );
  }
  // Check alignment on the caller's shapes, before 1-D operands are promoted to matrices.
  const kA = a.rank === 1 ? a.shape[0]! : a.shape[a.rank - (transA ? 2 : 1)]!;
  const kB = b.rank === 1 ? b.shape[0]! : b.shape[b.rank - (transB ? 1 : 2)]!;
  if (kA !== kB) {
    throw new RangeError(
      `Cannot matmul tensors: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} do not align` +
        (transA || transB ? ` (transA=${transA}, transB=${transB})` : ""),
    );
  }
  // tidy: the promoted views would otherwise pin the operands' storage after they are freed.
  if (a.rank === 1) {
    return tidy(() => {
      const r = matmul(reshape(a, [1, a.size]), b, { transB });
      // The promoted row axis is second to last, or last when b is 1-D too (a dot product).
      const row = b.rank === 1 ? r.rank - 1 : r.rank - 2;
      return reshape(r, r.shape.filter((_, i) => i !== row));
    });
  }
  if (b.rank === 1) {
    return tidy(() => {
      const r = matmul(a, reshape(b, [b.size, 1]), { transA });
      return reshape(r, r.shape.slice(0, -1));
    });
  }
  const be = backendOf([a, b]);
  const m = transA ? a.shape[a.rank - 1]! : a.shape[a.rank - 2]!;
  const ka = transA ? a.shape[a.rank - 2]! : a.shape[a.rank - 1]!;
  const kb = transB ? b.shape[b.rank - 1]! : b.shape[b.rank - 2]!;
  const n = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
  if (ka !== kb) {
    throw new RangeError(
      `Cannot matmul tensors: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} do not align` +
        (transA || transB ? ` (transA=${transA}, transB=${transB})` : ""),
    );
  }
  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2);
  const batchShape = broadcastShapes(aBatch, bBatch, "matmul");
  const batch = sizeOf(batchShape);
  // Operands whose batch axes are not the full broadcast shape nor all ones are expanded.
  const prep = (x: Tensor, xb: readonly number[]): [Tensor, number] => {
    const inner = x.shape.slice(-2);
    if (sizeOf(xb) === 1) return [x, 0];
    if (shapesEqual(broadcastShapes(xb, [], ""), batchShape) || sizeOf(xb) === batch) {
      return [x, inner[0]! * inner[1]!];
    }
    return [broadcastTo(x, [...batchShape, ...inner]), inner[0]! * inner[1]!];
  };
  const [a2, aStride] = prep(a, aBatch);
  const [b2, bStride] = prep(b, bBatch);
  // A batch of A's against one B ([B, N, k]·[k, n]: a linear layer's dz·W over tokens) is one
  // [B·N, k]·[k, n] product with the same memory layout. As a batch of B products of N rows,
  // 49-token DiT blocks ran in 49-row pieces: 2–3× the CPU time on lavapipe.
  const flat = !transA && bStride === 0 && aStride !== 0 && batch > 1;
  const s = be.matmul(a2.storage, b2.storage, {
    batch: flat ? 1 : batch,
    m: flat ? batch * m : m,
    n,
    k: ka,
    transA,
    transB,
    aBatchStride: flat ? 0 : aStride,
    bBatchStride: bStride,
  });
  const shape = [...batchShape, m, n];
  return applyPrim([a, b], s, shape, be, {
    vjp: (g, need) => {
      // C = op(A) op(B): dA = g op(B)^T (transposed back if transA), dB likewise.
      const ga = need[0] === false
        ? null
        : transA
        ? matmul(b, g, { transA: transB, transB: true })
        : matmul(g, b, { transB: !transB });
      const gb = need[1] === false
        ? null
        : transB
        ? matmul(g, a, { transA: true, transB: transA })
        : matmul(a, g, { transA: !transA });
      return [ga && sumTo(ga, a.shape), gb && sumTo(gb, b.shape)];
    },
    jvp: ([ta, tb]) => {
      const p = ta ? matmul(ta, b, { transA, transB }) : null;
      const q = tb ? matmul(a, tb, { transA, transB }) : null;
      return p && q ? binary("add", p, q) : (p ?? q);
    },
  });
}

// ---------------------------------------------------------------- gradient plumbing

/**
 * A copy of `x` that gradients do not flow through (shares storage).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { grad, stopGradient, type Tensor, tensor } from "../mod.ts";
 * // d/dx Σ sg(x)·x = sg(x) = x (without the stop it would be 2x).
 * const g = grad((x: Tensor) => stopGradient(x).mul(x).sum())(tensor([1, 2]));
 * assert.deepEqual([...await g.data()], [1, 2]);
 * ```
 */
export function stopGradient(x: Tensor): Tensor {
  checkTensor(x, "x");
  return x._share(x.shape);
}

/** @internal Identity with rules (used to attach jvp tangents to primals). */
export function identity(x: Tensor): Tensor {
  const out = x._share(x.shape);
  attachRules(out, [x], { vjp: (g) => [g], jvp: ([t]) => t });
  return out;
}

// ---------------------------------------------------------------- arithmetic with scalars
// (here rather than in lib/ops so that Tensor methods can call them)

function scalarOn(be: Backend, v: number): Tensor {
  return Tensor._fromStorage(be.fill(1, v), [], be);
}

/**
 * a + b with broadcasting; either may be a number.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { add, tensor } from "../mod.ts";
 * assert.deepEqual([...await add(tensor([1, 2]), 1).data()], [2, 3]);
 * ```
 */
export function add(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number") [a, b] = [b as Tensor, a];
  if (typeof b === "number") return unary("affine", a as Tensor, 1, b);
  return binary("add", a as Tensor, b);
}

/**
 * a − b with broadcasting; either may be a number.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sub, tensor } from "../mod.ts";
 * assert.deepEqual([...await sub(1, tensor([1, 2])).data()], [0, -1]);
 * ```
 */
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number") {
    if (typeof b === "number") throw new TypeError("sub() needs at least one Tensor");
    return unary("affine", b, -1, a);
  }
  if (typeof b === "number") return unary("affine", a, 1, -b);
  return binary("sub", a, b);
}

/**
 * a · b with broadcasting; either may be a number.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { mul, tensor } from "../mod.ts";
 * assert.deepEqual([...await mul(tensor([1, 2]), 3).data()], [3, 6]);
 * ```
 */
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number") [a, b] = [b as Tensor, a];
  if (typeof b === "number") return unary("affine", a as Tensor, b, 0);
  return binary("mul", a as Tensor, b);
}

/**
 * a / b with broadcasting; either may be a number.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { div, tensor } from "../mod.ts";
 * assert.deepEqual([...await div(tensor([1, 2]), 2).data()], [0.5, 1]);
 * ```
 */
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  return tidy(() => {
    if (typeof a === "number") {
      if (typeof b === "number") throw new TypeError("div() needs at least one Tensor");
      return unary("affine", unary("reciprocal", b), a, 0);
    }
    if (typeof b === "number") return binary("div", a, scalarOn(a.backend, b));
    return binary("div", a, b);
  });
}

/**
 * a ** b with broadcasting (integer powers of negative bases are defined).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pow, tensor } from "../mod.ts";
 * assert.deepEqual([...await pow(tensor([-2, 3]), 2).data()], [4, 9]);
 * ```
 */
export function pow(a: Tensor | number, b: Tensor | number): Tensor {
  return tidy(() => {
    if (typeof a === "number") {
      if (typeof b === "number") throw new TypeError("pow() needs at least one Tensor");
      return binary("pow", scalarOn(b.backend, a), b);
    }
    if (typeof b === "number") {
      if (b === 1) return unary("copy", a);
      if (b === 2) return unary("square", a);
      return unary("powScalar", a, b);
    }
    return binary("pow", a, b);
  });
}

/**
 * Elementwise maximum.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { maximum, tensor } from "../mod.ts";
 * assert.deepEqual([...await maximum(tensor([1, 5]), 3).data()], [3, 5]);
 * assert.ok(Number.isNaN((await maximum(tensor([NaN]), 3).data())[0])); // NaN propagates
 * ```
 */
export function maximum(a: Tensor, b: Tensor | number): Tensor {
  return tidy(() => {
    if (typeof b === "number") return binary("maximum", a, scalarOn(a.backend, b));
    return binary("maximum", a, b);
  });
}

/**
 * Elementwise minimum.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { minimum, tensor } from "../mod.ts";
 * assert.deepEqual([...await minimum(tensor([1, 5]), 3).data()], [1, 3]);
 * ```
 */
export function minimum(a: Tensor, b: Tensor | number): Tensor {
  return tidy(() => {
    if (typeof b === "number") return binary("minimum", a, scalarOn(a.backend, b));
    return binary("minimum", a, b);
  });
}

/**
 * Mean over axes (all by default).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { mean, tensor } from "../mod.ts";
 * assert.equal(await mean(tensor([1, 2, 3])).item(), 2);
 * assert.deepEqual([...await mean(tensor([[1, 2], [3, 6]]), 1).data()], [1.5, 4.5]);
 * ```
 */
export function mean(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  return tidy(() => {
    const ax = normAxes(axes, x.shape);
    const n = ax.reduce((a, i) => a * x.shape[i]!, 1);
    return unary("affine", reduce("sum", x, ax, keepdims), 1 / n, 0);
  });
}
