/**
 * @file `logSumExpAdd` (log Σ exp(M + v) along one axis in one pass) on both backends against a
 * plain-JS f64 reference, its vjp/jvp against the composite `logSumExp(add(M, v))`, and
 * `sinkhorn` (which uses it) against a composite Sinkhorn loop.
 *
 * Tolerances: the op vs the f64 reference, |got − want| <= 2e-5 + 2e-6·|want| on the CPU and
 * 1e-4 + 2e-6·|want| on WebGPU (f32 exp/log a few ulp off plus f32 accumulation of ≤ 1000
 * terms of size ≤ 1, relative 1000·6e-8 on log s in the worst case); gradients vs the
 * composite 1e-5 + 1e-4·|want| (same softmax weights up to f32 rounding); Sinkhorn log plans
 * vs the composite loop 1e-3 + 1e-5·|want| after 30 iterations (|log π| ≲ 100 here).
 * @module
 */
import { strict as assert } from "node:assert";
import {
  add,
  type Backend,
  backendByName,
  getBackend,
  jvp,
  logSumExp,
  logSumExpAdd,
  mul,
  setBackend,
  sinkhorn,
  sub,
  sum,
  type Tensor,
  tensor,
  tidy,
  valueAndGrad,
} from "../../mod.ts";
import { Generator } from "../../lib/random.ts";
import { assertClose, HAS_WEBGPU } from "../_helpers.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";

const BACKENDS: { name: "cpu" | "webgpu"; ignore: boolean }[] = [
  { name: "cpu", ignore: false },
  { name: "webgpu", ignore: !HAS_WEBGPU },
];

/** Plain f64 reference: x = f32(M + v) (as the op rounds it), then max-shifted log Σ exp. */
function lseRef(
  m: Float32Array,
  v: Float32Array,
  rows: number,
  cols: number,
  axis: 0 | 1,
): Float64Array {
  const outN = axis === 1 ? rows : cols, len = axis === 1 ? cols : rows;
  const out = new Float64Array(outN);
  for (let o = 0; o < outN; o++) {
    const xs: number[] = [];
    for (let k = 0; k < len; k++) {
      const [i, j] = axis === 1 ? [o, k] : [k, o];
      xs.push(Math.fround(m[i * cols + j]! + v[axis === 1 ? j : i]!));
    }
    if (xs.some(Number.isNaN)) out[o] = NaN;
    else {
      const mx = xs.reduce((a, b) => Math.max(a, b), -Infinity);
      out[o] = !Number.isFinite(mx)
        ? mx
        : mx + Math.log(xs.reduce((s, x) => s + Math.exp(x - mx), 0));
    }
  }
  return out;
}

function randomData(n: number, seed: number, scale: number): Float32Array {
  const g = new Generator(seed);
  const u = g.uniformHost(2 * n);
  // Box–Muller on host uniforms: an independent stream, no engine ops involved.
  return Float32Array.from({ length: n }, (_, k) => {
    const u1 = Math.max(u[2 * k]!, 1e-12), u2 = u[2 * k + 1]!;
    return scale * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  });
}

const SHAPES: [number, number][] = [
  [1, 1],
  [1, 7],
  [7, 1],
  [7, 33],
  [33, 7],
  [33, 257],
  [257, 8],
  [8, 1000],
  [1000, 12],
  [5, 1000],
];

async function checkOp(be: Backend, label: string) {
  let seed = 10;
  for (const [rows, cols] of SHAPES) {
    for (const scale of [3, 1e4]) {
      const md = randomData(rows * cols, seed++, scale);
      for (const axis of [0, 1] as const) {
        const vd = randomData(axis === 1 ? cols : rows, seed++, scale);
        const M = tensor(md, [rows, cols], be);
        const v = tensor(vd, axis === 1 ? [1, cols] : [rows, 1], be);
        const y = logSumExpAdd(M, v, axis);
        assert.deepEqual(y.shape, [axis === 1 ? rows : cols]);
        const atol = be.name === "cpu" ? 2e-5 : 1e-4;
        const want = lseRef(md, vd, rows, cols, axis);
        const msg = `${label} [${rows}, ${cols}] axis ${axis} scale ${scale}`;
        assertClose(await y.data(), want, { atol, rtol: 2e-6, msg });
        // The epilogue −lse + 0.7 (Sinkhorn's log a − LSE), keepdims.
        const z = logSumExpAdd(M, v, axis, true, { scale: -1, shift: 0.7 });
        assert.deepEqual(z.shape, axis === 1 ? [rows, 1] : [1, cols]);
        assertClose(await z.data(), want.map((x) => 0.7 - x), { atol, rtol: 2e-6, msg });
        for (const t of [M, v, y, z]) t.dispose();
      }
    }
  }
}

async function checkSpecials(be: Backend, label: string) {
  const I = Infinity;
  // Rows: all −∞; −∞ mixed in; a +∞; a NaN; +∞ and NaN; two +∞; ±1e4 magnitudes. Width 5
  // runs the scalar kernels, width 8 (three −∞ columns appended) the vec4 ones.
  const base = [
    [-I, -I, -I, -I, -I],
    [-I, 0, -I, 1, -I],
    [0, I, 2, -I, 5],
    [0, NaN, 2, 3, 4],
    [I, NaN, 1, 1, 1],
    [I, 0, I, 0, 0],
    [-2e4, -1e4, 1e4, 2e4, 3e4],
  ];
  for (const k of [5, 8]) {
    const n = base.length;
    const md = Float32Array.from(base.flatMap((r) => [...r, ...new Array(k - 5).fill(-I)]));
    for (const axis of [0, 1] as const) {
      const vd = axis === 1 ? new Float32Array(k) : new Float32Array(n);
      const M = tensor(md, [n, k], be);
      const v = tensor(vd, axis === 1 ? [k] : [n, 1], be);
      const got = await logSumExpAdd(M, v, axis).data();
      const want = lseRef(md, vd, n, k, axis);
      const msg = `${label} specials [${n}, ${k}] axis ${axis}`;
      assertClose(got, want, { atol: 1e-4, rtol: 1e-6, msg });
      if (axis === 1) {
        assert.equal(got[0], -Infinity, `${msg}: a row of all −∞ gives −∞`);
        assert.ok(Number.isNaN(got[3]!) && Number.isNaN(got[4]!), `${msg}: NaN propagates`);
        assert.equal(got[2], Infinity, `${msg}: +∞ gives +∞`);
        assert.equal(got[5], Infinity, `${msg}: two +∞ give +∞`);
      } else {
        assert.ok(Number.isNaN(got[1]!), `${msg}: NaN propagates`);
        for (let j = 5; j < k; j++) assert.equal(got[j], -Infinity, `${msg}: all −∞ column`);
      }
      M.dispose();
      v.dispose();
    }
  }
  // v = −∞ everywhere makes every term −∞; an empty axis sums nothing: both give −∞.
  const M = tensor(new Float32Array(6).fill(1), [2, 3], be);
  const vNeg = tensor(new Float32Array(3).fill(-Infinity), [1, 3], be);
  assert.deepEqual([...await logSumExpAdd(M, vNeg, 1).data()], [-Infinity, -Infinity]);
  const empty = tensor(new Float32Array(0), [2, 0], be);
  assert.deepEqual([...await logSumExpAdd(empty, tensor([], [0], be), 1).data()], [
    -Infinity,
    -Infinity,
  ]);
}

for (const { name, ignore } of BACKENDS) {
  Deno.test({
    name: `logSumExpAdd (${name}): matches an f64 reference on shapes up to 1000, both axes`,
    ignore,
    fn: () => checkOp(backendByName(name)!, name),
  });
  Deno.test({
    name: `logSumExpAdd (${name}): −∞ lines give −∞, NaN propagates, +∞ wins, ±1e4 stays exact`,
    ignore,
    fn: () => checkSpecials(backendByName(name)!, name),
  });
}

Deno.test({
  name: "logSumExpAdd (webgpu): the workgroup-per-output variant agrees too, one dispatch a call",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const be = backendByName("webgpu") as WebGPUBackend;
    try {
      for (const strategy of ["group", "thread"] as const) {
        be.lseStrategy = strategy;
        await checkOp(be, `webgpu ${strategy}`);
        await checkSpecials(be, `webgpu ${strategy}`);
        const M = tensor(randomData(64 * 48, 1, 2), [64, 48], be);
        const g = tensor(randomData(48, 2, 1), [48], be);
        await be.sync();
        const d0 = be.stats().dispatches;
        const y = logSumExpAdd(M, g, 1);
        assert.equal(be.stats().dispatches - d0, 1, `${strategy}: one dispatch`);
        for (const t of [M, g, y]) t.dispose();
      }
    } finally {
      be.lseStrategy = undefined;
    }
  },
});

Deno.test("logSumExpAdd: bad shapes and axes raise typed errors naming the input", () => {
  const M = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => logSumExpAdd(tensor([1, 2, 3]), tensor([1, 2, 3]), 0), /2-D tensor/);
  assert.throws(
    () => logSumExpAdd(M, tensor([1, 2]), 1),
    /shape \[3\] or \[1, 3\] but found \[2\]/,
  );
  assert.throws(() => logSumExpAdd(M, tensor([1, 2, 3]), 0), /shape \[2, 1\] but found \[3\]/);
  assert.throws(() => logSumExpAdd(M, tensor([[1, 2, 3]]), 2), RangeError);
  assert.throws(() => logSumExpAdd(M, 3 as unknown as Tensor, 1), TypeError);
  assert.throws(
    () => logSumExpAdd(M, tensor([1, 2, 3]), 1, false, { scale: NaN }),
    /logSumExpAdd scale/,
  );
  M.dispose();
});

for (const { name, ignore } of BACKENDS) {
  Deno.test({
    name: `logSumExpAdd (${name}): vjp and jvp equal the composite logSumExp(add(M, v))`,
    ignore,
    fn: async () => {
      const be = backendByName(name)!;
      const rows = 6, cols = 9;
      const Md = randomData(rows * cols, 3, 2);
      for (const axis of [0, 1] as const) {
        const vShape = axis === 1 ? [1, cols] : [rows, 1];
        const vd = randomData(axis === 1 ? cols : rows, 5 + axis, 1);
        const outN = axis === 1 ? rows : cols;
        const weights = tensor(randomData(outN, 7 + axis, 1), [outN], be);
        const loss = (lse: (M: Tensor, v: Tensor) => Tensor) => (p: { M: Tensor; v: Tensor }) =>
          sum(mul(lse(p.M, p.v), weights));
        // With the epilogue on axis 0 (its rules recompute the plain lse), without on axis 1.
        const [sc, sh] = axis === 0 ? [-2.5, 0.3] : [1, 0];
        const fast = (M: Tensor, v: Tensor) =>
          logSumExpAdd(M, v, axis, false, { scale: sc, shift: sh });
        const comp = (M: Tensor, v: Tensor) => add(mul(logSumExp(add(M, v), axis), sc), sh);
        const params = { M: tensor(Md, [rows, cols], be), v: tensor(vd, vShape, be) };
        const [vf, gf] = valueAndGrad(loss(fast))(params);
        const [vc, gc] = valueAndGrad(loss(comp))(params);
        const tol = { atol: 1e-5, rtol: 1e-4 };
        assertClose([await vf.item()], [await vc.item()], { ...tol, msg: `value axis ${axis}` });
        assertClose(await gf.M.data(), await gc.M.data(), { ...tol, msg: `dM axis ${axis}` });
        assertClose(await gf.v.data(), await gc.v.data(), { ...tol, msg: `dv axis ${axis}` });
        // The gradient of M is a softmax along the axis times the weights: lines sum to w.
        // (times the scale)
        const gm = await gf.M.data(), wd = await weights.data();
        for (let o = 0; o < outN; o++) {
          let s = 0;
          for (let k = 0; k < (axis === 1 ? cols : rows); k++) {
            s += axis === 1 ? gm[o * cols + k]! : gm[k * cols + o]!;
          }
          assertClose([s], [sc * wd[o]!], { atol: 1e-5, msg: `softmax line ${o}` });
        }
        // Forward mode, tangents on both inputs.
        const tM = tensor(randomData(rows * cols, 11, 1), [rows, cols], be);
        const tv = tensor(randomData(axis === 1 ? cols : rows, 12, 1), vShape, be);
        const [, dFast] = jvp((M, v) => fast(M, v), [params.M, params.v], [tM, tv]);
        const [, dComp] = jvp((M, v) => comp(M, v), [params.M, params.v], [tM, tv]);
        assertClose(await dFast.data(), await dComp.data(), { ...tol, msg: `jvp axis ${axis}` });
        // Reverse of forward: d/dM of Σ jvp(lse)(M; tM) against the composite.
        const rof = (lse: (M: Tensor, v: Tensor) => Tensor) => (p: { M: Tensor }) =>
          sum(jvp((M) => lse(M, params.v), [p.M], [tM])[1]);
        const [, hf] = valueAndGrad(rof(fast))({ M: params.M });
        const [, hc] = valueAndGrad(rof(comp))({ M: params.M });
        assertClose(await hf.M.data(), await hc.M.data(), { ...tol, msg: `rev-of-jvp ${axis}` });
        for (const t of [vf, vc, gf.M, gf.v, gc.M, gc.v, dFast, dComp, tM, tv, hf.M, hc.M]) {
          t.dispose();
        }
        for (const t of [weights, params.M, params.v]) t.dispose();
      }
    },
  });
}

/** The Sinkhorn loop as it was before the fused op: composite `logSumExp(add(…))`. */
function compositeSinkhorn(cost: Tensor, reg: number, iters: number): Tensor {
  const [n, m] = cost.shape as [number, number];
  return tidy(() => {
    const M = mul(cost, -1 / reg);
    let f = tensor(new Float32Array(n), [n, 1]), g = tensor(new Float32Array(m), [1, m]);
    for (let it = 0; it < iters; it++) {
      f = sub(-Math.log(n), logSumExp(add(M, g), 1, true));
      g = sub(-Math.log(m), logSumExp(add(M, f), 0, true));
    }
    return add(add(M, f), g);
  });
}

for (const { name, ignore } of BACKENDS) {
  Deno.test({
    name: `sinkhorn (${name}): plan and marginals unchanged vs the composite logSumExp loop`,
    ignore,
    fn: async () => {
      const prev = getBackend().name;
      setBackend(name);
      try {
        const n = 40, m = 28, reg = 0.05, iters = 30;
        const u = new Generator(21).uniformHost(n * m);
        const cost = tensor(Float32Array.from(u, (x) => x * 2), [n, m]);
        const r = await sinkhorn(cost, { reg, maxIters: iters, tol: 0 });
        const want = compositeSinkhorn(cost, reg, iters);
        const got = await r.logPlan.data(), ref = await want.data();
        assertClose(got, ref, { atol: 1e-3, rtol: 1e-5, msg: `${name} log plan` });
        // Column marginals are exact after each sweep; rows converge: both sum to ≈ 1/n, 1/m.
        const p = got.map(Math.exp);
        for (let j = 0; j < m; j++) {
          let s = 0;
          for (let i = 0; i < n; i++) s += p[i * m + j]!;
          assertClose([s], [1 / m], { rtol: 1e-4, msg: `column ${j}` });
        }
        let rowErr = 0;
        for (let i = 0; i < n; i++) {
          let s = 0;
          for (let j = 0; j < m; j++) s += p[i * m + j]!;
          rowErr += Math.abs(s - 1 / n);
        }
        assertClose([r.marginalError], [rowErr], { atol: 1e-5, rtol: 1e-2, msg: "marginal error" });
        for (const t of [cost, r.logPlan, want]) t.dispose();
      } finally {
        setBackend(prev);
      }
    },
  });
}
