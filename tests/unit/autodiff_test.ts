/**
 * Autodiff on the CPU backend: every vjp and jvp rule against central finite differences of
 * an independent f64 implementation of the same function (tests/_fd.ts, tests/_ref.ts),
 * the jvp/vjp dot-product identity on composites, reverse-of-jvp through an MLP, and the
 * `valueAndGrad` contract (aux, trees, shared and unused params, errors, stopGradient).
 *
 * Tolerance: the engine computes in f32 (ε ≈ 6e-8) and the FD reference in f64 is good to
 * ~1e-9 (see tests/_fd.ts). A rule's f32 result passes through a few ops and sums of at most
 * a few hundred terms, so its error stays below ~1e-5 of the largest gradient entry; we
 * accept |g − fd| <= 1e-4·(|fd| + max|fd|). A wrong rule (sign, missing term, wrong axis,
 * wrong broadcast reduction) is off by O(max|fd|) and fails.
 */
import { strict as assert } from "node:assert";
import * as fg from "../../mod.ts";
import type { Tensor } from "../../mod.ts";
import { dot, fdGrad, fdJvp } from "../_fd.ts";
import { HAS_WASM } from "../_helpers.ts";
import {
  type Arr,
  bget,
  erf64,
  mapN,
  matmulRef,
  numel,
  randArray,
  reduceRef,
  rng,
  tlast,
  unravel,
} from "../_ref.ts";

fg.setBackend("cpu");

const TOL = 1e-4;

function assertGradClose(actual: ArrayLike<number>, expected: ArrayLike<number>, msg: string) {
  assert.equal(actual.length, expected.length, `${msg}: length`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]!));
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!, a = actual[i]!;
    const err = Math.abs(a - e);
    if (!(err <= TOL * (Math.abs(e) + scale) + 1e-12)) {
      assert.fail(`${msg}: element ${i}: got ${a}, expected ${e} (scale ${scale})`);
    }
  }
}

interface Case {
  name: string;
  shapes: number[][];
  f: (...xs: Tensor[]) => Tensor;
  ref: (...xs: Arr[]) => Arr;
  /** Input values per input index; default uniform in [-1.5, 1.5). */
  gen?: (r: () => number, i: number, n: number) => Float64Array;
}

const T = (a: Arr): Tensor => fg.tensor(Float32Array.from(a.data), a.shape);

async function checkCase(c: Case, seed: number): Promise<void> {
  const r = rng(seed);
  const xs = c.shapes.map((s, i) =>
    c.gen ? c.gen(r, i, numel(s)).map(Math.fround) : randArray(r, numel(s), -1.5, 1.5)
  );
  const toArr = (ys: Float64Array[]) => ys.map((y, i) => ({ shape: c.shapes[i]!, data: y }));
  const refFlat = (ys: Float64Array[]) => c.ref(...toArr(ys)).data;
  const ts = xs.map((x, i) => fg.tensor(Float32Array.from(x), c.shapes[i]!));
  const want = c.ref(...toArr(xs));
  // Forward value (sanity: the case's reference computes the same function).
  const y = c.f(...ts);
  assert.deepEqual([...y.shape], want.shape, `${c.name}: output shape`);
  const yv = await y.data();
  assertGradClose(yv, want.data, `${c.name}: forward value`);
  y.dispose();

  // Reverse mode: gradient of Σ u ⊙ f(x) for a random cotangent u.
  const u = randArray(r, want.data.length, -1, 1);
  const ut = fg.tensor(Float32Array.from(u), want.shape);
  const [val, grads] = fg.valueAndGrad((ps: Tensor[]) => fg.sum(fg.mul(c.f(...ps), ut)))(ts);
  const fdg = fdGrad((ys) => dot(u, refFlat(ys)), xs);
  for (let i = 0; i < ts.length; i++) {
    assert.deepEqual([...grads[i]!.shape], c.shapes[i], `${c.name}: grad ${i} shape`);
    assertGradClose(await grads[i]!.data(), fdg[i]!, `${c.name}: vjp wrt input ${i}`);
  }
  val.dispose();
  grads.forEach((g) => g.dispose());

  // Forward mode: directional derivative along random tangents.
  const vs = xs.map((x) => randArray(r, x.length, -1, 1));
  const vts = vs.map((v, i) => fg.tensor(Float32Array.from(v), c.shapes[i]!));
  const [out, tan] = fg.jvp(c.f, ts, vts);
  assert.deepEqual([...tan.shape], want.shape, `${c.name}: tangent shape`);
  assertGradClose(await out.data(), want.data, `${c.name}: jvp primal`);
  assertGradClose(await tan.data(), fdJvp(refFlat, xs, vs), `${c.name}: jvp tangent`);
  [out, tan, ut, ...ts, ...vts].forEach((t) => t.dispose());
}

async function runCases(cases: Case[], seed0: number): Promise<void> {
  let seed = seed0;
  for (const c of cases) await checkCase(c, seed++);
}

// ---------------------------------------------------------------- references

const un = (f: (v: number) => number) => (x: Arr) => mapN([x], f);
const bin = (f: (a: number, b: number) => number) => (a: Arr, b: Arr) => mapN([a, b], f);
const sumRef = (axes: number[], keep: boolean) => (x: Arr) =>
  reduceRef(x, axes, keep, (v) => v.reduce((a, b) => a + b, 0));
const lse = (v: number[]) => {
  const m = Math.max(...v);
  return m + Math.log(v.reduce((s, x) => s + Math.exp(x - m), 0));
};
const awayFrom =
  (lo: number, hi: number, gap: number, pts: number[]) =>
  (r: () => number, _i: number, n: number) =>
    Float64Array.from({ length: n }, () => {
      for (;;) {
        const v = lo + (hi - lo) * r();
        if (pts.every((p) => Math.abs(v - p) > gap)) return v;
      }
    });
const uniformIn = (lo: number, hi: number) => (r: () => number, _i: number, n: number) =>
  Float64Array.from({ length: n }, () => lo + (hi - lo) * r());
const sigm = (v: number) => 1 / (1 + Math.exp(-v));

Deno.test("vjp and jvp of every unary op match finite differences", async () => {
  const S = [[3, 5]];
  const cases: Case[] = [
    { name: "neg", shapes: S, f: fg.neg, ref: un((v) => -v) },
    { name: "exp", shapes: S, f: fg.exp, ref: un(Math.exp) },
    { name: "log", shapes: S, f: fg.log, ref: un(Math.log), gen: uniformIn(0.2, 3) },
    { name: "sqrt", shapes: S, f: fg.sqrt, ref: un(Math.sqrt), gen: uniformIn(0.2, 3) },
    {
      name: "rsqrt",
      shapes: S,
      f: fg.rsqrt,
      ref: un((v) => 1 / Math.sqrt(v)),
      gen: uniformIn(0.2, 3),
    },
    { name: "sin", shapes: S, f: fg.sin, ref: un(Math.sin), gen: uniformIn(-4, 4) },
    { name: "cos", shapes: S, f: fg.cos, ref: un(Math.cos), gen: uniformIn(-4, 4) },
    { name: "tanh", shapes: S, f: fg.tanh, ref: un(Math.tanh), gen: uniformIn(-3, 3) },
    { name: "sigmoid", shapes: S, f: fg.sigmoid, ref: un(sigm), gen: uniformIn(-5, 5) },
    { name: "silu", shapes: S, f: fg.silu, ref: un((v) => v * sigm(v)), gen: uniformIn(-5, 5) },
    {
      name: "gelu",
      shapes: S,
      f: fg.gelu,
      ref: un((v) => 0.5 * v * (1 + erf64(v / Math.SQRT2))),
      gen: uniformIn(-3, 3),
    },
    { name: "erf", shapes: S, f: fg.erf, ref: un(erf64), gen: uniformIn(-2, 2) },
    {
      name: "relu",
      shapes: S,
      f: fg.relu,
      ref: un((v) => Math.max(v, 0)),
      gen: awayFrom(-2, 2, 0.05, [0]),
    },
    { name: "abs", shapes: S, f: fg.abs, ref: un(Math.abs), gen: awayFrom(-2, 2, 0.05, [0]) },
    { name: "square", shapes: S, f: fg.square, ref: un((v) => v * v) },
    {
      name: "reciprocal",
      shapes: S,
      f: fg.reciprocal,
      ref: un((v) => 1 / v),
      gen: awayFrom(-3, 3, 0.3, [0]),
    },
    {
      name: "sign (zero grad)",
      shapes: S,
      f: fg.sign,
      ref: un(Math.sign),
      gen: awayFrom(-2, 2, 0.05, [0]),
    },
    {
      name: "floor (zero grad)",
      shapes: S,
      f: fg.floor,
      ref: un(Math.floor),
      gen: awayFrom(-2, 2, 0.05, [-1, 0, 1]),
    },
    {
      name: "clamp",
      shapes: S,
      f: (x) => fg.clamp(x, -0.5, 0.7),
      ref: un((v) => Math.min(Math.max(v, -0.5), 0.7)),
      gen: awayFrom(-2, 2, 0.05, [-0.5, 0.7]),
    },
    {
      name: "affine (add/mul number)",
      shapes: S,
      f: (x) => fg.add(fg.mul(x, -2.5), 3),
      ref: un((v) => -2.5 * v + 3),
    },
    {
      name: "sub/div number",
      shapes: S,
      f: (x) => fg.div(fg.sub(2, x), 4),
      ref: un((v) => (2 - v) / 4),
    },
    {
      name: "number / x",
      shapes: S,
      f: (x) => fg.div(3, x),
      ref: un((v) => 3 / v),
      gen: awayFrom(-3, 3, 0.3, [0]),
    },
    { name: "pow x^3 (negative bases)", shapes: S, f: (x) => fg.pow(x, 3), ref: un((v) => v ** 3) },
    {
      name: "pow x^-2",
      shapes: S,
      f: (x) => fg.pow(x, -2),
      ref: un((v) => v ** -2),
      gen: uniformIn(0.4, 2),
    },
    {
      name: "pow x^0.5",
      shapes: S,
      f: (x) => fg.pow(x, 0.5),
      ref: un(Math.sqrt),
      gen: uniformIn(0.4, 2),
    },
    { name: "pow x^1", shapes: S, f: (x) => fg.pow(x, 1), ref: un((v) => v) },
    {
      name: "comparisons (zero grad)",
      shapes: S,
      f: (x) => fg.add(fg.mul(fg.greater(x, 0.3), 2), fg.lessEqual(x, fg.full([5], -0.2))),
      ref: un((v) => (v > 0.3 ? 2 : 0) + (v <= -0.2 ? 1 : 0)),
      gen: awayFrom(-2, 2, 0.05, [0.3, -0.2]),
    },
    {
      name: "argmax/argmin (zero grad)",
      shapes: S,
      f: (x) => fg.add(fg.argmax(x, 1), fg.argmin(x, 1)),
      ref: (x) =>
        reduceRef(x, [1], false, (v) => v.indexOf(Math.max(...v)) + v.indexOf(Math.min(...v))),
    },
    { name: "pow 2^x", shapes: S, f: (x) => fg.pow(2, x), ref: un((v) => 2 ** v) },
    {
      name: "maximum(x, 0.3)",
      shapes: S,
      f: (x) => fg.maximum(x, 0.3),
      ref: un((v) => Math.max(v, 0.3)),
      gen: awayFrom(-2, 2, 0.05, [0.3]),
    },
    {
      name: "minimum(x, 0.3)",
      shapes: S,
      f: (x) => fg.minimum(x, 0.3),
      ref: un((v) => Math.min(v, 0.3)),
      gen: awayFrom(-2, 2, 0.05, [0.3]),
    },
  ];
  await runCases(cases, 1000);
});

Deno.test("vjp and jvp of binary ops with broadcasting on both sides match finite differences", async () => {
  const ops: [string, (a: Tensor, b: Tensor) => Tensor, (a: number, b: number) => number][] = [
    ["add", fg.add, (a, b) => a + b],
    ["sub", fg.sub, (a, b) => a - b],
    ["mul", fg.mul, (a, b) => a * b],
    ["div", fg.div, (a, b) => a / b],
    ["pow", fg.pow, Math.pow],
    ["maximum", fg.maximum, Math.max],
    ["minimum", fg.minimum, Math.min],
  ];
  const shapePairs = [[[3, 1, 4], [5, 1]], [[], [3, 4]], [[4], [3, 4]], [[2, 3], [2, 3]]];
  const cases: Case[] = [];
  for (const [sa, sb] of shapePairs) {
    for (const [name, f, ref] of ops) {
      cases.push({
        name: `${name} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`,
        shapes: [sa!, sb!],
        f,
        ref: bin(ref),
        gen: name === "div"
          ? (r, i, n) => (i === 0 ? uniformIn(-2, 2)(r, i, n) : uniformIn(0.5, 2)(r, i, n))
          : name === "pow"
          ? (r, i, n) => (i === 0 ? uniformIn(0.5, 2)(r, i, n) : uniformIn(-1.5, 2)(r, i, n))
          : undefined,
      });
    }
  }
  await runCases(cases, 2000);
});

Deno.test("vjp and jvp of where with broadcast cond/a/b match finite differences", async () => {
  const cond = { shape: [3, 1], data: Float64Array.of(1, 0, 1) };
  const condT = T(cond);
  const bRef = { shape: [3, 4], data: Float64Array.from({ length: 12 }, (_, i) => i - 5) };
  const bConst = T(bRef);
  await runCases([
    {
      name: "where [3,1] ? [1,4] : [3,4]",
      shapes: [[1, 4], [3, 4]],
      f: (a, b) => fg.where(condT, a, b),
      ref: (a, b) => mapN([cond, a, b], (c, p, q) => (c ? p : q)),
    },
    {
      name: "where [3,1] ? [] : [4]",
      shapes: [[], [4]],
      f: (a, b) => fg.where(condT, a, b),
      ref: (a, b) => mapN([cond, a, b], (c, p, q) => (c ? p : q)),
    },
    {
      // Only `a` carries a tangent, and it is smaller than the output: the tangent must
      // still broadcast to the output's shape.
      name: "where [3,1] ? [1] : const [3,4]",
      shapes: [[1]],
      f: (a) => fg.where(condT, a, bConst),
      ref: (a) => mapN([cond, a, bRef], (c, p, q) => (c ? p : q)),
    },
  ], 2500);
  // A tangent on cond alone gives a zero tangent of the output's shape.
  const [, tc] = fg.jvp(
    (c: Tensor) => fg.where(c, fg.ones([2]), fg.zeros([3, 2])),
    [fg.ones([1])],
    [fg.ones([1])],
  );
  assert.deepEqual(tc.shape, [3, 2]);
  assert.deepEqual([...await tc.data()], [0, 0, 0, 0, 0, 0]);
  condT.dispose();
});

Deno.test("vjp and jvp of sum/mean/max/min/logSumExp/variance over axes match finite differences", async () => {
  const S = [[3, 4, 5]];
  const cases: Case[] = [];
  for (
    const [axes, keep] of [[[1], false], [[0, 2], true], [[0, 1, 2], false], [[2], true]] as [
      number[],
      boolean,
    ][]
  ) {
    const tag = `${JSON.stringify(axes)} keep=${keep}`;
    cases.push(
      { name: `sum ${tag}`, shapes: S, f: (x) => fg.sum(x, axes, keep), ref: sumRef(axes, keep) },
      {
        name: `mean ${tag}`,
        shapes: S,
        f: (x) => fg.mean(x, axes, keep),
        ref: (x) => reduceRef(x, axes, keep, (v) => v.reduce((a, b) => a + b, 0) / v.length),
      },
      {
        name: `max ${tag}`,
        shapes: S,
        f: (x) => fg.max(x, axes, keep),
        ref: (x) => reduceRef(x, axes, keep, (v) => Math.max(...v)),
      },
      {
        name: `min ${tag}`,
        shapes: S,
        f: (x) => fg.min(x, axes, keep),
        ref: (x) => reduceRef(x, axes, keep, (v) => Math.min(...v)),
      },
      {
        name: `logSumExp ${tag}`,
        shapes: S,
        f: (x) => fg.logSumExp(x, axes, keep),
        ref: (x) => reduceRef(x, axes, keep, lse),
      },
      {
        name: `variance(correction 1) ${tag}`,
        shapes: S,
        f: (x) => fg.variance(x, axes, keep, 1),
        ref: (x) =>
          reduceRef(x, axes, keep, (v) => {
            const m = v.reduce((a, b) => a + b, 0) / v.length;
            return v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1);
          }),
      },
    );
  }
  cases.push({
    name: "Tensor.sum() all",
    shapes: S,
    f: (x) => x.sum(),
    ref: sumRef([0, 1, 2], false),
  });
  await runCases(cases, 3000);
});

Deno.test("max/min with ties share the gradient evenly (vjp and jvp)", async () => {
  const x = fg.tensor([[1, 3, 3, 2], [5, 0, 5, 5]]);
  const g = fg.grad((p: Tensor) => fg.sum(fg.mul(fg.max(p, 1), fg.tensor([1, 6]))))(x);
  // Row 0: two maxima share 1 -> 0.5 each; row 1: three share 6 -> 2 each.
  assert.deepEqual([...await g.data()], [0, 0.5, 0.5, 0, 2, 0, 2, 2]);
  const gm = fg.grad((p: Tensor) => fg.min(p))(fg.tensor([2, -1, 4, -1]));
  assert.deepEqual([...await gm.data()], [0, 0.5, 0, 0.5]);
  const [, t] = fg.jvp((p: Tensor) => fg.max(p, 1), [x], [fg.tensor([[9, 2, 4, 9], [3, 9, 6, 9]])]);
  assert.deepEqual([...await t.data()], [3, 6]);
});

function mmRef(a: Arr, b: Arr, transA: boolean, transB: boolean): Arr {
  return matmulRef(transA ? tlast(a) : a, transB ? tlast(b) : b);
}

Deno.test("vjp and jvp of matmul (transposes, batch broadcasting, 1-D operands) match finite differences", async () => {
  const cases: Case[] = [];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      cases.push({
        name: `matmul tA=${transA} tB=${transB}`,
        shapes: [transA ? [4, 3] : [3, 4], transB ? [5, 4] : [4, 5]],
        f: (a, b) => fg.matmul(a, b, { transA, transB }),
        ref: (a, b) => mmRef(a, b, transA, transB),
      });
    }
  }
  cases.push(
    {
      name: "matmul batched [2,1,3,4] x [3,4,2]",
      shapes: [[2, 1, 3, 4], [3, 4, 2]],
      f: (a, b) => fg.matmul(a, b),
      ref: matmulRef,
    },
    {
      name: "matmul batched transB [2,3,4] x [5,4]",
      shapes: [[2, 3, 4], [5, 4]],
      f: (a, b) => fg.matmul(a, b, { transB: true }),
      ref: (a, b) => mmRef(a, b, false, true),
    },
    {
      name: "matmul batched transA [4,3] x [2,4,5]",
      shapes: [[4, 3], [2, 4, 5]],
      f: (a, b) => fg.matmul(a, b, { transA: true }),
      ref: (a, b) => mmRef(a, b, true, false),
    },
    {
      name: "matmul vector x matrix",
      shapes: [[4], [4, 5]],
      f: (a, b) => fg.matmul(a, b),
      ref: (a, b) => {
        const r = matmulRef({ shape: [1, 4], data: a.data }, b);
        return { shape: [5], data: r.data };
      },
    },
    {
      name: "matmul matrix x vector",
      shapes: [[3, 4], [4]],
      f: (a, b) => fg.matmul(a, b),
      ref: (a, b) => ({ shape: [3], data: matmulRef(a, { shape: [4, 1], data: b.data }).data }),
    },
    {
      name: "matmul dot",
      shapes: [[4], [4]],
      f: (a, b) => fg.matmul(a, b),
      ref: (a, b) => ({ shape: [], data: Float64Array.of(dot(a.data, b.data)) }),
    },
  );
  await runCases(cases, 4000);
});

function sliceRef(x: Arr, begin: number[], size: number[]): Arr {
  const n = numel(size);
  const data = Float64Array.from({ length: n }, (_, i) => {
    const idx = unravel(i, size).map((v, d) => v + begin[d]!);
    return bget(x, idx);
  });
  return { shape: size, data };
}

function concatRef(xs: Arr[], axis: number): Arr {
  const shape = [...xs[0]!.shape];
  shape[axis] = xs.reduce((a, x) => a + x.shape[axis]!, 0);
  const data = Float64Array.from({ length: numel(shape) }, (_, i) => {
    const idx = unravel(i, shape);
    let k = idx[axis]!, j = 0;
    while (k >= xs[j]!.shape[axis]!) k -= xs[j++]!.shape[axis]!;
    idx[axis] = k;
    return bget(xs[j]!, idx);
  });
  return { shape, data };
}

function gatherRef(x: Arr, idx: number[], axis: number): Arr {
  const shape = [...x.shape];
  shape[axis] = idx.length;
  const data = Float64Array.from({ length: numel(shape) }, (_, i) => {
    const o = unravel(i, shape);
    o[axis] = idx[o[axis]!]!;
    return bget(x, o);
  });
  return { shape, data };
}

Deno.test("vjp and jvp of reshape/transpose/broadcastTo/slice/padSlice/pad/concat/stack/split/gather/scatterAdd", async () => {
  const gi = [2, 0, 2, 1, 2];
  const giT = fg.tensor(gi);
  const si = [1, 3, 1, 0];
  const siT = fg.tensor(si);
  const cases: Case[] = [
    {
      name: "reshape",
      shapes: [[3, 4]],
      f: (x) => fg.mul(fg.reshape(x, [2, -1]), fg.tensor([1, 2, 3, 4, 5, 6])),
      ref: (x) =>
        mapN([{ shape: [2, 6], data: x.data }, {
          shape: [6],
          data: Float64Array.of(1, 2, 3, 4, 5, 6),
        }], (a, b) => a * b),
    },
    {
      name: "transpose [2,0,1]",
      shapes: [[2, 3, 4]],
      f: (x) => fg.transpose(x, [2, 0, 1]),
      ref: (x) => {
        const shape = [4, 2, 3];
        return {
          shape,
          data: Float64Array.from({ length: 24 }, (_, i) => {
            const [a, b, c] = unravel(i, shape);
            return x.data[(b! * 3 + c!) * 4 + a!]!;
          }),
        };
      },
    },
    {
      name: "broadcastTo [3,1] -> [2,3,4]",
      shapes: [[3, 1]],
      f: (x) => fg.broadcastTo(x, [2, 3, 4]),
      ref: (x) => ({
        shape: [2, 3, 4],
        data: Float64Array.from({ length: 24 }, (_, i) => bget(x, unravel(i, [2, 3, 4]))),
      }),
    },
    {
      name: "slice",
      shapes: [[4, 5]],
      f: (x) => fg.slice(x, [1, 2], [2, -1]),
      ref: (x) => sliceRef(x, [1, 2], [2, 3]),
    },
    {
      name: "sliceRows",
      shapes: [[4, 5]],
      f: (x) => fg.sliceRows(x, 1, 3),
      ref: (x) => sliceRef(x, [1, 0], [2, 5]),
    },
    {
      name: "padSlice",
      shapes: [[2, 3]],
      f: (x) => fg.padSlice(x, [4, 5], [1, 2]),
      ref: (x) => ({
        shape: [4, 5],
        data: Float64Array.from({ length: 20 }, (_, i) => {
          const [r, c] = unravel(i, [4, 5]);
          return r! >= 1 && r! < 3 && c! >= 2 ? x.data[(r! - 1) * 3 + c! - 2]! : 0;
        }),
      }),
    },
    {
      name: "pad",
      shapes: [[2, 3]],
      f: (x) => fg.pad(x, [[0, 1], [2, 0]]),
      ref: (x) => ({
        shape: [3, 5],
        data: Float64Array.from({ length: 15 }, (_, i) => {
          const [r, c] = unravel(i, [3, 5]);
          return r! < 2 && c! >= 2 ? x.data[r! * 3 + c! - 2]! : 0;
        }),
      }),
    },
    {
      name: "concat axis 1 (3 inputs)",
      shapes: [[2, 3], [2, 1], [2, 2]],
      f: (a, b, c) => fg.concat([a, b, c], 1),
      ref: (a, b, c) => concatRef([a, b, c], 1),
    },
    {
      name: "concat axis 0",
      shapes: [[1, 3], [2, 3]],
      f: (a, b) => fg.concat([a, b], 0),
      ref: (a, b) => concatRef([a, b], 0),
    },
    {
      name: "stack axis 1",
      shapes: [[2, 3], [2, 3]],
      f: (a, b) => fg.stack([a, b], 1),
      ref: (a, b) => {
        const c = concatRef([{ shape: [2, 1, 3], data: a.data }, {
          shape: [2, 1, 3],
          data: b.data,
        }], 1);
        return c;
      },
    },
    {
      name: "split (weighted pieces)",
      shapes: [[2, 6]],
      f: (x) => {
        const [p, q] = fg.split(x, [2, 4], 1);
        return fg.concat([fg.mul(q!, 3), p!], 1);
      },
      ref: (x) => {
        const p = sliceRef(x, [0, 0], [2, 2]);
        const q = mapN([sliceRef(x, [0, 2], [2, 4])], (v) => 3 * v);
        return concatRef([q, p], 1);
      },
    },
    {
      name: "gather axis 1 (repeated indices)",
      shapes: [[2, 3, 2]],
      f: (x) => fg.gather(x, giT, 1),
      ref: (x) => gatherRef(x, gi, 1),
    },
    {
      name: "indexSelect axis 0",
      shapes: [[3, 2]],
      f: (x) => fg.indexSelect(x, giT),
      ref: (x) => gatherRef(x, gi, 0),
    },
    {
      name: "scatterAdd axis 0 (repeated indices)",
      shapes: [[4, 3]],
      f: (x) => fg.scatterAdd(x, siT, 0, 5),
      ref: (x) => {
        const data = new Float64Array(15);
        for (let j = 0; j < 4; j++) {
          for (let c = 0; c < 3; c++) data[si[j]! * 3 + c]! += x.data[j * 3 + c]!;
        }
        return { shape: [5, 3], data };
      },
    },
    {
      name: "expandDims+squeeze",
      shapes: [[3, 4]],
      f: (x) => fg.squeeze(fg.mul(fg.expandDims(x, 1), 2), 1),
      ref: un((v) => 2 * v),
    },
  ];
  await runCases(cases, 5000);
  giT.dispose();
  siT.dispose();
});

Deno.test("vjp and jvp of softmax/logSoftmax/layerNorm/pairwiseSqDist/mse/globalNorm match finite differences", async () => {
  const softmaxRef = (axis: number, log: boolean) => (x: Arr) => {
    const l = reduceRef(x, [axis], true, lse);
    return mapN([x, l], (v, m) => (log ? v - m : Math.exp(v - m)));
  };
  const lnRef = (x: Arr, w?: Arr, b?: Arr) => {
    const mu = reduceRef(x, [1], true, (v) => v.reduce((a, c) => a + c, 0) / v.length);
    const vr = reduceRef(x, [1], true, (v) => {
      const m = v.reduce((a, c) => a + c, 0) / v.length;
      return v.reduce((a, c) => a + (c - m) ** 2, 0) / v.length;
    });
    let y = mapN([x, mu, vr], (v, m, s) => (v - m) / Math.sqrt(s + 1e-5));
    if (w) y = mapN([y, w], (p, q) => p * q);
    if (b) y = mapN([y, b], (p, q) => p + q);
    return y;
  };
  const cases: Case[] = [
    {
      name: "softmax axis -1",
      shapes: [[3, 5]],
      f: (x) => fg.softmax(x),
      ref: softmaxRef(1, false),
    },
    {
      name: "softmax axis 0",
      shapes: [[3, 5]],
      f: (x) => fg.softmax(x, 0),
      ref: softmaxRef(0, false),
    },
    { name: "logSoftmax", shapes: [[3, 5]], f: (x) => fg.logSoftmax(x), ref: softmaxRef(1, true) },
    { name: "layerNorm", shapes: [[3, 6]], f: (x) => fg.layerNorm(x), ref: (x) => lnRef(x) },
    {
      name: "layerNorm weight bias",
      shapes: [[3, 6], [6], [6]],
      f: (x, w, b) => fg.layerNorm(x, w, b),
      ref: lnRef,
    },
    {
      name: "pairwiseSqDist",
      shapes: [[3, 2], [4, 2]],
      f: fg.pairwiseSqDist,
      ref: (a, b) => ({
        shape: [3, 4],
        data: Float64Array.from({ length: 12 }, (_, i) => {
          const r = Math.floor(i / 4), c = i % 4;
          return (a.data[r * 2]! - b.data[c * 2]!) ** 2 +
            (a.data[r * 2 + 1]! - b.data[c * 2 + 1]!) ** 2;
        }),
      }),
    },
    {
      name: "mse",
      shapes: [[3, 4], [3, 4]],
      f: fg.mse,
      ref: (a, b) => ({
        shape: [],
        data: Float64Array.of(a.data.reduce((s, v, i) => s + (v - b.data[i]!) ** 2, 0) / 12),
      }),
    },
    {
      name: "globalNorm",
      shapes: [[3], [2, 2]],
      f: (a, b) => fg.globalNorm([a, b]),
      ref: (a, b) => ({
        shape: [],
        data: Float64Array.of(Math.sqrt(dot(a.data, a.data) + dot(b.data, b.data))),
      }),
    },
  ];
  await runCases(cases, 6000);
});

Deno.test("jvp agrees with vjp: <vjp(u), v> = <u, jvp(v)> on composite functions", async () => {
  const r = rng(77);
  const W = fg.tensor(Float32Array.from(randArray(r, 6 * 5)), [6, 5]);
  const idx = fg.tensor([3, 0, 3, 1]);
  const fs: [string, number[], (x: Tensor) => Tensor][] = [
    [
      "softmax(gelu(layerNorm(x) W)) * tanh(x W)",
      [4, 6],
      (x) => fg.mul(fg.softmax(fg.gelu(fg.matmul(fg.layerNorm(x), W))), fg.tanh(fg.matmul(x, W))),
    ],
    ["max/where/concat/gather", [4, 6], (x) => {
      const m = fg.max(x, 1, true);
      const y = fg.where(fg.greater(x, 0), fg.exp(x), fg.mul(x, m));
      return fg.gather(fg.concat([y, fg.sigmoid(x)], 1), idx, 0);
    }],
    [
      "logSumExp(x Wᵀ-ish) + pairwise",
      [5, 6],
      (x) =>
        fg.add(
          fg.logSumExp(fg.matmul(x, W), 1, true),
          fg.pairwiseSqDist(x, fg.slice(x, [0, 0], [2, 6])),
        ),
    ],
  ];
  for (const [name, shape, f] of fs) {
    const x = fg.tensor(Float32Array.from(randArray(r, numel(shape))), shape);
    const [y, back] = fg.vjp(f, x);
    const u = randArray(r, y.size), v = randArray(r, x.size);
    const gu = await back(fg.tensor(Float32Array.from(u), y.shape)).data();
    const [, jv] = fg.jvp(f, [x], [fg.tensor(Float32Array.from(v), shape)]);
    const lhs = dot(gu, v), rhs = dot(u, await jv.data());
    // Both sides are f32 sums of ~30 products of O(1) terms: agree to ~1e-5 relative.
    const scale = Math.max(1, Math.abs(lhs));
    assert.ok(
      Math.abs(lhs - rhs) <= 1e-4 * scale,
      `${name}: <vjp(u),v> = ${lhs}, <u,jvp(v)> = ${rhs}`,
    );
  }
});

Deno.test("reverse-of-jvp: valueAndGrad of Σ(∂f/∂t)² through a 2-layer tanh MLP matches finite differences", async () => {
  const B = 5, D = 3, H = 8;
  const r = rng(99);
  const init = {
    W1: randArray(r, H * (D + 1)),
    b1: randArray(r, H),
    W2: randArray(r, D * H),
    b2: randArray(r, D),
  };
  const xv = randArray(r, B * D), tv = randArray(r, B, 0, 1);
  const params = {
    W1: fg.tensor(Float32Array.from(init.W1), [H, D + 1]),
    b1: fg.tensor(Float32Array.from(init.b1), [H]),
    layer2: [
      fg.tensor(Float32Array.from(init.W2), [D, H]),
      fg.tensor(Float32Array.from(init.b2), [D]),
    ],
  };
  const x = fg.tensor(Float32Array.from(xv), [B, D]);
  const t = fg.tensor(Float32Array.from(tv), [B, 1]);
  type P = typeof params;
  const f = (p: P, xx: Tensor, tt: Tensor) => {
    const h = fg.tanh(fg.add(fg.matmul(fg.concat([xx, tt], 1), p.W1, { transB: true }), p.b1));
    return fg.add(fg.matmul(h, p.layer2[0]!, { transB: true }), p.layer2[1]!);
  };
  const loss = (p: P) => {
    const [, dfdt] = fg.jvp((tt: Tensor) => f(p, x, tt), [t], [fg.onesLike(t)]);
    return fg.sum(fg.square(dfdt));
  };
  const [val, g] = fg.valueAndGrad(loss)(params);
  // f64 reference: ∂f/∂t[b, d] = Σ_h W2[d, h] (1 − tanh²(z[b, h])) W1[h, D].
  const lossRef = ([W1, b1, W2]: Float64Array[]) => {
    let s = 0;
    for (let b = 0; b < B; b++) {
      const sech2 = new Float64Array(H);
      for (let h = 0; h < H; h++) {
        let z = b1![h]! + W1![h * (D + 1) + D]! * tv[b]!;
        for (let d = 0; d < D; d++) z += W1![h * (D + 1) + d]! * xv[b * D + d]!;
        sech2[h] = 1 - Math.tanh(z) ** 2;
      }
      for (let d = 0; d < D; d++) {
        let df = 0;
        for (let h = 0; h < H; h++) df += W2![d * H + h]! * sech2[h]! * W1![h * (D + 1) + D]!;
        s += df * df;
      }
    }
    return s;
  };
  const xs = [init.W1, init.b1, init.W2, init.b2].map((a) => a.map(Math.fround));
  assertGradClose([await val.item()], [lossRef(xs)], "loss value");
  const fd = fdGrad(lossRef, xs);
  assertGradClose(await g.W1.data(), fd[0]!, "dL/dW1");
  assertGradClose(await g.b1.data(), fd[1]!, "dL/db1");
  assertGradClose(await g.layer2[0]!.data(), fd[2]!, "dL/dW2");
  // b2 does not enter ∂f/∂t: exactly zero.
  assert.deepEqual([...await g.layer2[1]!.data()], [0, 0, 0]);
  assert.ok(
    fd[1]!.some((v) => Math.abs(v) > 1e-3),
    "the test must exercise a non-trivial gradient",
  );
});

Deno.test("valueAndGrad: hasAux, nested trees, a param used twice, an unused param", async () => {
  const p = {
    a: fg.tensor([1, 2]),
    nest: { list: [fg.tensor([3]), fg.tensor([[0.5, -1]])] },
    unused: fg.tensor([7, 7, 7]),
  };
  const f = (q: typeof p): [Tensor, { sq: Tensor }] => {
    const s = fg.mul(q.a, q.a); // a used twice: d/da Σ a² = 2a
    const loss = fg.add(fg.sum(fg.mul(s, q.nest.list[0]!)), fg.sum(fg.mul(q.nest.list[1]!, q.a)));
    return [loss, { sq: s }];
  };
  const [[loss, aux], g] = fg.valueAndGrad(f, { hasAux: true })(p);
  // loss = 3(1 + 4) + (0.5·1 − 1·2) = 13.5
  assert.equal(await loss.item(), 13.5);
  assert.deepEqual([...await aux.sq.data()], [1, 4]);
  assert.deepEqual([...await g.a.data()], [2 * 3 * 1 + 0.5, 2 * 3 * 2 - 1]);
  assert.deepEqual([...await g.nest.list[0]!.data()], [5]);
  assert.deepEqual(g.nest.list[1]!.shape, [1, 2]);
  assert.deepEqual([...await g.nest.list[1]!.data()], [1, 2]);
  assert.deepEqual(g.unused.shape, [3]);
  assert.deepEqual([...await g.unused.data()], [0, 0, 0]);
  // add's vjp passes one cotangent to both inputs; the two gradients must still be
  // separately disposable.
  const q = { a: fg.tensor([1, 2]), b: fg.tensor([3, 4]) };
  const [, gq] = fg.valueAndGrad((r: typeof q) => fg.sum(fg.mul(fg.add(r.a, r.b), 2)))(q);
  assert.notEqual(gq.a, gq.b);
  gq.a.dispose();
  assert.deepEqual([...await gq.b.data()], [2, 2]);
  // A loss that is a param itself: the gradient is 1 and does not alias the param.
  const [v2, g2] = fg.valueAndGrad((w: Tensor) => w)(fg.tensor([4]));
  assert.equal(await v2.item(), 4);
  assert.notEqual(g2, v2);
  assert.deepEqual([...await g2.data()], [1]);
  // The [1, 1]-shaped loss counts as a scalar.
  const [, g3] = fg.valueAndGrad((w: Tensor) => fg.reshape(fg.sum(w), [1, 1]))(fg.tensor([1, 2]));
  assert.deepEqual([...await g3.data()], [1, 1]);
});

Deno.test("valueAndGrad: a non-scalar result is a TypeError naming its shape", () => {
  assert.throws(
    () => fg.valueAndGrad((w: Tensor) => fg.mul(w, 2))(fg.tensor([1, 2, 3])),
    (e: Error) => e instanceof TypeError && e.message.includes("[3]"),
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => fg.valueAndGrad((() => 3) as any)(fg.tensor([1])),
    TypeError,
  );
});

Deno.test("stopGradient and detach block gradients (reverse and forward mode)", async () => {
  const x = fg.tensor([1, 2, 3]);
  // d/dx Σ x·sg(x) = sg(x) = x (not 2x).
  const g = fg.grad((p: Tensor) => fg.sum(fg.mul(p, fg.stopGradient(p))))(x);
  assert.deepEqual([...await g.data()], [1, 2, 3]);
  const g2 = fg.grad((p: Tensor) => fg.sum(fg.mul(p.detach(), p.detach())))(x);
  assert.deepEqual([...await g2.data()], [0, 0, 0]);
  const [, t] = fg.jvp((p: Tensor) => fg.mul(p, fg.stopGradient(p)), [x], [fg.ones([3])]);
  assert.deepEqual([...await t.data()], [1, 2, 3]);
});

Deno.test("grad and vjp: basic contracts", async () => {
  const g = fg.grad((p: Tensor) => fg.sum(fg.exp(p)))(fg.tensor([0, 1]));
  assertGradClose(await g.data(), [1, Math.E], "grad exp");
  const [y, back] = fg.vjp((p) => fg.mul(p, p), fg.tensor([1, -2, 3]));
  assert.deepEqual([...await y.data()], [1, 4, 9]);
  assert.deepEqual([...await back(fg.tensor([1, 1, 2])).data()], [2, -4, 12]);
  // The pullback can be called twice with different cotangents.
  assert.deepEqual([...await back(fg.tensor([0, 1, 0])).data()], [0, -4, 0]);
  // jvp with several primals and a tree output.
  const [out, tan] = fg.jvp(
    (a: Tensor, b: Tensor) => ({ s: fg.mul(a, b), d: [fg.sub(a, b)] }),
    [fg.tensor([1, 2]), fg.tensor([3, 4])],
    [fg.tensor([1, 0]), fg.tensor([0, 1])],
  );
  assert.deepEqual([...await out.s.data()], [3, 8]);
  assert.deepEqual([...await tan.s.data()], [3, 2]);
  assert.deepEqual([...await tan.d[0]!.data()], [1, -1]);
  assert.throws(() => fg.jvp((a: Tensor) => a, [fg.tensor([1, 2])], [fg.tensor([1])]), RangeError);
});

for (const backend of ["cpu", "wasm"] as const) {
  Deno.test({
    name:
      `slices' cotangents written by region equal the padded sum (${backend}: split, gaps, overlaps, nesting)`,
    ignore: backend === "wasm" && !HAS_WASM,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => sliceCotangents(backend),
  });
}

async function sliceCotangents(backend: "cpu" | "wasm"): Promise<void> {
  fg.setBackend(backend);
  // Freed arrays full of NaN first: an assembled cotangent that leaves a gap unwritten shows.
  for (let i = 0; i < 4; i++) fg.full([256, 6], NaN).dispose();
  // f(x) = Σ c·p² over pieces p of x [256, 6] (past the wasm backend's small-array size) plus Σ d·x: the gradient is 2·c·p in each piece's
  // box (summed where boxes overlap) plus d, in f64.
  const r = rng(7);
  const xs = Float64Array.from({ length: 1536 }, () => r() * 2 - 1);
  const d = Float64Array.from({ length: 1536 }, () => r() * 2 - 1);
  const boxes = [
    // a split of columns [0, 6) (disjoint, covering) …
    { b: [0, 0], s: [256, 1], c: 0.5 },
    { b: [0, 1], s: [256, 2], c: -1.5 },
    { b: [0, 3], s: [256, 3], c: 2 },
  ];
  const cases: { name: string; boxes: typeof boxes; dense: boolean; nested?: boolean }[] = [
    { name: "covering split", boxes, dense: false },
    { name: "covering split + dense use", boxes, dense: true },
    { name: "gaps", boxes: [boxes[0]!, { b: [1, 3], s: [200, 2], c: 3 }], dense: false },
    {
      name: "overlaps",
      boxes: [{ b: [0, 0], s: [100, 4], c: 1 }, { b: [50, 2], s: [206, 4], c: -2 }],
      dense: true,
    },
    // Cut from a slice of columns [1, 6): the inner slices' cotangents reach x through it.
    { name: "slice of a slice", boxes: [boxes[1]!, boxes[2]!], dense: false, nested: true },
  ];
  for (const k of cases) {
    const x = fg.tensor(Float32Array.from(xs), [256, 6]);
    const dT = fg.tensor(Float32Array.from(d), [256, 6]);
    const [v, g] = fg.valueAndGrad((p: Tensor) => {
      const src = k.nested ? fg.slice(p, [0, 1], [256, 5]) : p;
      let s: Tensor = k.dense ? fg.sum(fg.mul(p, dT)) : fg.tensor(0);
      for (const { b, s: sz, c } of k.boxes) {
        const piece = fg.slice(src, k.nested ? [b[0]!, b[1]! - 1] : b, sz);
        s = fg.add(s, fg.mul(fg.sum(fg.mul(piece, piece)), c));
      }
      return s;
    })(x);
    const want = new Float64Array(1536);
    if (k.dense) want.set(d);
    for (const { b, s: sz, c } of k.boxes) {
      for (let i = b[0]!; i < b[0]! + sz[0]!; i++) {
        for (let j = b[1]!; j < b[1]! + sz[1]!; j++) want[i * 6 + j]! += 2 * c * xs[i * 6 + j]!;
      }
    }
    assertGradClose(await g.data(), want, k.name);
    v.dispose();
    g.dispose();
  }
  // Under an outer tape (grad of a gradient) the slices run their vjp, which is differentiable:
  // d/dx Σ (∂f/∂x)² for f = Σ c·p² is 8·c²·x inside each piece's box.
  const x = fg.tensor(Float32Array.from(xs), [256, 6]);
  const [, gg] = fg.valueAndGrad((p: Tensor) => {
    const [, inner] = fg.valueAndGrad((q: Tensor) => {
      const [a, b2, c3] = fg.split(q, [1, 2, 3], 1) as [Tensor, Tensor, Tensor];
      return fg.add(
        fg.add(fg.mul(fg.sum(fg.mul(a, a)), 0.5), fg.mul(fg.sum(fg.mul(b2, b2)), -1.5)),
        fg.mul(fg.sum(fg.mul(c3, c3)), 2),
      );
    })(p);
    return fg.sum(fg.mul(inner, inner));
  })(x);
  const cOf = (j: number) => (j < 1 ? 0.5 : j < 3 ? -1.5 : 2);
  assertGradClose(
    await gg.data(),
    Float64Array.from(xs, (v, i) => 8 * cOf(i % 6) ** 2 * v),
    "grad of grad through split",
  );
  fg.setBackend("cpu");
}

// A rule recorded with `accumulates` gets, for the inputs it lists, their cotangents so far and
// returns the totals (the fused LayerNorm backward's way to add the residual stream's gradient).
// Here f(a, b) = 2a + 3b, accumulating both: with x passed as a and as b, and x's other use
// recorded after f (so its cotangent exists when f's rule runs), x must get 2 + 3 + 5 = 10 once
// each, not the earlier 5 twice; an input the rule does not list gets null and the tape's add.
Deno.test("an accumulating vjp rule gets the listed inputs' cotangents so far, a repeated input once", async () => {
  const { attachRules, binary } = await import("../../lib/tensor.ts");
  const seen: ((number | null)[] | undefined)[] = [];
  const f = (a: Tensor, b: Tensor, list: number[]) => {
    const out = fg.add(a.mul(2), b.mul(3)).detach();
    attachRules(out, [a, b], {
      accumulates: list,
      vjp: (g, _need, acc) => {
        // Each given cotangent by its first value.
        seen.push(acc?.map((t) => (t ? t.dataSync()[0]! : null)));
        const own = [g.mul(2), g.mul(3)];
        return own.map((o, i) => (acc?.[i] ? binary("add", acc[i]!, o) : o));
      },
    });
    return out;
  };
  const x = fg.tensor([1, 2]), y = fg.tensor([3, 4]);
  for (const list of [[0, 1], [1], []]) {
    seen.length = 0;
    const [gx, gy] = fg.grad(([p, q]: Tensor[]) =>
      f(p!, p!, list).sum().add(p!.mul(5).sum()).add(f(q!, p!, list).sum())
    )([x, y]);
    // x: 2 + 3 from the first f, 5 from its own use, 3 from the second f; y: 2.
    assert.deepEqual([...await gx!.data()], [13, 13], `list [${list}]`);
    assert.deepEqual([...await gy!.data()], [2, 2], `list [${list}]`);
    // The second f's rule runs first (reverse order), when nothing is gathered yet for p;
    // the first f's then sees x's cotangent at its first position only, if listed.
    assert.deepEqual(seen[0], list.length ? [null, null] : undefined, `list [${list}] 2nd f`);
    const firstListed = list.includes(0) ? 5 + 3 : null;
    assert.deepEqual(
      seen[1],
      list.length ? [firstListed, null] : undefined,
      `list [${list}] 1st f`,
    );
  }
});
