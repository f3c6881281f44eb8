/**
 * @file Every Backend method on WebGPU against the CPU backend (the living spec), over
 * random shapes whose axes take sizes 1, 7, 33, 257 and 1000 (bounded total size), with
 * broadcasting and non-contiguous strides; then composite ops and their gradients through
 * the Tensor API, and the RNG streams bit for bit.
 *
 * Tolerances (|gpu − cpu| <= atol + rtol·|cpu|), per op:
 * - exact (rtol 0, atol 0): copies, fill, gather, scatterAdd (same summation order), where,
 *   comparisons, max/min/argmax/argmin, relu/abs/neg/sign/floor/square, add/sub/mul,
 *   random uniform and bits.
 * - f32 elementwise (rtol 1e-5, atol 1e-6): div, reciprocal, sqrt, rsqrt, affine, clamp.
 * - transcendental (rtol 2e-5, atol 2e-6): exp, log, sin, cos, tanh, sigmoid, silu, gelu,
 *   geluTanh, erf, pow; the GPU's exp/log/sin/cos may be a few ulp off (Vulkan allows more).
 * - sums (rtol 1e-5, atol 1e-5·√n): the CPU accumulates in f64, the GPU in f32 (Kahan or
 *   pairwise).
 * - matmul (rtol 1e-4, atol 1e-5·√k): f64 vs f32 accumulation.
 * - random normal (atol 1e-5): log/cos in f32 vs f64.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type Backend,
  backendByName,
  getBackend,
  layerNorm,
  logSumExp,
  matmul,
  randn,
  setBackend,
  softmax,
  type Tensor,
  tensor,
  tidy,
  type UnaryOp,
  valueAndGrad,
} from "../../mod.ts";
import { gather, scatterAdd } from "../../mod.ts";
import { assertClose, binaryOn, CPU, HAS_WEBGPU, unaryOn, whereOn } from "../_helpers.ts";
import type { Storage } from "../../lib/backend/backend.ts";
import type { Expr } from "../../lib/ir.ts";
import { broadcastStrides, stridesOf } from "../../lib/shape.ts";

const GPU = backendByName("webgpu") as Backend;
const SIZES = [1, 7, 33, 257, 1000];
const MAX_ELEMS = 60_000;

/** A seeded JS PRNG (mulberry32), independent of the engine's Philox. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function randShape(r: () => number, maxRank = 4, max = MAX_ELEMS): number[] {
  for (;;) {
    const rank = 1 + Math.floor(r() * maxRank);
    const s = Array.from({ length: rank }, () => SIZES[Math.floor(r() * SIZES.length)]!);
    if (prod(s) <= max) return s;
  }
}

function randData(r: () => number, n: number, lo = -3, hi = 3): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/** Upload the same data to both backends. */
function both(data: Float32Array): [Storage, Storage] {
  return [GPU.upload(data), CPU.upload(data)];
}

async function check(
  gpu: Storage,
  cpu: Storage,
  tol: { rtol: number; atol: number },
  msg: string,
): Promise<void> {
  const g = await GPU.read(gpu), c = await CPU.read(cpu);
  assertClose(g, c, { ...tol, msg });
  GPU.free(gpu);
  CPU.free(cpu);
}

const EXACT = { rtol: 0, atol: 0 };
const F32 = { rtol: 1e-5, atol: 1e-6 };
const TRANS = { rtol: 2e-5, atol: 2e-6 };

const UNARY_TOL: Record<UnaryOp, { rtol: number; atol: number }> = {
  neg: EXACT,
  exp: TRANS,
  log: TRANS,
  sqrt: F32,
  rsqrt: F32,
  sin: TRANS,
  cos: TRANS,
  tanh: TRANS,
  sigmoid: TRANS,
  silu: TRANS,
  gelu: TRANS,
  geluTanh: TRANS,
  geluTanhGrad: TRANS,
  relu: EXACT,
  abs: EXACT,
  sign: EXACT,
  square: EXACT,
  reciprocal: F32,
  floor: EXACT,
  erf: TRANS,
  affine: F32,
  powScalar: TRANS,
  clamp: EXACT,
  gtScalar: EXACT,
  geScalar: EXACT,
  ltScalar: EXACT,
  leScalar: EXACT,
  eqScalar: EXACT,
  isNan: EXACT,
  copy: EXACT,
};

const POSITIVE = new Set<UnaryOp>(["log", "sqrt", "rsqrt"]);

Deno.test({
  name: "WebGPUBackend.elementwise matches the CPU backend for every unary op",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(1);
    for (const op of Object.keys(UNARY_TOL) as UnaryOp[]) {
      const n = SIZES[Math.floor(r() * SIZES.length)]! * 7;
      const data = POSITIVE.has(op) ? randData(r, n, 0.01, 5) : randData(r, n);
      // Exact-valued points exercise comparisons, sign and floor at their edges.
      data[0] = 0;
      if (n > 2) data[1] = 1;
      if (n > 3 && !POSITIVE.has(op)) data[2] = -2;
      if (op === "isNan" && n > 4) data[3] = NaN;
      const p0 = op === "powScalar" ? 3 : op === "clamp" ? -1 : 1;
      const p1 = op === "clamp" ? 1.5 : 0.25;
      const [g, c] = both(data);
      await check(unaryOn(GPU, op, g, p0, p1), unaryOn(CPU, op, c, p0, p1), UNARY_TOL[op], op);
      GPU.free(g);
      CPU.free(c);
    }
    // pow with a fractional exponent on positive inputs, and NaN for negative bases.
    const [g, c] = both(Float32Array.from([0.5, 2, 3, -2]));
    await check(
      unaryOn(GPU, "powScalar", g, 1.5, 0),
      unaryOn(CPU, "powScalar", c, 1.5, 0),
      TRANS,
      "pow",
    );
  },
});

/** Random broadcast operands of `outShape`, some stored transposed (non-contiguous). */
function operand(
  r: () => number,
  outShape: readonly number[],
): { data: Float32Array; strides: number[] } {
  const rank = outShape.length;
  const drop = Math.floor(r() * rank);
  const shape = outShape.slice(drop).map((d) => (r() < 0.3 ? 1 : d));
  const data = randData(r, prod(shape));
  const strides = broadcastStrides(shape, outShape);
  if (r() < 0.4 && shape.length >= 2) {
    // Store it transposed in its last two axes and read it back through permuted strides.
    const k = shape.length;
    const tShape = [...shape.slice(0, k - 2), shape[k - 1]!, shape[k - 2]!];
    const tStr = stridesOf(tShape);
    const tData = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      let rem = i, off = 0;
      for (let d = k - 1; d >= 0; d--) {
        const c = rem % shape[d]!;
        rem = Math.floor(rem / shape[d]!);
        const td = d === k - 1 ? k - 2 : d === k - 2 ? k - 1 : d;
        off += c * tStr[td]!;
      }
      tData[off] = data[i]!;
    }
    const s2 = [...tStr.slice(0, k - 2), tStr[k - 1]!, tStr[k - 2]!].map((v, d) =>
      shape[d] === 1 ? 0 : v
    );
    const out = new Array<number>(rank).fill(0);
    for (let d = 0; d < k; d++) out[drop + d] = outShape[drop + d] === 1 ? 0 : s2[d]!;
    return { data: tData, strides: out };
  }
  return { data, strides };
}

Deno.test({
  name: "WebGPUBackend.elementwise: binary ops and where broadcast like the CPU backend",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(2);
    const ops = [
      ["add", EXACT],
      ["sub", EXACT],
      ["mul", EXACT],
      ["div", F32],
      ["pow", TRANS],
      ["maximum", EXACT],
      ["minimum", EXACT],
      ["eq", EXACT],
      ["ne", EXACT],
      ["lt", EXACT],
      ["le", EXACT],
      ["gt", EXACT],
      ["ge", EXACT],
    ] as const;
    for (const [op, tol] of ops) {
      for (let rep = 0; rep < 3; rep++) {
        const shape = randShape(r);
        const a = operand(r, shape), b = operand(r, shape);
        if (op === "eq" || op === "ne") {
          b.data.set(a.data.subarray(0, Math.min(a.data.length, b.data.length)));
        }
        const [ga, ca] = both(a.data), [gb, cb] = both(b.data);
        await check(
          binaryOn(GPU, op, ga, a.strides, gb, b.strides, shape),
          binaryOn(CPU, op, ca, a.strides, cb, b.strides, shape),
          tol,
          `${op} [${shape}] a:${a.strides} b:${b.strides}`,
        );
        for (const s of [ga, gb]) GPU.free(s);
      }
    }
    for (let rep = 0; rep < 4; rep++) {
      const shape = randShape(r);
      const c = operand(r, shape), a = operand(r, shape), b = operand(r, shape);
      c.data.forEach((v, i) => (c.data[i] = v > 0 ? 1 : 0));
      const [gc, cc] = both(c.data), [ga, ca] = both(a.data), [gb, cb] = both(b.data);
      await check(
        whereOn(GPU, gc, c.strides, ga, a.strides, gb, b.strides, shape),
        whereOn(CPU, cc, c.strides, ca, a.strides, cb, b.strides, shape),
        EXACT,
        `where [${shape}]`,
      );
    }
    // A rank-0 output.
    const [g1, c1] = both(Float32Array.from([2])), [g2, c2] = both(Float32Array.from([5]));
    await check(
      binaryOn(GPU, "sub", g1, [], g2, [], []),
      binaryOn(CPU, "sub", c1, [], c2, [], []),
      EXACT,
      "rank 0",
    );
  },
});

Deno.test({
  name: "WebGPUBackend.elementwise evaluates expression DAGs like the CPU backend",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(3);
    const x0: Expr = { kind: "input", index: 0 }, x1: Expr = { kind: "input", index: 1 };
    const shared: Expr = { kind: "binary", op: "mul", a: x0, b: x1 };
    const outs: Expr[] = [
      { kind: "unary", op: "tanh", x: shared, p0: 0, p1: 0 },
      { kind: "binary", op: "add", a: shared, b: { kind: "const", value: 0.5 } },
      {
        kind: "where",
        c: { kind: "binary", op: "gt", a: x0, b: x1 },
        a: x0,
        b: { kind: "unary", op: "affine", x: x1, p0: 2, p1: -1 },
      },
      x1,
    ];
    const shape = [33, 257];
    const a = operand(r, shape), b = operand(r, shape);
    const [ga, ca] = both(a.data), [gb, cb] = both(b.data);
    const g = GPU.elementwise(outs, [ga, gb], [a.strides, b.strides], shape);
    const c = CPU.elementwise(outs, [ca, cb], [a.strides, b.strides], shape);
    for (let i = 0; i < outs.length; i++) await check(g[i]!, c[i]!, TRANS, `fused out ${i}`);
    // Constants are parameters, not source: new values reuse the compiled pipeline.
    const stats = () => (GPU as unknown as { stats(): { pipelines: number } }).stats();
    const step = (lr: number): Expr => ({
      kind: "binary",
      op: "sub",
      a: x0,
      b: { kind: "unary", op: "affine", x: x1, p0: lr, p1: 0 },
    });
    GPU.free(GPU.elementwise([step(0.1)], [ga, gb], [a.strides, b.strides], shape)[0]!);
    const before = stats().pipelines;
    for (const lr of [0.2, 0.3]) {
      const g1 = GPU.elementwise([step(lr)], [ga, gb], [a.strides, b.strides], shape);
      const c1 = CPU.elementwise([step(lr)], [ca, cb], [a.strides, b.strides], shape);
      await check(g1[0]!, c1[0]!, F32, `fused lr ${lr}`);
    }
    assert.equal(stats().pipelines, before);
    // More buffers than one kernel may bind: evaluated op by op, same values.
    const many = 40;
    let sum: Expr = { kind: "input", index: 0 };
    for (let i = 1; i < many; i++) {
      sum = { kind: "binary", op: "add", a: sum, b: { kind: "input", index: i } };
    }
    const gIns = Array.from({ length: many }, (_, i) => (i % 2 ? ga : gb));
    const cIns = Array.from({ length: many }, (_, i) => (i % 2 ? ca : cb));
    const sts = Array.from({ length: many }, (_, i) => (i % 2 ? a.strides : b.strides));
    await check(
      GPU.elementwise([sum, x0], gIns, sts, shape)[0]!,
      CPU.elementwise([sum, x0], cIns, sts, shape)[0]!,
      EXACT,
      "fused with 40 inputs",
    );
    // An input no expression reads must still bind.
    const g2 = GPU.elementwise([x1], [ga, gb], [a.strides, b.strides], shape);
    const c2 = CPU.elementwise([x1], [ca, cb], [a.strides, b.strides], shape);
    await check(g2[0]!, c2[0]!, EXACT, "unused input");
  },
});

Deno.test({
  name: "WebGPUBackend.reduce matches the CPU backend over random axis sets, ties and NaN",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(4);
    for (let rep = 0; rep < 24; rep++) {
      const shape = randShape(r, 4, 300_000);
      const rank = shape.length;
      let axes = [...Array(rank).keys()].filter(() => r() < 0.5);
      if (axes.length === 0) axes = [Math.floor(r() * rank)];
      const n = prod(shape);
      // Small integers make many ties for argmax/argmin; a few NaNs test propagation.
      const data = rep % 3 === 0
        ? Float32Array.from({ length: n }, () => Math.floor(r() * 5))
        : randData(r, n);
      if (rep % 4 === 1) { for (let i = 0; i < 3; i++) data[Math.floor(r() * n)] = NaN; }
      const [g, c] = both(data);
      const redN = prod(axes.map((a) => shape[a]!));
      for (const op of ["sum", "max", "min", "argmax", "argmin"] as const) {
        const tol = op === "sum" ? { rtol: 1e-5, atol: 1e-5 * Math.sqrt(redN) * 3 } : EXACT;
        await check(
          GPU.reduce(op, g, shape, axes),
          CPU.reduce(op, c, shape, axes),
          tol,
          `${op} [${shape}] axes ${axes}`,
        );
      }
      GPU.free(g);
      CPU.free(c);
    }
  },
});

Deno.test({
  name: "WebGPUBackend.matmul matches the CPU backend with transposes and batch broadcasting",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(5);
    const dims = [1, 7, 33, 257];
    for (let rep = 0; rep < 16; rep++) {
      const pick = () => dims[Math.floor(r() * dims.length)]!;
      const m = pick(), n = pick(), k = pick();
      const batch = r() < 0.5 ? 1 : 3;
      if (batch * (m * k + k * n + m * n) > 200_000) continue;
      const transA = r() < 0.5, transB = r() < 0.5;
      const aBatch = batch > 1 && r() < 0.7 ? m * k : 0;
      const bBatch = batch > 1 && (aBatch === 0 || r() < 0.7) ? k * n : 0;
      const a = randData(r, aBatch ? batch * m * k : m * k);
      const b = randData(r, bBatch ? batch * k * n : k * n);
      const g = { batch, m, n, k, transA, transB, aBatchStride: aBatch, bBatchStride: bBatch };
      const [ga, ca] = both(a), [gb, cb] = both(b);
      await check(GPU.matmul(ga, gb, g), CPU.matmul(ca, cb, g), {
        rtol: 1e-4,
        atol: 1e-5 * Math.sqrt(k) * 3,
      }, `matmul ${JSON.stringify(g)}`);
    }
  },
});

Deno.test({
  name: "WebGPUBackend.copyInto, fill, iota and upload/read match the CPU backend",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(6);
    for (let rep = 0; rep < 10; rep++) {
      const shape = randShape(r, 3);
      const rank = shape.length;
      // Source: a slice of a bigger array, read through permuted strides.
      const big = shape.map((d) => d + Math.floor(r() * 3));
      const perm = [...Array(rank).keys()].sort(() => r() - 0.5);
      const permBig = perm.map((p) => big[p]!);
      const pst = stridesOf(permBig);
      const sStr = new Array<number>(rank);
      perm.forEach((p, i) => (sStr[p] = pst[i]!));
      const start = big.map((b, d) => Math.floor(r() * (b - shape[d]! + 1)));
      const sOff = start.reduce((a, s, d) => a + s * sStr[d]!, 0);
      const src = randData(r, prod(big));
      // Destination: a window of a bigger zero array.
      const dBig = shape.map((d) => d + 2);
      const dStr = stridesOf(dBig);
      const dOff = dStr.reduce((a, s) => a + s, 0);
      const [gs, cs] = both(src);
      const gd = GPU.fill(prod(dBig), 0), cd = CPU.fill(prod(dBig), 0);
      const dv = { shape, strides: dStr, offset: dOff },
        sv = { shape, strides: sStr, offset: sOff };
      GPU.copyInto(gd, dv, gs, sv);
      CPU.copyInto(cd, dv, cs, sv);
      await check(gd, cd, EXACT, `copyInto [${shape}]`);
    }
    // copyInto within one storage (dst and src alias).
    const d = randData(r, 64);
    const [g, c] = both(d);
    const v1 = { shape: [32], strides: [1], offset: 0 },
      v2 = { shape: [32], strides: [1], offset: 32 };
    GPU.copyInto(g, v1, g, v2);
    CPU.copyInto(c, v1, c, v2);
    await check(g, c, EXACT, "aliasing copyInto");
    // NaN payloads and -0 survive fill and copies bit for bit.
    const f = await GPU.read(GPU.fill(5, -0));
    assert.ok(Object.is(f[4], -0));
    await check(GPU.fill(1000, 3.25), CPU.fill(1000, 3.25), EXACT, "fill");
    await check(GPU.iota(1000, -2, 0.5), CPU.iota(1000, -2, 0.5), EXACT, "iota");
    await check(GPU.iota(257, 0.1, 1 / 3), CPU.iota(257, 0.1, 1 / 3), F32, "iota fractional");
    const data = randData(r, 1000);
    assertClose(await GPU.read(GPU.upload(data)), data, EXACT);
    assert.equal((await GPU.read(GPU.upload(new Float32Array(0)))).length, 0);
  },
});

Deno.test({
  name: "WebGPUBackend.gather and scatterAdd match the CPU backend",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const r = rng(7);
    for (let rep = 0; rep < 10; rep++) {
      const shape = randShape(r, 3);
      const axis = Math.floor(r() * shape.length);
      const dim = shape[axis]!;
      const nIdx = 1 + Math.floor(r() * 40);
      const idx = Float32Array.from({ length: nIdx }, () => Math.floor(r() * dim));
      const [gx, cx] = both(randData(r, prod(shape)));
      const [gi, ci] = both(idx);
      await check(
        GPU.gather(gx, shape, axis, gi),
        CPU.gather(cx, shape, axis, ci),
        EXACT,
        `gather [${shape}] axis ${axis}`,
      );
      // scatterAdd is gather's adjoint: repeated indices accumulate in index order.
      const srcShape = [...shape];
      srcShape[axis] = nIdx;
      const [gs, cs] = both(randData(r, prod(srcShape)));
      await check(
        GPU.scatterAdd(gs, srcShape, axis, gi, dim),
        CPU.scatterAdd(cs, srcShape, axis, ci, dim),
        EXACT,
        `scatterAdd [${srcShape}] axis ${axis} into ${dim}`,
      );
    }
    // Out-of-range or fractional indices never touch memory out of bounds.
    const gx = GPU.upload(Float32Array.from([1, 2, 3]));
    const gi = GPU.upload(Float32Array.from([5, -1, 1.5, 2]));
    const g = await GPU.read(GPU.gather(gx, [3], 0, gi));
    assert.ok(g.slice(0, 3).every(Number.isNaN));
    assert.equal(g[3], 3);
    const s = await GPU.read(
      GPU.scatterAdd(GPU.upload(Float32Array.from([1, 2, 3, 4])), [4], 0, gi, 3),
    );
    assert.deepEqual([...s], [0, 0, 4]);
  },
});

Deno.test({
  name: "WebGPUBackend.random matches the CPU streams: bits and uniform exactly, normal to 1e-5",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    // A counter near 2^32 exercises the carry into the high word.
    const st = { key: [0x12345678, 42] as const, counter: [0xfffffff0, 3] as const };
    for (const size of [1, 7, 1001]) {
      const gb = await GPU.read(GPU.random("bits", size, st));
      const cb = await CPU.read(CPU.random("bits", size, st));
      assert.deepEqual(new Uint32Array(gb.buffer), new Uint32Array(cb.buffer));
      const gu = await GPU.read(GPU.random("uniform", size, st));
      const cu = await CPU.read(CPU.random("uniform", size, st));
      assert.deepEqual(new Uint32Array(gu.buffer), new Uint32Array(cu.buffer));
      const gn = await GPU.read(GPU.random("normal", size, st));
      const cn = await CPU.read(CPU.random("normal", size, st));
      assertClose(gn, cn, { rtol: 0, atol: 1e-5, msg: `normal ${size}` });
    }
  },
});

/** Run `f` with the default backend set to `name`, restoring the previous one. */
async function on<T>(name: "cpu" | "webgpu", f: () => Promise<T>): Promise<T> {
  const prev = getBackend().name;
  setBackend(name);
  try {
    return await f();
  } finally {
    setBackend(prev);
  }
}

Deno.test({
  name: "Tensor API on WebGPU: composite ops and their gradients match the CPU backend",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const run = async () => {
      const x = randn([33, 7], { seed: 1 });
      const w = randn([7, 257], { seed: 2 });
      const idx = tensor([3, 0, 3, 32, 5]);
      const f = (p: { x: Tensor; w: Tensor }) => {
        const h = matmul(p.x, p.w);
        const s = softmax(h, -1);
        const ln = layerNorm(h);
        const lse = logSumExp(h, 1);
        const g = gather(ln, idx, 0);
        const sc = scatterAdd(g, idx, 0, 40);
        return s.square().sum().add(lse.mean()).add(sc.tanh().sum());
      };
      const [v, grads] = valueAndGrad(f)({ x, w });
      const out = {
        v: await v.data(),
        gx: await grads.x.data(),
        gw: await grads.w.data(),
        sm: await tidy(() => softmax(matmul(x, w), 0)).data(),
      };
      for (const t of [v, grads.x, grads.w, x, w, idx]) t.dispose();
      return out;
    };
    const cpu = await on("cpu", run);
    const gpu = await on("webgpu", run);
    const tol = { rtol: 1e-4, atol: 1e-5 };
    assertClose(gpu.v, cpu.v, { ...tol, msg: "value" });
    assertClose(gpu.gx, cpu.gx, { ...tol, msg: "grad x" });
    assertClose(gpu.gw, cpu.gw, { ...tol, msg: "grad w" });
    assertClose(gpu.sm, cpu.sm, { ...tol, msg: "softmax axis 0" });
  },
});

Deno.test({
  name: "WebGPUBackend 1-D kernels cover more than 65535 workgroups (2-D grid)",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const n = 65535 * 256 + 1000;
    const x = GPU.iota(n, 0, 1);
    const y = unaryOn(GPU, "affine", x, 1, 1);
    const out = await GPU.read(y);
    assert.equal(out.length, n);
    // Every element past the first grid row was written (f32 holds these integers exactly
    // up to 2^24; beyond that compare against the f32 rounding of the same value).
    for (const i of [0, 65535 * 256 - 1, 65535 * 256, n - 1]) {
      assert.equal(out[i], Math.fround(Math.fround(i) + 1), `element ${i}`);
    }
    GPU.free(x);
    GPU.free(y);
  },
});

Deno.test({
  name: "WebGPUBackend elementwise ops treat NaN, ±0 and ±Infinity like the CPU backend",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const sp = [NaN, Infinity, -Infinity, 0, -0, 1, -2.5];
    const a = Float32Array.from(sp.flatMap((x) => sp.map(() => x)));
    const b = Float32Array.from(sp.flatMap(() => sp));
    const n = a.length;
    const [ga, ca] = both(a), [gb, cb] = both(b);
    for (
      const op of [
        "add",
        "sub",
        "mul",
        "maximum",
        "minimum",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
      ] as const
    ) {
      await check(
        binaryOn(GPU, op, ga, [1], gb, [1], [n]),
        binaryOn(CPU, op, ca, [1], cb, [1], [n]),
        EXACT,
        op,
      );
    }
    for (
      const op of [
        "neg",
        "abs",
        "relu",
        "sign",
        "square",
        "floor",
        "copy",
        "isNan",
        "gtScalar",
        "eqScalar",
      ] as const
    ) {
      await check(unaryOn(GPU, op, ga, 0, 0), unaryOn(CPU, op, ca, 0, 0), EXACT, op);
    }
    // pow(±0, y): WGSL leaves it undefined; the CPU gives +inf for y < 0 and 0 for y > 0.
    const [gz, cz] = both(Float32Array.from([0, -0, 2]));
    for (const y of [-2, -1, 3]) {
      await check(
        unaryOn(GPU, "powScalar", gz, y, 0),
        unaryOn(CPU, "powScalar", cz, y, 0),
        EXACT,
        `pow ${y}`,
      );
    }
    await check(
      whereOn(GPU, ga, [1], gb, [1], ga, [1], [n]),
      whereOn(CPU, ca, [1], cb, [1], ca, [1], [n]),
      EXACT,
      "where",
    );
  },
});
