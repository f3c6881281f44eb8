/**
 * @file The CPU backend: plain TypeScript loops. It is the living specification every
 * WebGPU kernel is tested against, and the fallback when no adapter exists.
 * @module
 */
import type {
  Backend,
  ElementwiseGroup,
  MatmulEpilogue,
  MatmulOutputs,
  Storage,
  View,
} from "./backend.ts";
import { matmulBiasGradByParts, matmulOutputsByParts } from "./backend.ts";
import { binaryRow, type Expr, type MatmulGeom, type ReduceOp, unaryRow } from "../ir.ts";
import { type RandomKind, type RandomState, randomStream } from "../philox.ts";
import { stridesOf } from "../shape.ts";

/** CPU storage: a Float32Array. */
export class CpuStorage implements Storage {
  /** The elements. */
  data: Float32Array;
  /** Wrap a Float32Array. */
  constructor(data: Float32Array) {
    this.data = data;
  }
  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }
}

function d(s: Storage): Float32Array {
  return (s as CpuStorage).data;
}

/**
 * Iterate a row-major index over `shape`, calling `f(i, offs)` with the offset of element `i`
 * under each of `strides`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { forStrided } from "./cpu.ts";
 * const seen: number[] = [];
 * forStrided([2, 2], [[1, 2]], (_i, offs) => seen.push(offs[0]!)); // a transposed view
 * assert.deepEqual(seen, [0, 2, 1, 3]);
 * ```
 */
export function forStrided(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
  f: (i: number, offs: number[]) => void,
): void {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n === 0) return;
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  const offs = strides.map(() => 0);
  for (let i = 0; i < n; i++) {
    f(i, offs);
    for (let ax = rank - 1; ax >= 0; ax--) {
      idx[ax]!++;
      for (let s = 0; s < strides.length; s++) offs[s]! += strides[s]![ax]!;
      if (idx[ax]! < shape[ax]!) break;
      for (let s = 0; s < strides.length; s++) offs[s]! -= strides[s]![ax]! * shape[ax]!;
      idx[ax] = 0;
    }
  }
}

/**
 * The CPU backend.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CpuBackend } from "./cpu.ts";
 * const be = new CpuBackend();
 * const s = be.upload(new Float32Array([1, 2]));
 * const [y] = be.elementwise(
 *   [{ kind: "unary", op: "exp", x: { kind: "input", index: 0 }, p0: 0, p1: 0 }],
 *   [s],
 *   [[1]],
 *   [2],
 * );
 * const out = await be.read(y!);
 * assert.equal(out[0], Math.fround(Math.E));
 * assert.equal(out[1], Math.fround(Math.E * Math.E));
 * ```
 */
export class CpuBackend implements Backend {
  /** "cpu" (the `wasm` backend, a subclass, says "wasm"). */
  readonly name: "cpu" | "wasm" = "cpu";
  /** Human-readable description. */
  readonly description: string = "cpu (TypeScript reference loops)";
  #live = 0;
  // Storages dropped without free() are reclaimed by the GC, but still count in liveBytes():
  // they were leaks, and a counter the collector changes at random moments would make
  // "returns to baseline" checks flaky.
  #registry = new FinalizationRegistry<number>(() => {});
  #tokens = new WeakMap<Storage, object>();

  /** Wrap a fresh array as a storage (counted in `liveBytes` until freed). */
  protected wrap(data: Float32Array): CpuStorage {
    const s = new CpuStorage(data);
    this.#live += data.byteLength;
    const token = {};
    this.#tokens.set(s, token);
    this.#registry.register(s, data.byteLength, token);
    return s;
  }
  upload(data: Float32Array): Storage {
    return this.wrap(new Float32Array(data));
  }
  read(s: Storage): Promise<Float32Array> {
    return Promise.resolve(new Float32Array(d(s)));
  }
  readSync(s: Storage): Float32Array {
    return new Float32Array(d(s));
  }
  alloc(size: number): Storage {
    return this.wrap(new Float32Array(size));
  }
  free(s: Storage): void {
    const token = this.#tokens.get(s);
    if (!token) return;
    this.#tokens.delete(s);
    this.#registry.unregister(token);
    this.#live -= d(s).byteLength;
    (s as CpuStorage).data = new Float32Array(0);
  }
  liveBytes(): number {
    return this.#live;
  }
  flush(): void {}
  sync(): Promise<void> {
    return Promise.resolve();
  }
  fill(size: number, value: number): Storage {
    return this.wrap(new Float32Array(size).fill(value));
  }
  iota(size: number, start: number, step: number): Storage {
    const o = new Float32Array(size);
    for (let i = 0; i < size; i++) o[i] = start + i * step;
    return this.wrap(o);
  }
  reduce(op: ReduceOp, x: Storage, shape: readonly number[], axes: readonly number[]): Storage {
    const xs = d(x);
    const st = stridesOf(shape);
    const keptShape = shape.map((n, i) => (axes.includes(i) ? 1 : n));
    const outSize = keptShape.reduce((p, q) => p * q, 1);
    const redShape = axes.map((a) => shape[a]!);
    const redStrides = axes.map((a) => st[a]!);
    const keptStrides = st.map((s, i) => (axes.includes(i) ? 0 : s));
    const o = new Float32Array(outSize);
    const redN = redShape.reduce((p, q) => p * q, 1);
    forStrided(keptShape, [keptStrides], (i, offs) => {
      const base = offs[0]!;
      let acc = op === "sum" ? 0 : op === "max" || op === "argmax" ? -Infinity : Infinity;
      let arg = 0;
      if (op === "sum") {
        forStrided(redShape, [redStrides], (_j, ro) => {
          acc += xs[base + ro[0]!]!;
        });
        o[i] = acc;
        return;
      }
      let first = true;
      forStrided(redShape, [redStrides], (j, ro) => {
        const v = xs[base + ro[0]!]!;
        const better = op === "max" || op === "argmax" ? v > acc : v < acc;
        // NaN propagates for max/min, like torch.
        if (first || better || (Number.isNaN(v) && !Number.isNaN(acc))) {
          acc = v;
          arg = j;
          first = false;
        }
      });
      o[i] = op === "argmax" || op === "argmin" ? arg : redN === 0 ? NaN : acc;
    });
    return this.wrap(o);
  }
  matmul(a: Storage, b: Storage, g: MatmulGeom, epilogue?: MatmulEpilogue): Storage {
    const as = d(a), bs = d(b);
    const { batch, m, n, k } = g;
    const o = new Float32Array(batch * m * n);
    const row = new Float64Array(n);
    for (let bi = 0; bi < batch; bi++) {
      const ao = bi * g.aBatchStride, bo = bi * g.bBatchStride;
      for (let i = 0; i < m; i++) {
        row.fill(0);
        for (let p = 0; p < k; p++) {
          const av = g.transA ? as[ao + p * m + i]! : as[ao + i * k + p]!;
          if (av === 0) continue;
          if (g.transB) { for (let j = 0; j < n; j++) row[j]! += av * bs[bo + j * k + p]!; }
          else {
            const bb = bo + p * n;
            for (let j = 0; j < n; j++) row[j]! += av * bs[bb + j]!;
          }
        }
        o.set(row, bi * m * n + i * n);
      }
    }
    const acc = this.wrap(o);
    if (!epilogue) return acc;
    // The epilogue as an elementwise pass over [batch·m, n]: the same f32 steps (round the
    // product, then each node) as the kernel's store-time evaluation.
    const rows = batch * m;
    const [out] = this.elementwise(
      [epilogue.expr],
      [acc, ...epilogue.rows],
      [[n, 1], ...epilogue.rows.map(() => [0, 1])],
      [rows, n],
    );
    this.free(acc);
    return out!;
  }
  matmulBiasGrad(a: Storage, b: Storage, m: number, n: number, k: number): [Storage, Storage] {
    return matmulBiasGradByParts(this, a, b, m, n, k);
  }
  matmulOutputs(a: Storage, b: Storage, g: MatmulGeom, outputs: MatmulOutputs): Storage[] {
    // The product, then one elementwise pass over it (the same f32 steps as matmul's epilogue).
    return matmulOutputsByParts(this, a, b, g, outputs);
  }
  copyInto(dst: Storage, dstView: View, src: Storage, srcView: View): void {
    const ds = d(dst), ss = d(src);
    forStrided(srcView.shape, [dstView.strides, srcView.strides], (_i, offs) => {
      ds[dstView.offset + offs[0]!] = ss[srcView.offset + offs[1]!]!;
    });
  }
  gather(x: Storage, shape: readonly number[], axis: number, idx: Storage): Storage {
    const xs = d(x), is = d(idx);
    const outer = shape.slice(0, axis).reduce((p, q) => p * q, 1);
    const inner = shape.slice(axis + 1).reduce((p, q) => p * q, 1);
    const dim = shape[axis]!;
    const n = is.length;
    const o = new Float32Array(outer * n * inner);
    for (let a = 0; a < outer; a++) {
      for (let j = 0; j < n; j++) {
        const r = is[j]!;
        if (!(r >= 0 && r < dim && Number.isInteger(r))) {
          throw new RangeError(`Index ${r} is out of range for an axis of size ${dim}`);
        }
        const src = (a * dim + r) * inner, dstOff = (a * n + j) * inner;
        for (let c = 0; c < inner; c++) o[dstOff + c] = xs[src + c]!;
      }
    }
    return this.wrap(o);
  }
  scatterAdd(
    src: Storage,
    srcShape: readonly number[],
    axis: number,
    idx: Storage,
    dimSize: number,
  ): Storage {
    const ss = d(src), is = d(idx);
    const outer = srcShape.slice(0, axis).reduce((p, q) => p * q, 1);
    const inner = srcShape.slice(axis + 1).reduce((p, q) => p * q, 1);
    const n = srcShape[axis]!;
    const o = new Float32Array(outer * dimSize * inner);
    for (let a = 0; a < outer; a++) {
      for (let j = 0; j < n; j++) {
        const r = is[j]!;
        if (!(r >= 0 && r < dimSize && Number.isInteger(r))) {
          throw new RangeError(`Index ${r} is out of range for an axis of size ${dimSize}`);
        }
        const so = (a * n + j) * inner, dOff = (a * dimSize + r) * inner;
        for (let c = 0; c < inner; c++) o[dOff + c]! += ss[so + c]!;
      }
    }
    return this.wrap(o);
  }
  elementwiseGroups(
    outputs: readonly Expr[],
    groups: readonly ElementwiseGroup[],
    scalars: readonly Storage[],
    inPlace?: readonly number[],
  ): Storage[][] {
    // Plain loops: the node-by-node evaluator per group, scalars broadcast by stride 0.
    return groups.map((g) => {
      const outs = this.elementwise(
        outputs,
        [...g.inputs, ...scalars],
        [...g.inputs.map(() => [1]), ...scalars.map(() => [0])],
        [g.size],
      );
      return outs.map((o, t) => {
        const into = inPlace?.[t] ?? -1;
        if (into < 0) return o;
        const dst = g.inputs[into]!;
        d(dst).set(d(o));
        this.free(o);
        return dst;
      });
    });
  }
  elementwise(
    outputs: readonly Expr[],
    inputs: readonly Storage[],
    inputStrides: readonly (readonly number[])[],
    outShape: readonly number[],
  ): Storage[] {
    // Evaluate node by node over whole arrays (each node's array is f32, like a kernel's
    // registers): far faster in JS than a per-element closure walk.
    const n = outShape.reduce((a, b) => a * b, 1);
    const dense = stridesOf(outShape);
    const ins = inputs.map((s, j) => {
      const src = d(s);
      const full = inputStrides[j]!;
      // A contiguous input is read in place (size-1 axes may carry any stride).
      if (src.length === n && full.every((st, ax) => st === dense[ax] || outShape[ax] === 1)) {
        return src;
      }
      const o = new Float32Array(n);
      forStrided(outShape, [full], (i, offs) => (o[i] = src[offs[0]!]!));
      return o;
    });
    const memo = new Map<Expr, Float32Array>();
    const ev = (e: Expr): Float32Array => {
      const have = memo.get(e);
      if (have) return have;
      let r: Float32Array;
      if (e.kind === "input") r = ins[e.index]!;
      else if (e.kind === "const") r = new Float32Array(n).fill(e.value);
      else if (e.kind === "unary") {
        const x = ev(e.x), f = unaryRow(e.op).cpu;
        const p0 = Math.fround(e.p0), p1 = Math.fround(e.p1);
        r = new Float32Array(n);
        for (let i = 0; i < n; i++) r[i] = f(x[i]!, p0, p1);
      } else if (e.kind === "binary") {
        const a = ev(e.a), b = ev(e.b), f = binaryRow(e.op).cpu;
        r = new Float32Array(n);
        for (let i = 0; i < n; i++) r[i] = f(a[i]!, b[i]!);
      } else {
        const c = ev(e.c), a = ev(e.a), b = ev(e.b);
        r = new Float32Array(n);
        for (let i = 0; i < n; i++) r[i] = c[i] !== 0 ? a[i]! : b[i]!;
      }
      memo.set(e, r);
      return r;
    };
    const used = new Set<Float32Array>(inputs.map(d));
    return outputs.map((o) => {
      const r = ev(o);
      // An output that is an input's array, or another output's, gets its own copy.
      const own = used.has(r) ? new Float32Array(r) : r;
      used.add(own);
      return this.wrap(own);
    });
  }
  logSumExpAdd(
    x: Storage,
    v: Storage,
    rows: number,
    cols: number,
    axis: 0 | 1,
    scale = 1,
    shift = 0,
  ): Storage {
    const xs = d(x), vs = d(v);
    const outN = axis === 1 ? rows : cols;
    // The same online recurrence as kernels/lse.ts, in f64: state (m, s) with
    // s = Σ exp(x − m) over the terms that are not −∞, rescaled when m grows.
    const m = new Float64Array(outN).fill(-Infinity), s = new Float64Array(outN);
    const bad = new Uint8Array(outN);
    const step = (o: number, t: number) => {
      if (Number.isNaN(t)) bad[o] = 1;
      else if (t > m[o]!) {
        s[o] = (m[o] === -Infinity ? 0 : s[o]! * Math.exp(m[o]! - t)) + 1;
        m[o] = t;
      } else if (t !== -Infinity) s[o]! += Math.exp(t - m[o]!);
    };
    const f32 = new Float32Array(1);
    for (let i = 0; i < rows; i++) {
      const base = i * cols;
      for (let j = 0; j < cols; j++) {
        f32[0] = xs[base + j]! + vs[axis === 1 ? j : i]!;
        step(axis === 1 ? i : j, f32[0]!);
      }
    }
    const o = new Float32Array(outN);
    for (let k = 0; k < outN; k++) {
      const mk = m[k]!;
      const r = bad[k] ? NaN : mk === Infinity || mk === -Infinity ? mk : mk + Math.log(s[k]!);
      // f32 steps, as the kernel's epilogue: scale · f32(lse) + shift.
      o[k] = Math.fround(Math.fround(scale) * Math.fround(r)) + Math.fround(shift);
    }
    return this.wrap(o);
  }
  attention(
    qkv: Storage,
    b: number,
    n: number,
    heads: number,
    hd: number,
    scale: number,
  ): [Storage, Storage] {
    const x = d(qkv), hs = heads * hd, ts = 3 * hs;
    const o = new Float32Array(b * n * hs), lse = new Float32Array(b * heads * n);
    const s = new Float64Array(n);
    for (let bi = 0; bi < b; bi++) {
      for (let h = 0; h < heads; h++) {
        const base = bi * n * ts + h * hd;
        for (let i = 0; i < n; i++) {
          // Scores in f64 with the max subtracted before exp (the kernel's online form gives the
          // same values up to f32 rounding).
          let m = -Infinity, bad = false;
          for (let j = 0; j < n; j++) {
            let acc = 0;
            for (let c = 0; c < hd; c++) acc += x[base + i * ts + c]! * x[base + j * ts + hs + c]!;
            s[j] = scale * acc;
            if (Number.isNaN(s[j])) bad = true;
            else if (s[j]! > m) m = s[j]!;
          }
          let l = 0;
          for (let j = 0; j < n; j++) l += s[j] = Math.exp(s[j]! - m);
          const orow = (bi * n + i) * hs + h * hd;
          for (let c = 0; c < hd; c++) {
            let acc = 0;
            for (let j = 0; j < n; j++) acc += s[j]! * x[base + j * ts + 2 * hs + c]!;
            o[orow + c] = bad ? NaN : acc / l;
          }
          lse[(bi * heads + h) * n + i] = bad ? NaN : m + Math.log(l);
        }
      }
    }
    return [this.wrap(o), this.wrap(lse)];
  }
  attentionBackward(
    qkv: Storage,
    o: Storage,
    lse: Storage,
    dO: Storage,
    b: number,
    n: number,
    heads: number,
    hd: number,
    scale: number,
  ): Storage {
    const x = d(qkv), os = d(o), ls = d(lse), g = d(dO);
    const hs = heads * hd, ts = 3 * hs;
    const dx = new Float64Array(b * n * ts);
    const ds = new Float64Array(n);
    for (let bi = 0; bi < b; bi++) {
      for (let h = 0; h < heads; h++) {
        const base = bi * n * ts + h * hd;
        for (let i = 0; i < n; i++) {
          const orow = (bi * n + i) * hs + h * hd, qi = base + i * ts;
          let dd = 0; // D = dO_i · O_i
          for (let c = 0; c < hd; c++) dd += g[orow + c]! * os[orow + c]!;
          const li = ls[(bi * heads + h) * n + i]!;
          for (let j = 0; j < n; j++) {
            const kj = base + j * ts + hs;
            let s = 0, dp = 0;
            for (let c = 0; c < hd; c++) {
              s += x[qi + c]! * x[kj + c]!;
              dp += g[orow + c]! * x[kj + hs + c]!;
            }
            const p = Math.exp(scale * s - li);
            ds[j] = p * (dp - dd);
            // dV_j += P_ij dO_i
            for (let c = 0; c < hd; c++) dx[kj + hs + c]! += p * g[orow + c]!;
          }
          for (let j = 0; j < n; j++) {
            const kj = base + j * ts + hs;
            for (let c = 0; c < hd; c++) {
              dx[qi + c]! += scale * ds[j]! * x[kj + c]!; // dQ_i
              dx[kj + c]! += scale * ds[j]! * x[qi + c]!; // dK_j
            }
          }
        }
      }
    }
    return this.wrap(Float32Array.from(dx));
  }
  layerNormModulate(
    x: Storage,
    shift: Storage,
    scale: Storage,
    b: number,
    t: number,
    w: number,
    eps: number,
  ): [Storage, Storage] {
    const xs = d(x), sh = d(shift), sc = d(scale);
    const y = new Float32Array(b * t * w), st = new Float32Array(2 * b * t);
    for (let i = 0; i < b; i++) {
      const p = i * w;
      for (let j = 0; j < t; j++) {
        const row = i * t + j, o = row * w;
        // Two passes in f64 (mean, then the centred squares): no cancellation in σ².
        let s = 0;
        for (let c = 0; c < w; c++) s += xs[o + c]!;
        const mu = s / w;
        let v = 0;
        for (let c = 0; c < w; c++) v += (xs[o + c]! - mu) ** 2;
        const r = 1 / Math.sqrt(v / w + eps);
        for (let c = 0; c < w; c++) {
          y[o + c] = (xs[o + c]! - mu) * r * (1 + sc[p + c]!) + sh[p + c]!;
        }
        st[2 * row] = mu;
        st[2 * row + 1] = r;
      }
    }
    return [this.wrap(y), this.wrap(st)];
  }
  layerNormModulateBackward(
    x: Storage,
    scale: Storage,
    stats: Storage,
    dy: Storage,
    b: number,
    t: number,
    w: number,
    acc?: Storage,
  ): [Storage, Storage, Storage] {
    const xs = d(x), sc = d(scale), st = d(stats), g = d(dy), ac = acc ? d(acc) : null;
    const dx = new Float32Array(b * t * w);
    const dsh = new Float64Array(b * w), dsc = new Float64Array(b * w);
    const gs = new Float64Array(w), xh = new Float64Array(w);
    for (let i = 0; i < b; i++) {
      const p = i * w;
      for (let j = 0; j < t; j++) {
        const row = i * t + j, o = row * w;
        const mu = st[2 * row]!, r = st[2 * row + 1]!;
        let a = 0, bb = 0;
        for (let c = 0; c < w; c++) {
          xh[c] = (xs[o + c]! - mu) * r;
          gs[c] = g[o + c]! * (1 + sc[p + c]!);
          a += gs[c]!;
          bb += gs[c]! * xh[c]!;
          dsh[p + c]! += g[o + c]!;
          dsc[p + c]! += g[o + c]! * xh[c]!;
        }
        a /= w;
        bb /= w;
        for (let c = 0; c < w; c++) dx[o + c] = r * (gs[c]! - a - xh[c]! * bb);
        if (ac) { for (let c = 0; c < w; c++) dx[o + c]! += ac[o + c]!; }
      }
    }
    return [this.wrap(dx), this.wrap(Float32Array.from(dsh)), this.wrap(Float32Array.from(dsc))];
  }
  gatedResidualBackward(
    g: Storage,
    a: Storage,
    dy: Storage,
    b: number,
    t: number,
    w: number,
  ): [Storage, Storage] {
    const gs = d(g), as = d(a), ys = d(dy);
    const da = new Float32Array(b * t * w);
    // f32 products summed in f64 over the tokens in order: the bits of reduce("sum") over the
    // product an elementwise multiply writes (the unfused ops).
    const dg = new Float64Array(b * w);
    for (let i = 0; i < b; i++) {
      const p = i * w;
      for (let j = 0; j < t; j++) {
        const o = (i * t + j) * w;
        for (let c = 0; c < w; c++) {
          da[o + c] = gs[p + c]! * ys[o + c]!;
          dg[p + c]! += Math.fround(as[o + c]! * ys[o + c]!);
        }
      }
    }
    return [this.wrap(da), this.wrap(Float32Array.from(dg))];
  }
  random(kind: RandomKind, size: number, st: RandomState): Storage {
    return this.wrap(randomStream(kind, size, st));
  }
}
