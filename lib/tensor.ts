/**
 * @file The Tensor class, lifetimes (dispose, `using`, scopes), and `applyPrim`, the single
 * door every primitive op goes through: it allocates the output and records what reverse
 * mode (tapes) and forward mode (tangents) need, so autodiff rules attach per primitive.
 *
 * Tensor methods delegate to an op table that `lib/ops` registers at import time; this keeps
 * value imports flowing one way (ops -> tensor) while `x.add(y)` still reads naturally.
 * @module
 */
import type { Backend, Storage } from "./backend/backend.ts";
import { getBackend } from "./backend/select.ts";
import { fmtShape } from "./_util.ts";

class Buf {
  refs = 1;
  constructor(public storage: Storage, public backend: Backend) {}
}

let nextId = 1;

/**
 * A vjp rule: cotangent of the output -> cotangents of the inputs (null = no gradient).
 * `need[i]` says whether input i is differentiated at all; rules skip the work for the others
 * (e.g. a network's input batch, or constants fed to a matmul).
 */
export type VjpRule = (g: Tensor, need: readonly boolean[]) => (Tensor | null)[];
/** A jvp rule: tangents of the inputs (null = zero) -> tangent of the output. */
export type JvpRule = (tangents: (Tensor | null)[]) => Tensor | null;

interface TapeNode {
  out: Tensor;
  inputs: Tensor[];
  vjp: VjpRule;
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
 * import { tensor } from "../mod.ts";
 * const x = tensor([1, 2, 3, 4], [2, 2]);
 * const y = x.add(1).mul(x);
 * console.log(await y.data()); // Float32Array [2, 6, 12, 20]
 * y.dispose();
 * x.dispose();
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
    if (!b.backend.readSync) {
      throw new Error("dataSync() is only available on the CPU backend; use await t.data()");
    }
    return b.backend.readSync(b.storage);
  }

  /** Human-readable summary. */
  toString(): string {
    return `Tensor(${fmtShape(this.shape)}, ${this.isDisposed ? "disposed" : this.backend.name})`;
  }

  // ---- methods delegating to lib/ops ----
  /** Elementwise a + b (broadcasting). */
  add(b: Tensor | number): Tensor {
    return ops().add(this, b);
  }
  /** Elementwise a − b. */
  sub(b: Tensor | number): Tensor {
    return ops().sub(this, b);
  }
  /** Elementwise a · b. */
  mul(b: Tensor | number): Tensor {
    return ops().mul(this, b);
  }
  /** Elementwise a / b. */
  div(b: Tensor | number): Tensor {
    return ops().div(this, b);
  }
  /** Elementwise a ** b. */
  pow(b: Tensor | number): Tensor {
    return ops().pow(this, b);
  }
  /** Elementwise maximum. */
  maximum(b: Tensor | number): Tensor {
    return ops().maximum(this, b);
  }
  /** Elementwise minimum. */
  minimum(b: Tensor | number): Tensor {
    return ops().minimum(this, b);
  }
  /** −x. */
  neg(): Tensor {
    return ops().neg(this);
  }
  /** eˣ. */
  exp(): Tensor {
    return ops().exp(this);
  }
  /** ln x. */
  log(): Tensor {
    return ops().log(this);
  }
  /** √x. */
  sqrt(): Tensor {
    return ops().sqrt(this);
  }
  /** x². */
  square(): Tensor {
    return ops().square(this);
  }
  /** |x|. */
  abs(): Tensor {
    return ops().abs(this);
  }
  /** tanh x. */
  tanh(): Tensor {
    return ops().tanh(this);
  }
  /** 1 / (1 + e⁻ˣ). */
  sigmoid(): Tensor {
    return ops().sigmoid(this);
  }
  /** max(x, 0). */
  relu(): Tensor {
    return ops().relu(this);
  }
  /** Sum over axes (all by default). */
  sum(axes?: number | readonly number[], keepdims = false): Tensor {
    return ops().sum(this, axes, keepdims);
  }
  /** Mean over axes (all by default). */
  mean(axes?: number | readonly number[], keepdims = false): Tensor {
    return ops().mean(this, axes, keepdims);
  }
  /** Maximum over axes. */
  max(axes?: number | readonly number[], keepdims = false): Tensor {
    return ops().max(this, axes, keepdims);
  }
  /** Minimum over axes. */
  min(axes?: number | readonly number[], keepdims = false): Tensor {
    return ops().min(this, axes, keepdims);
  }
  /** Matrix product (batched, broadcasting batch axes). */
  matmul(b: Tensor): Tensor {
    return ops().matmul(this, b);
  }
  /** Same elements, new shape (one axis may be −1). */
  reshape(shape: readonly number[]): Tensor {
    return ops().reshape(this, shape);
  }
  /** Permute axes (reverses them by default). */
  transpose(perm?: readonly number[]): Tensor {
    return ops().transpose(this, perm);
  }
  /** A copy that is cut off from gradients. */
  detach(): Tensor {
    return ops().stopGradient(this);
  }
}

/** The functions `lib/ops` registers for Tensor methods. */
export interface TensorMethodOps {
  add(a: Tensor, b: Tensor | number): Tensor;
  sub(a: Tensor, b: Tensor | number): Tensor;
  mul(a: Tensor, b: Tensor | number): Tensor;
  div(a: Tensor, b: Tensor | number): Tensor;
  pow(a: Tensor, b: Tensor | number): Tensor;
  maximum(a: Tensor, b: Tensor | number): Tensor;
  minimum(a: Tensor, b: Tensor | number): Tensor;
  neg(a: Tensor): Tensor;
  exp(a: Tensor): Tensor;
  log(a: Tensor): Tensor;
  sqrt(a: Tensor): Tensor;
  square(a: Tensor): Tensor;
  abs(a: Tensor): Tensor;
  tanh(a: Tensor): Tensor;
  sigmoid(a: Tensor): Tensor;
  relu(a: Tensor): Tensor;
  sum(a: Tensor, axes?: number | readonly number[], keepdims?: boolean): Tensor;
  mean(a: Tensor, axes?: number | readonly number[], keepdims?: boolean): Tensor;
  max(a: Tensor, axes?: number | readonly number[], keepdims?: boolean): Tensor;
  min(a: Tensor, axes?: number | readonly number[], keepdims?: boolean): Tensor;
  matmul(a: Tensor, b: Tensor): Tensor;
  reshape(a: Tensor, shape: readonly number[]): Tensor;
  transpose(a: Tensor, perm?: readonly number[]): Tensor;
  stopGradient(a: Tensor): Tensor;
}

let registered: TensorMethodOps | undefined;

/** @internal Called once by lib/ops. */
export function registerTensorOps(o: TensorMethodOps): void {
  registered = o;
}

function ops(): TensorMethodOps {
  if (!registered) throw new Error("flowgpu ops are not loaded: import mod.ts");
  return registered;
}

/** Autodiff rules of one primitive application. */
export interface PrimRules {
  vjp?: VjpRule;
  jvp?: JvpRule;
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
        tape.nodes.push({ out, inputs: [...inputs], vjp: rules.vjp });
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
 * import { tensor, treeLeaves } from "../mod.ts";
 * const leaves = treeLeaves({ a: tensor([1]), b: [tensor([2])] });
 * if (leaves.length !== 2) throw new Error("bad");
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
 * import { tensor, treeMap } from "../mod.ts";
 * const t = treeMap({ a: tensor([1]) }, (x) => x.mul(2));
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
 * import { tensor, tidy } from "../mod.ts";
 * const x = tensor([1, 2]);
 * const y = tidy(() => x.mul(2).add(1)); // the intermediate x*2 is freed
 * console.log(await y.data());
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
 * import { keep, tensor, tidy } from "../mod.ts";
 * let k;
 * tidy(() => { k = keep(tensor([1])); });
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
