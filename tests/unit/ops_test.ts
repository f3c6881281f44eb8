/**
 * Op semantics on the CPU backend, each against an independent plain-JS f64 computation
 * (tests/_ref.ts). Inputs are rounded to f32 before the reference sees them, so the only
 * differences are the engine's f32 arithmetic; tolerances below are stated per op.
 */
import { strict as assert } from "node:assert";
import * as fg from "../../mod.ts";
import type { Tensor } from "../../mod.ts";
import { assertClose } from "../_helpers.ts";
import {
  type Arr,
  arr,
  bget,
  bshape,
  erf64,
  mapN,
  matmulRef,
  numel,
  randArray,
  reduceRef,
  rng,
  subsets,
  tlast,
  unravel,
} from "../_ref.ts";

fg.setBackend("cpu");

const T = (a: Arr): Tensor => fg.tensor(Float32Array.from(a.data), a.shape);
const R = (shape: number[], seed: number, lo = -2, hi = 2): Arr =>
  arr(shape, randArray(rng(seed), numel(shape), lo, hi));

async function check(
  t: Tensor,
  ref: Arr,
  opts: { rtol?: number; atol?: number; msg?: string } = {},
): Promise<void> {
  assert.deepEqual([...t.shape], ref.shape, `${opts.msg ?? ""} shape`);
  assertClose(await t.data(), ref.data, { rtol: 2e-6, atol: 1e-6, ...opts });
  t.dispose();
}

Deno.test("tensor/zeros/ones/full/arange/linspace/eye: values and shapes", async () => {
  const a = fg.tensor([[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(a.shape, [2, 3]);
  assert.deepEqual([...await a.data()], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(fg.tensor(5).shape, []);
  assert.deepEqual(fg.tensor([]).shape, [0]);
  assert.deepEqual(fg.tensor(new Float32Array([1, 2, 3, 4]), [2, 2]).shape, [2, 2]);
  assert.deepEqual([...await fg.zeros([2, 2]).data()], [0, 0, 0, 0]);
  assert.deepEqual([...await fg.ones([3]).data()], [1, 1, 1]);
  assert.deepEqual([...await fg.full([2], 7.5).data()], [7.5, 7.5]);
  assert.deepEqual([...await fg.zerosLike(a).data()], [0, 0, 0, 0, 0, 0]);
  assert.deepEqual(fg.onesLike(a).shape, [2, 3]);
  assert.deepEqual([...await fg.arange(5).data()], [0, 1, 2, 3, 4]);
  assert.deepEqual([...await fg.arange(2, 9, 3).data()], [2, 5, 8]);
  assert.deepEqual([...await fg.arange(5, 0, -2).data()], [5, 3, 1]);
  assert.deepEqual(fg.arange(3, 3).shape, [0]);
  assertClose(await fg.arange(0, 1, 0.25).data(), [0, 0.25, 0.5, 0.75]);
  assertClose(await fg.linspace(-1, 1, 5).data(), [-1, -0.5, 0, 0.5, 1]);
  assertClose(await fg.linspace(3, 7, 1).data(), [3]);
  const e = fg.eye(3);
  assert.deepEqual([...await e.data()], [1, 0, 0, 0, 1, 0, 0, 0, 1]);
});

// ---------------------------------------------------------------- unary

const UNARY_CASES: [string, (x: Tensor) => Tensor, (x: number) => number, number, number][] = [
  ["neg", fg.neg, (x) => -x, -3, 3],
  ["exp", fg.exp, Math.exp, -10, 10],
  ["log", fg.log, Math.log, 1e-3, 50],
  ["sqrt", fg.sqrt, Math.sqrt, 0, 50],
  ["rsqrt", fg.rsqrt, (x) => 1 / Math.sqrt(x), 1e-2, 50],
  ["sin", fg.sin, Math.sin, -6, 6],
  ["cos", fg.cos, Math.cos, -6, 6],
  ["tanh", fg.tanh, Math.tanh, -8, 8],
  ["sigmoid", fg.sigmoid, (x) => 1 / (1 + Math.exp(-x)), -30, 30],
  ["silu", fg.silu, (x) => x / (1 + Math.exp(-x)), -30, 30],
  ["relu", fg.relu, (x) => Math.max(x, 0), -3, 3],
  ["abs", fg.abs, Math.abs, -3, 3],
  ["sign", fg.sign, Math.sign, -3, 3],
  ["square", fg.square, (x) => x * x, -30, 30],
  ["reciprocal", fg.reciprocal, (x) => 1 / x, 0.01, 30],
  ["floor", fg.floor, Math.floor, -5, 5],
];

Deno.test("unary ops match f64 Math on [7, 33] inputs across their domains", async () => {
  for (const [name, f, ref, lo, hi] of UNARY_CASES) {
    const x = R([7, 33], name.length * 101, lo, hi);
    // f32 output of an f64-exact value: 1 ulp relative plus libm slop.
    await check(f(T(x)), mapN([x], ref), { rtol: 3e-6, atol: 1e-7, msg: name });
  }
});

Deno.test("unary ops: extreme inputs saturate without NaN (tanh, sigmoid, silu, exp, log)", async () => {
  const x = fg.tensor([-1e4, -100, 0, 100, 1e4]);
  assert.deepEqual([...await fg.tanh(x).data()], [-1, -1, 0, 1, 1]);
  assertClose(await fg.sigmoid(x).data(), [0, 1 / (1 + Math.exp(100)), 0.5, 1, 1], {
    // sigmoid(-100) ≈ 3.7e-44 is an f32 subnormal: only its absolute value is meaningful.
    rtol: 1e-6,
    atol: 1e-44,
  });
  const s = await fg.silu(x).data();
  assert.ok(s.every((v) => !Number.isNaN(v)), `silu gave NaN: ${s}`);
  assert.equal(s[4], 1e4);
  assert.deepEqual([...await fg.exp(fg.tensor([100, -200])).data()], [Infinity, 0]);
  assert.deepEqual([...await fg.log(fg.tensor([0])).data()], [-Infinity]);
  assert.ok(Number.isNaN((await fg.log(fg.tensor([-1])).data())[0]!));
  assert.ok(Number.isNaN((await fg.sqrt(fg.tensor([-1])).data())[0]!));
});

Deno.test("erf and gelu (exact erf form) match a high-precision f64 erf", async () => {
  // Self-check of the reference against tabulated values (A&S Table 7.1).
  assertClose([erf64(0.5), erf64(1), erf64(2), erf64(3), erf64(-1.5)], [
    0.5204998778130465,
    0.8427007929497149,
    0.9953222650189527,
    0.9999779095030014,
    -0.9661051464753108,
  ], { rtol: 1e-14, atol: 1e-15 });
  const x = arr([1000], Float64Array.from({ length: 1000 }, (_, i) => Math.fround(-6 + i * 0.012)));
  // The engine uses A&S 7.1.26 (|error| < 1.5e-7) so that WGSL can match it; allow 3e-7.
  await check(fg.erf(T(x)), mapN([x], erf64), { rtol: 0, atol: 3e-7, msg: "erf" });
  // gelu(x) = x/2 (1 + erf(x/√2)); the erf error is scaled by |x|/2 <= 3.
  await check(fg.gelu(T(x)), mapN([x], (v) => 0.5 * v * (1 + erf64(v / Math.SQRT2))), {
    rtol: 2e-6,
    atol: 5e-7,
    msg: "gelu",
  });
});

Deno.test("clamp, comparisons with scalars and tensors, where with broadcasting", async () => {
  const x = R([7, 33], 5, -3, 3);
  await check(fg.clamp(T(x), -1, 0.5), mapN([x], (v) => Math.min(Math.max(v, -1), 0.5)));
  await check(fg.clamp(T(x), 0), mapN([x], (v) => Math.max(v, 0)));
  const grid = arr([2, 3], [1, 2, 3, 3, 2, 1]);
  const b = arr([3], [2, 2, 2]);
  const cases: [
    string,
    (a: Tensor, b: Tensor | number) => Tensor,
    (a: number, b: number) => boolean,
  ][] = [
    ["greater", fg.greater, (p, q) => p > q],
    ["greaterEqual", fg.greaterEqual, (p, q) => p >= q],
    ["less", fg.less, (p, q) => p < q],
    ["lessEqual", fg.lessEqual, (p, q) => p <= q],
    ["equal", fg.equal, (p, q) => p === q],
    ["notEqual", fg.notEqual, (p, q) => p !== q],
  ];
  for (const [name, f, ref] of cases) {
    const want = mapN([grid, b], (p, q) => (ref(p, q) ? 1 : 0));
    await check(f(T(grid), T(b)), want, { rtol: 0, atol: 0, msg: name });
    await check(f(T(grid), 2), want, { rtol: 0, atol: 0, msg: `${name} scalar` });
  }
  // where: cond [7, 1], a [1, 33], b [] -> [7, 33]
  const c = arr([7, 1], [1, 0, 0, 1, 1, 0, 1]);
  const a = R([1, 33], 6);
  const s = arr([], [-9]);
  await check(
    fg.where(T(c), T(a), T(s)),
    mapN([c, a, s], (cc, aa, ss) => (cc !== 0 ? aa : ss)),
    { rtol: 0, atol: 0, msg: "where" },
  );
});

// ---------------------------------------------------------------- binary

const BIN_SHAPES: [number[], number[]][] = [
  [[7, 1, 33], [33]],
  [[1], [7, 33]],
  [[7, 33], [7, 33]],
  [[1, 33], [7, 1]],
  [[], [7, 33]],
  [[257], [257]],
  [[7, 1, 1], [1, 1, 33]],
];

Deno.test("binary ops with NumPy broadcasting match f64 loops", async () => {
  const ops: [string, (a: Tensor, b: Tensor) => Tensor, (a: number, b: number) => number][] = [
    ["add", fg.add, (a, b) => a + b],
    ["sub", fg.sub, (a, b) => a - b],
    ["mul", fg.mul, (a, b) => a * b],
    ["div", fg.div, (a, b) => a / b],
    ["maximum", fg.maximum, Math.max],
    ["minimum", fg.minimum, Math.min],
    ["pow", fg.pow, Math.pow],
  ];
  let seed = 100;
  for (const [sa, sb] of BIN_SHAPES) {
    for (const [name, f, ref] of ops) {
      // pow needs a positive base for real results; div a divisor away from 0.
      const a = name === "pow" ? R(sa, seed++, 0.1, 3) : R(sa, seed++);
      const b = name === "div" ? R(sb, seed++, 0.5, 2) : R(sb, seed++);
      const msg = `${name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`;
      await check(f(T(a), T(b)), mapN([a, b], ref), { rtol: 4e-6, atol: 1e-6, msg });
      await check(f(T(b), T(a)), mapN([b, a], ref), { rtol: 4e-6, atol: 1e-6, msg });
    }
  }
});

Deno.test("arithmetic with a number on either side, and tensor methods", async () => {
  const x = R([7, 33], 11, 0.5, 2);
  await check(fg.add(T(x), 1.5), mapN([x], (v) => v + 1.5));
  await check(fg.add(2, T(x)), mapN([x], (v) => v + 2));
  await check(fg.sub(T(x), 1.5), mapN([x], (v) => v - 1.5));
  await check(fg.sub(1, T(x)), mapN([x], (v) => 1 - v));
  await check(fg.mul(3, T(x)), mapN([x], (v) => 3 * v));
  await check(fg.div(T(x), 4), mapN([x], (v) => v / 4));
  await check(fg.div(2, T(x)), mapN([x], (v) => 2 / v), { rtol: 5e-7 * 4 });
  await check(fg.pow(2, T(x)), mapN([x], (v) => 2 ** v));
  await check(fg.maximum(T(x), 1), mapN([x], (v) => Math.max(v, 1)));
  await check(fg.minimum(T(x), 1), mapN([x], (v) => Math.min(v, 1)));
  await check(T(x).add(1).mul(2).sub(0.5).div(3), mapN([x], (v) => ((v + 1) * 2 - 0.5) / 3));
  await check(T(x).square().sqrt(), mapN([x], (v) => v));
});

Deno.test("pow: negative bases with integer exponents follow IEEE pow; fractional ones give NaN", async () => {
  const base = arr([6], [-2, -3, -0.5, 0, 2, -1]);
  for (const p of [3, 2, -2, -1, 0, 4, 1, 5]) {
    await check(fg.pow(T(base), p), mapN([base], (v) => Math.pow(v, p)), { msg: `pow ^${p}` });
  }
  const y = await fg.pow(T(base), 0.5).data();
  assert.ok(
    Number.isNaN(y[0]!) && Number.isNaN(y[1]!) && y[3] === 0 && Math.abs(y[4]! - Math.SQRT2) < 1e-6,
  );
  // Tensor exponents, including odd/even integers for a negative base.
  const e = arr([6], [3, 2, -3, 2, 0.5, 7]);
  await check(fg.pow(T(base), T(e)), mapN([base, e], Math.pow), { msg: "pow tensor exps" });
});

// ---------------------------------------------------------------- reductions

Deno.test("sum/mean/max/min over every axis subset, keepdims true and false", async () => {
  for (const shape of [[7, 1, 33], [3, 4, 5]]) {
    const x = R(shape, 200 + shape[0]!, -5, 5);
    for (const axes of subsets(shape.length)) {
      for (const keepdims of [false, true]) {
        const msg = `${JSON.stringify(shape)} axes ${JSON.stringify(axes)} keep ${keepdims}`;
        await check(
          fg.sum(T(x), axes, keepdims),
          reduceRef(x, axes, keepdims, (v) => v.reduce((a, b) => a + b, 0)),
          { rtol: 1e-5, atol: 1e-5, msg: `sum ${msg}` },
        );
        await check(
          fg.mean(T(x), axes, keepdims),
          reduceRef(x, axes, keepdims, (v) => v.reduce((a, b) => a + b, 0) / v.length),
          { rtol: 1e-5, atol: 1e-5, msg: `mean ${msg}` },
        );
        await check(
          fg.max(T(x), axes, keepdims),
          reduceRef(x, axes, keepdims, (v) => Math.max(...v)),
          { rtol: 0, atol: 0, msg: `max ${msg}` },
        );
        await check(
          fg.min(T(x), axes, keepdims),
          reduceRef(x, axes, keepdims, (v) => Math.min(...v)),
          { rtol: 0, atol: 0, msg: `min ${msg}` },
        );
      }
    }
  }
  // Default: all axes; negative axes count from the end; methods agree.
  const x = R([7, 33], 9);
  const total = x.data.reduce((a, b) => a + b, 0);
  assertClose([await fg.sum(T(x)).item()], [total], { rtol: 1e-5, atol: 1e-5 });
  await check(T(x).sum(-1), reduceRef(x, [1], false, (v) => v.reduce((a, b) => a + b, 0)), {
    rtol: 1e-5,
    atol: 1e-5,
  });
  await check(T(x).max(-2, true), reduceRef(x, [0], true, (v) => Math.max(...v)), {
    rtol: 0,
    atol: 0,
  });
  // A long reduction stays accurate: 1000 copies of 0.1 (f32) sum to 1000·fround(0.1).
  assertClose([await fg.sum(fg.full([1000], 0.1)).item()], [1000 * Math.fround(0.1)], {
    rtol: 1e-5,
  });
});

Deno.test("argmax/argmin: along each axis, flattened, first index wins ties", async () => {
  const x = R([7, 33], 31);
  for (const axis of [0, 1, -1]) {
    const ax = axis < 0 ? axis + 2 : axis;
    const am = reduceRef(x, [ax], false, (v) => v.indexOf(Math.max(...v)));
    const an = reduceRef(x, [ax], false, (v) => v.indexOf(Math.min(...v)));
    await check(fg.argmax(T(x), axis), am, { rtol: 0, atol: 0, msg: `argmax ${axis}` });
    await check(fg.argmin(T(x), axis), an, { rtol: 0, atol: 0, msg: `argmin ${axis}` });
  }
  const flat = [...x.data];
  assert.equal(await fg.argmax(T(x)).item(), flat.indexOf(Math.max(...flat)));
  const ties = fg.tensor([[1, 3, 3, 2], [5, 5, 5, 5], [0, -1, 4, -1]]);
  assert.deepEqual([...await fg.argmax(ties, 1).data()], [1, 0, 2]);
  assert.deepEqual([...await fg.argmin(ties, 1).data()], [0, 0, 1]);
  assert.deepEqual([...await fg.argmax(ties, 0).data()], [1, 1, 1, 1]);
  assert.deepEqual(fg.argmax(ties, 1, true).shape, [3, 1]);
});

Deno.test("max/min propagate NaN (like torch.amax)", async () => {
  const x = fg.tensor([[1, NaN, 3], [4, 5, 6], [NaN, -1, 2]]);
  const mx = await fg.max(x, 1).data();
  const mn = await fg.min(x, 1).data();
  assert.ok(Number.isNaN(mx[0]!) && mx[1] === 6 && Number.isNaN(mx[2]!), `max ${mx}`);
  assert.ok(Number.isNaN(mn[0]!) && mn[1] === 4 && Number.isNaN(mn[2]!), `min ${mn}`);
  assert.ok(Number.isNaN(await fg.max(x).item()));
});

Deno.test("variance with correction 0 and 1, over axes", async () => {
  const x = R([7, 33], 41, -3, 3);
  for (
    const [axes, correction] of [[[1], 0], [[1], 1], [[0], 1], [[0, 1], 0]] as [number[], number][]
  ) {
    for (const keepdims of [false, true]) {
      const ref = reduceRef(x, axes, keepdims, (v) => {
        const m = v.reduce((a, b) => a + b, 0) / v.length;
        return v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - correction);
      });
      await check(fg.variance(T(x), axes, keepdims, correction), ref, {
        rtol: 1e-5,
        atol: 1e-6,
        msg: `var ${axes} c=${correction}`,
      });
    }
  }
});

// ---------------------------------------------------------------- matmul

function mmRef(a: Arr, b: Arr, transA: boolean, transB: boolean): Arr {
  return matmulRef(transA ? tlast(a) : a, transB ? tlast(b) : b);
}

Deno.test("matmul: all four transpose combinations", async () => {
  const [m, k, n] = [7, 33, 5];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = R(transA ? [k, m] : [m, k], 51);
      const b = R(transB ? [n, k] : [k, n], 52);
      // f32 products summed in f64 on CPU: error ~ k·ε₃₂·|terms|.
      await check(fg.matmul(T(a), T(b), { transA, transB }), mmRef(a, b, transA, transB), {
        rtol: 1e-5,
        atol: 1e-5,
        msg: `transA=${transA} transB=${transB}`,
      });
    }
  }
  // Larger, to cover more than one block of any blocking scheme.
  const a = R([33, 257], 53), b = R([257, 7], 54);
  await check(fg.matmul(T(a), T(b)), matmulRef(a, b), { rtol: 1e-5, atol: 1e-4 });
  await check(T(a).matmul(T(b)), matmulRef(a, b), { rtol: 1e-5, atol: 1e-4 });
});

Deno.test("matmul: batched with broadcasting batch axes, with transposes", async () => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[2, 1, 7, 33], [3, 33, 5], false, false],
    [[4, 7, 33], [33, 5], false, false],
    [[7, 33], [4, 33, 5], false, false],
    [[2, 1, 33, 7], [1, 3, 5, 33], true, true],
    [[3, 7, 33], [3, 5, 33], false, true],
    [[1, 33, 7], [2, 33, 5], true, false],
  ];
  let seed = 60;
  for (const [sa, sb, transA, transB] of cases) {
    const a = R(sa, seed++), b = R(sb, seed++);
    await check(fg.matmul(T(a), T(b), { transA, transB }), mmRef(a, b, transA, transB), {
      rtol: 1e-5,
      atol: 1e-5,
      msg: `${JSON.stringify(sa)} x ${JSON.stringify(sb)} tA=${transA} tB=${transB}`,
    });
  }
});

Deno.test("matmul: 1-D operands follow NumPy (vector-matrix, matrix-vector, dot)", async () => {
  const v = R([33], 70), w = R([33], 71), M = R([33, 5], 72), N = R([7, 33], 73);
  const vm = matmulRef(arr([1, 33], v.data), M);
  await check(fg.matmul(T(v), T(M)), arr([5], vm.data), { rtol: 1e-5, atol: 1e-5, msg: "v@M" });
  const mv = matmulRef(N, arr([33, 1], v.data));
  await check(fg.matmul(T(N), T(v)), arr([7], mv.data), { rtol: 1e-5, atol: 1e-5, msg: "N@v" });
  const d = v.data.reduce((s, x, i) => s + x * w.data[i]!, 0);
  await check(fg.matmul(T(v), T(w)), arr([], [d]), { rtol: 1e-5, atol: 1e-5, msg: "v@w" });
  // 1-D with transposes: v @ Mᵀ where M is [5, 33].
  const Mt = R([5, 33], 74);
  const vmt = matmulRef(arr([1, 33], v.data), tlast(Mt));
  await check(fg.matmul(T(v), T(Mt), { transB: true }), arr([5], vmt.data), {
    rtol: 1e-5,
    atol: 1e-5,
  });
  // Batched matrix times vector.
  const B = R([3, 7, 33], 75);
  const bv = matmulRef(B, arr([33, 1], v.data));
  await check(fg.matmul(T(B), T(v)), arr([3, 7], bv.data), { rtol: 1e-5, atol: 1e-5 });
});

// ---------------------------------------------------------------- shape ops

Deno.test("reshape (with -1), transpose (perm), broadcastTo/expand, expandDims, squeeze, flatten2d", async () => {
  const x = R([2, 3, 4], 80);
  await check(fg.reshape(T(x), [4, -1]), arr([4, 6], x.data), { rtol: 0, atol: 0 });
  await check(T(x).reshape([24]), arr([24], x.data), { rtol: 0, atol: 0 });
  for (const perm of [[0, 2, 1], [2, 0, 1], [1, 2, 0], [2, 1, 0]]) {
    const shape = perm.map((p) => x.shape[p]!);
    const data = new Float64Array(24);
    for (let i = 0; i < 24; i++) {
      const o = unravel(i, shape);
      const src = [0, 0, 0];
      perm.forEach((p, j) => (src[p] = o[j]!));
      data[i] = x.data[(src[0]! * 3 + src[1]!) * 4 + src[2]!]!;
    }
    await check(fg.transpose(T(x), perm), arr(shape, data), {
      rtol: 0,
      atol: 0,
      msg: `perm ${perm}`,
    });
  }
  const rev = fg.transpose(T(x));
  assert.deepEqual(rev.shape, [4, 3, 2]);
  const y = R([3, 1], 81);
  const target = [2, 3, 4];
  const bd = Float64Array.from({ length: 24 }, (_, i) => bget(y, unravel(i, target)));
  await check(fg.broadcastTo(T(y), target), arr(target, bd), { rtol: 0, atol: 0 });
  await check(fg.expand(T(y), target), arr(target, bd), { rtol: 0, atol: 0 });
  assert.deepEqual(fg.expandDims(T(y), 0).shape, [1, 3, 1]);
  assert.deepEqual(fg.expandDims(T(y), -1).shape, [3, 1, 1]);
  assert.deepEqual(fg.squeeze(fg.zeros([1, 3, 1])).shape, [3]);
  assert.deepEqual(fg.squeeze(fg.zeros([1, 3, 1]), 2).shape, [1, 3]);
  assert.deepEqual(fg.flatten2d(fg.zeros([2, 3, 4])).shape, [2, 12]);
});

Deno.test("slice, sliceRows, split, concat, stack, pad, padSlice", async () => {
  const x = R([7, 33], 90);
  const sl = (r0: number, nr: number, c0: number, nc: number) =>
    arr(
      [nr, nc],
      Float64Array.from({ length: nr * nc }, (_, i) =>
        x.data[(r0 + Math.floor(i / nc)) * 33 + c0 + (i % nc)]!),
    );
  await check(fg.slice(T(x), [2, 5], [3, 10]), sl(2, 3, 5, 10), { rtol: 0, atol: 0 });
  await check(fg.slice(T(x), [1, 30], [-1, -1]), sl(1, 6, 30, 3), { rtol: 0, atol: 0 });
  await check(fg.sliceRows(T(x), 4, 7), sl(4, 3, 0, 33), { rtol: 0, atol: 0 });
  const parts = fg.split(T(x), [10, 20, 3], 1);
  assert.equal(parts.length, 3);
  await check(parts[0]!, sl(0, 7, 0, 10), { rtol: 0, atol: 0 });
  await check(parts[1]!, sl(0, 7, 10, 20), { rtol: 0, atol: 0 });
  await check(parts[2]!, sl(0, 7, 30, 3), { rtol: 0, atol: 0 });
  const rows = fg.split(T(x), [2, 5]);
  await check(rows[1]!, sl(2, 5, 0, 33), { rtol: 0, atol: 0 });
  // concat is the inverse of split, on both axes and with a negative axis.
  const a = sl(0, 7, 0, 10), b = sl(0, 7, 10, 23);
  await check(fg.concat([T(a), T(b)], 1), x, { rtol: 0, atol: 0 });
  await check(fg.concat([T(a), T(b)], -1), x, { rtol: 0, atol: 0 });
  await check(fg.concat([T(sl(0, 3, 0, 33)), T(sl(3, 1, 0, 33)), T(sl(4, 3, 0, 33))], 0), x, {
    rtol: 0,
    atol: 0,
  });
  // stack: new axis at 0, 1, -1
  const p = R([3, 4], 91), q = R([3, 4], 92);
  const st = (axis: number) => {
    const shape = [3, 4];
    shape.splice(axis, 0, 2);
    const data = Float64Array.from({ length: 24 }, (_, i) => {
      const idx = unravel(i, shape);
      const which = idx.splice(axis, 1)[0]!;
      return (which === 0 ? p : q).data[idx[0]! * 4 + idx[1]!]!;
    });
    return arr(shape, data);
  };
  await check(fg.stack([T(p), T(q)]), st(0), { rtol: 0, atol: 0, msg: "stack 0" });
  await check(fg.stack([T(p), T(q)], 1), st(1), { rtol: 0, atol: 0, msg: "stack 1" });
  await check(fg.stack([T(p), T(q)], -1), st(2), { rtol: 0, atol: 0, msg: "stack -1" });
  // pad / padSlice: zeros around, values inside.
  const padded = (w: [number, number][]) => {
    const shape = [3 + w[0]![0] + w[0]![1], 4 + w[1]![0] + w[1]![1]];
    const data = Float64Array.from({ length: numel(shape) }, (_, i) => {
      const [r, c] = unravel(i, shape) as [number, number];
      const rr = r - w[0]![0], cc = c - w[1]![0];
      return rr >= 0 && rr < 3 && cc >= 0 && cc < 4 ? p.data[rr * 4 + cc]! : 0;
    });
    return arr(shape, data);
  };
  await check(fg.pad(T(p), [[1, 2], [0, 3]]), padded([[1, 2], [0, 3]]), { rtol: 0, atol: 0 });
  await check(fg.padSlice(T(p), [5, 9], [2, 3]), padded([[2, 0], [3, 2]]), { rtol: 0, atol: 0 });
});

Deno.test("gather/indexSelect along each axis, and scatterAdd with repeated indices", async () => {
  const x = R([5, 4, 3], 95);
  const idx = [4, 0, 0, 2];
  for (const axis of [0, 1, 2, -1]) {
    const ax = axis < 0 ? axis + 3 : axis;
    const ii = idx.filter((i) => i < x.shape[ax]!);
    const shape = [...x.shape];
    shape[ax] = ii.length;
    const data = Float64Array.from({ length: numel(shape) }, (_, i) => {
      const o = unravel(i, shape);
      o[ax] = ii[o[ax]!]!;
      return x.data[(o[0]! * 4 + o[1]!) * 3 + o[2]!]!;
    });
    await check(fg.gather(T(x), fg.tensor(ii), axis), arr(shape, data), {
      rtol: 0,
      atol: 0,
      msg: `gather ${axis}`,
    });
    if (ax === 0) {
      await check(fg.indexSelect(T(x), fg.tensor(ii)), arr(shape, data), { rtol: 0, atol: 0 });
    }
  }
  // scatterAdd along axis 1 of [2, 4, 3] into size 5, with a repeated index.
  const src = R([2, 4, 3], 96);
  const si = [3, 0, 3, 1];
  const out = new Float64Array(2 * 5 * 3);
  for (let a = 0; a < 2; a++) {
    for (let j = 0; j < 4; j++) {
      for (let c = 0; c < 3; c++) out[(a * 5 + si[j]!) * 3 + c]! += src.data[(a * 4 + j) * 3 + c]!;
    }
  }
  await check(fg.scatterAdd(T(src), fg.tensor(si), 1, 5), arr([2, 5, 3], out), {
    rtol: 1e-6,
    atol: 1e-6,
  });
});

Deno.test("oneHot encodes integer labels", async () => {
  const labels = [2, 0, 3, 3, 1];
  const want = Float64Array.from(
    { length: 20 },
    (_, i) => (labels[Math.floor(i / 4)] === i % 4 ? 1 : 0),
  );
  await check(fg.oneHot(fg.tensor(labels), 4), arr([5, 4], want), { rtol: 0, atol: 0 });
});

// ---------------------------------------------------------------- composites

function lseRef(v: number[]): number {
  const m = Math.max(...v);
  return m + Math.log(v.reduce((s, x) => s + Math.exp(x - m), 0));
}

Deno.test("softmax/logSoftmax/logSumExp along axes match f64 and are stable at 1e4", async () => {
  const x = R([7, 33], 110, -5, 5);
  for (const axis of [0, 1, -1]) {
    const ax = axis < 0 ? axis + 2 : axis;
    const lse = reduceRef(x, [ax], true, lseRef);
    const logsm = mapN([x, lse], (v, l) => v - l);
    await check(fg.logSoftmax(T(x), axis), logsm, {
      rtol: 1e-5,
      atol: 2e-6,
      msg: `logSoftmax ${axis}`,
    });
    await check(fg.softmax(T(x), axis), mapN([logsm], Math.exp), {
      rtol: 1e-5,
      atol: 1e-7,
      msg: `softmax ${axis}`,
    });
    await check(fg.logSumExp(T(x), axis, true), lse, {
      rtol: 1e-6,
      atol: 2e-6,
      msg: `lse ${axis}`,
    });
  }
  await check(fg.logSumExp(T(x), [0, 1]), arr([], [lseRef([...x.data])]), {
    rtol: 1e-6,
    atol: 2e-6,
  });
  // Large magnitudes: a naive exp would overflow to Inf (and give NaN).
  const big = arr([2, 4], [1e4, 1e4 - 1, 1e4 - 2, 1e4 - 3, -1e4, -1e4 + 0.5, -1e4 + 1, -1e4]);
  const lse = reduceRef(big, [1], true, lseRef);
  // f32 spacing at 1e4 is ~1e-3, so the log-sum-exp itself is good to about 1e-3 absolute.
  await check(fg.logSumExp(T(big), 1, true), lse, { rtol: 0, atol: 2e-3 });
  const sm = mapN([big, lse], (v, l) => Math.exp(v - l));
  await check(fg.softmax(T(big), 1), sm, { rtol: 2e-3, atol: 1e-6 });
  // All -Inf row gives -Inf, not NaN; a +Inf entry gives +Inf.
  const inf = await fg.logSumExp(fg.tensor([[-Infinity, -Infinity], [Infinity, 0]]), 1).data();
  assert.deepEqual([...inf], [-Infinity, Infinity]);
});

Deno.test("layerNorm over the last axis, with and without weight and bias", async () => {
  const x = R([7, 33], 120, -3, 3);
  const w = R([33], 121), b = R([33], 122);
  const mu = reduceRef(x, [1], true, (v) => v.reduce((a, c) => a + c, 0) / v.length);
  const vr = reduceRef(x, [1], true, (v) => {
    const m = v.reduce((a, c) => a + c, 0) / v.length;
    return v.reduce((a, c) => a + (c - m) ** 2, 0) / v.length;
  });
  const y = mapN([x, mu, vr], (v, m, s) => (v - m) / Math.sqrt(s + 1e-5));
  await check(fg.layerNorm(T(x)), y, { rtol: 1e-5, atol: 2e-6 });
  await check(fg.layerNorm(T(x), T(w), T(b)), mapN([y, w, b], (v, p, q) => v * p + q), {
    rtol: 1e-5,
    atol: 2e-6,
  });
  const y2 = mapN([x, mu, vr], (v, m, s) => (v - m) / Math.sqrt(s + 0.1));
  await check(fg.layerNorm(T(x), undefined, undefined, 0.1), y2, { rtol: 1e-5, atol: 2e-6 });
});

Deno.test("pairwiseSqDist matches plain loops and is exactly >= 0", async () => {
  const a = R([7, 3], 130, -3, 3), b = R([33, 3], 131, -3, 3);
  const d = Float64Array.from({ length: 7 * 33 }, (_, i) => {
    const r = Math.floor(i / 33), c = i % 33;
    let s = 0;
    for (let k = 0; k < 3; k++) s += (a.data[r * 3 + k]! - b.data[c * 3 + k]!) ** 2;
    return s;
  });
  // ‖a‖² + ‖b‖² − 2ab cancels: absolute error ~ ε₃₂ · (‖a‖² + ‖b‖²) ≈ 1e-6 · 50.
  await check(fg.pairwiseSqDist(T(a), T(b)), arr([7, 33], d), { rtol: 1e-5, atol: 3e-5 });
  const self = await fg.pairwiseSqDist(T(a), T(a)).data();
  assert.ok(self.every((v) => v >= 0), "negative squared distance");
  for (let i = 0; i < 7; i++) assert.ok(self[i * 7 + i]! < 1e-4, `diag ${self[i * 7 + i]}`);
});

Deno.test("mse and globalNorm", async () => {
  const a = R([7, 33], 140), b = R([7, 33], 141), c = R([5], 142);
  const mse = a.data.reduce((s, v, i) => s + (v - b.data[i]!) ** 2, 0) / a.data.length;
  assertClose([await fg.mse(T(a), T(b)).item()], [mse], { rtol: 1e-5 });
  const gn = Math.sqrt([...a.data, ...c.data].reduce((s, v) => s + v * v, 0));
  assertClose([await fg.globalNorm([T(a), T(c)]).item()], [gn], { rtol: 1e-5 });
  assert.equal(await fg.globalNorm([]).item(), 0);
});

Deno.test("bshape helper agrees with the engine's broadcast shapes", () => {
  for (const [sa, sb] of BIN_SHAPES) {
    assert.deepEqual([...fg.add(fg.zeros(sa), fg.zeros(sb)).shape], bshape(sa, sb));
  }
});
