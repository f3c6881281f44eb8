/**
 * @file The WebGPU fast paths added for the toy flow-matching training step, each against
 * the CPU backend (the living spec) or an independent plain-JS loop:
 * - row-vector broadcasts in elementwise kernels (`row4`/`row` input modes: a bias added to a
 *   [B, C] matrix), inside vec4 kernels and inside kernels with a strided input;
 * - leading-axis column sums (`reduceColsKernel`: bias gradients), vec4 and scalar, with and
 *   without Kahan compensation;
 * - one-kernel vjps of silu, sigmoid, tanh and gelu (the op table's derivative as one
 *   elementwise kernel in `unary`'s vjp), first and
 *   second order, and the dispatch count they save;
 * - a seeded 30-step toy CFM training run (VelocityMLP + Adam + cfmLoss) whose loss curve on
 *   WebGPU matches the CPU's.
 *
 * Tolerances (|gpu − cpu| <= atol + rtol·|cpu|): adds exact; column sums rtol 1e-5,
 * atol 1e-5·√R (f32 vs f64 accumulation); activation vjps rtol 2e-5, atol 2e-6 (a few ulp
 * of exp/erf); the loss curve rtol 1e-4 (observed 5e-7: matmuls accumulate in a different order, and 30 Adam
 * steps carry the differences forward).
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type Backend,
  backendByName,
  cfmLoss,
  Generator,
  grad,
  nn,
  optim,
  sampleToy,
  setBackend,
  type Tensor,
  tensor,
  unary,
  valueAndGrad,
  vjp,
} from "../../mod.ts";
import { assertClose, binaryOn, CPU, HAS_WEBGPU, whereOn } from "../_helpers.ts";
import { broadcastStrides, stridesOf } from "../../lib/shape.ts";
import type { UnaryOp } from "../../lib/ir.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";

const GPU = backendByName("webgpu") as Backend;

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
function randData(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 4 - 2);
}

async function onGpu(
  data: Float32Array[],
  f: (s: ReturnType<Backend["upload"]>[]) => ReturnType<Backend["upload"]>,
): Promise<Float32Array> {
  const ins = data.map((d) => GPU.upload(d));
  const out = f(ins);
  const r = await GPU.read(out);
  for (const s of [...ins, out]) GPU.free(s);
  return r;
}

Deno.test({
  name: "WebGPUBackend.elementwise reads a broadcast row vector (row4/row modes) exactly",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    // [rows..., C] + [C]: C % 4 == 0 (row4, vec4 loads), odd C (row, per-component loads),
    // a rank-3 output that collapses to [6, 8], and a tail that is not a multiple of 4.
    const cases: [number[], number[]][] = [
      [[256, 256], [256]],
      [[33, 8], [8]],
      [[7, 3], [3]],
      [[9, 2], [2]],
      [[5, 6], [1, 6]],
      [[2, 3, 8], [8]],
      [[3, 1, 5], [5]],
    ];
    let seed = 1;
    for (const [shape, rowShape] of cases) {
      const a = randData(prod(shape), seed++), b = randData(prod(rowShape), seed++);
      for (const op of ["add", "mul", "sub"] as const) {
        const aSt = stridesOf(shape), bSt = broadcastStrides(rowShape, shape);
        const got = await onGpu([a, b], ([x, y]) => binaryOn(GPU, op, x!, aSt, y!, bSt, shape));
        // Reversed operand order: the row is input 0.
        const rev = await onGpu([b, a], ([y, x]) => binaryOn(GPU, op, y!, bSt, x!, aSt, shape));
        const C = rowShape[rowShape.length - 1]!;
        const want = new Float32Array(a.length), wantRev = new Float32Array(a.length);
        for (let i = 0; i < a.length; i++) {
          const x = a[i]!, y = b[i % C]!;
          want[i] = op === "add" ? x + y : op === "mul" ? x * y : x - y;
          wantRev[i] = op === "add" ? y + x : op === "mul" ? y * x : y - x;
        }
        assertClose(got, want, { rtol: 0, atol: 0, msg: `${op} [${shape}] + [${rowShape}]` });
        assertClose(rev, wantRev, { rtol: 0, atol: 0, msg: `${op} [${rowShape}] + [${shape}]` });
      }
    }
  },
});

Deno.test({
  name: "WebGPUBackend.elementwise mixes a row vector with strided and scalar inputs",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    // A transposed input forces the scalar (non-vec4) kernel; the row is read at i % C there
    // (C = 12) or i & (C − 1) (C = 16, a power of two).
    for (const C of [12, 16]) {
      const shape = [9, C];
      const x = randData(9 * C, 11), row = randData(C, 12), s = new Float32Array([0.5]);
      const xT = [1, 9]; // x stored as [C, 9], read transposed
      const rowSt = [0, 1], sSt = [0, 0];
      const expr = {
        kind: "binary" as const,
        op: "mul" as const,
        a: {
          kind: "binary" as const,
          op: "add" as const,
          a: { kind: "input" as const, index: 0 },
          b: { kind: "input" as const, index: 1 },
        },
        b: { kind: "input" as const, index: 2 },
      };
      const ins = [x, row, s].map((d) => GPU.upload(d));
      const [out] = GPU.elementwise([expr], ins, [xT, rowSt, sSt], shape);
      const got = await GPU.read(out!);
      const cIns = [x, row, s].map((d) => CPU.upload(d));
      const [cOut] = CPU.elementwise([expr], cIns, [xT, rowSt, sSt], shape);
      const want = await CPU.read(cOut!);
      assertClose(got, want, { rtol: 0, atol: 0, msg: `fused strided + row + scalar, C = ${C}` });
      // where(cond row, a, b) in a vec4 kernel.
      const cond = Float32Array.from({ length: C }, (_, i) => (i % 3 === 0 ? 1 : 0));
      const cb = GPU.upload(cond), ab = GPU.upload(x), bb = GPU.upload(new Float32Array([-7]));
      const w = await GPU.read(whereOn(GPU, cb, rowSt, ab, stridesOf(shape), bb, sSt, shape));
      for (let i = 0; i < w.length; i++) {
        assert.equal(w[i], cond[i % C] ? x[i] : -7, `where element ${i} (C = ${C})`);
      }
      for (const st of [...ins, out!, cb, ab, bb]) GPU.free(st);
      for (const st of [...cIns, cOut!]) CPU.free(st);
    }
  },
});

Deno.test({
  name: "WebGPUBackend.reduce sums the leading axis of a matrix (column kernel) like f64 loops",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    // [R, C] over axis 0 (vec4 and scalar columns, short and Kahan-long loops), and a rank-3
    // input whose leading axes merge into one reduced run.
    const cases: [number[], number[]][] = [
      [[256, 256], [0]],
      [[1024, 256], [0]],
      [[7, 3], [0]],
      [[300, 4], [0]],
      [[1, 12], [0]],
      [[5000, 8], [0]],
      [[2, 3, 8], [0, 1]],
    ];
    let seed = 100;
    for (const [shape, axes] of cases) {
      const x = randData(prod(shape), seed++);
      const C = shape[shape.length - 1]!, R = x.length / C;
      const got = await onGpu([x], ([s]) => GPU.reduce("sum", s!, shape, axes));
      const want = new Float64Array(C);
      for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) want[c]! += x[r * C + c]!;
      assertClose(got, want, {
        rtol: 1e-5,
        atol: 1e-5 * Math.sqrt(R),
        msg: `sum [${shape}] over [${axes}]`,
      });
    }
  },
});

Deno.test({
  name: "WebGPUBackend.matmul memoises per geometry: alternating shapes stay correct",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    // Pairs that differ in one size's 16-byte alignment, which decides vec4 bindings: a memo
    // keyed without that size would hand the second geometry the first one's vec4 kernel and
    // read misaligned rows. (A wrong grid alone would still be correct: the kernels loop.)
    const geoms = [
      { batch: 1, m: 8, n: 16, k: 12, transA: true, transB: false },
      { batch: 1, m: 9, n: 16, k: 12, transA: true, transB: false },
      { batch: 1, m: 8, n: 16, k: 12, transA: false, transB: false },
      { batch: 1, m: 8, n: 18, k: 12, transA: false, transB: false },
      { batch: 1, m: 8, n: 16, k: 12, transA: false, transB: true },
      { batch: 1, m: 8, n: 16, k: 13, transA: false, transB: true },
      { batch: 3, m: 5, n: 16, k: 12, transA: false, transB: true },
      { batch: 1, m: 8, n: 16, k: 12, transA: true, transB: false },
    ];
    let seed = 500;
    for (const gm of geoms) {
      const a = randData(gm.batch * gm.m * gm.k, seed++), b = randData(gm.n * gm.k, seed++);
      const g = { ...gm, aBatchStride: gm.batch > 1 ? gm.m * gm.k : 0, bBatchStride: 0 };
      const got = await onGpu([a, b], ([x, y]) => GPU.matmul(x!, y!, g));
      const want = new Float64Array(gm.batch * gm.m * gm.n);
      for (let z = 0; z < gm.batch; z++) {
        for (let i = 0; i < gm.m; i++) {
          for (let j = 0; j < gm.n; j++) {
            let acc = 0;
            for (let p = 0; p < gm.k; p++) {
              const ai = gm.transA ? p * gm.m + i : i * gm.k + p;
              const bi = gm.transB ? j * gm.k + p : p * gm.n + j;
              acc += a[z * gm.m * gm.k + ai]! * b[bi]!;
            }
            want[(z * gm.m + i) * gm.n + j] = acc;
          }
        }
      }
      assertClose(got, want, { rtol: 1e-4, atol: 1e-5, msg: `matmul ${JSON.stringify(gm)}` });
    }
  },
});

const ACTS: UnaryOp[] = ["silu", "sigmoid", "tanh", "gelu"];

Deno.test({
  name: "unary vjp of silu/sigmoid/tanh/gelu runs fused on WebGPU and matches the CPU",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const x0 = randData(64 * 40, 7), w0 = randData(64 * 40, 8);
    for (const op of ACTS) {
      const run = async (be: Backend) => {
        setBackend(be.name);
        try {
          const x = tensor(x0, [64, 40]), w = tensor(w0, [64, 40]);
          const g = grad((x: Tensor) => unary(op, x).mul(w).sum())(x);
          const r = await g.data();
          for (const t of [x, w, g]) t.dispose();
          return r;
        } finally {
          setBackend("cpu");
        }
      };
      const want = await run(CPU), got = await run(GPU);
      assertClose(got, want, { rtol: 2e-5, atol: 2e-6, msg: `d${op}` });
    }
    // The backward of each activation is one dispatch (silu's was six).
    setBackend("webgpu");
    try {
      const x = tensor(x0, [64, 40]), ct = tensor(w0, [64, 40]);
      for (const op of ACTS) {
        const [y, back] = vjp((x) => unary(op, x), x);
        const before = (GPU as WebGPUBackend).stats().dispatches;
        const g = back(ct);
        const used = (GPU as WebGPUBackend).stats().dispatches - before;
        assert.equal(used, 1, `dispatches of the ${op} vjp`);
        y.dispose();
        g.dispose();
      }
      x.dispose();
      ct.dispose();
    } finally {
      setBackend("cpu");
    }
  },
});

Deno.test({
  name: "unary vjp stays exact for second derivatives (fused falls back to ops)",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    // d²/dx² Σ act(x), against central differences of the first derivative, which is itself
    // checked against the CPU above.
    const xs = new Float32Array([-2.5, -0.7, 0.1, 0.9, 2.2]);
    const h = 1e-2;
    for (const op of ACTS) {
      setBackend("webgpu");
      try {
        const d1 = (x: Tensor) => grad((x: Tensor) => unary(op, x).sum())(x);
        const d2 = grad((x: Tensor) => d1(x).sum());
        const x = tensor(xs);
        const got = await d2(x).data();
        const xp = tensor(xs.map((v) => v + h)), xm = tensor(xs.map((v) => v - h));
        const [gp, gm] = [await d1(xp).data(), await d1(xm).data()];
        const fd = gp.map((v, i) => (v - gm[i]!) / (2 * h));
        assertClose(got, fd, { rtol: 2e-3, atol: 2e-3, msg: `d²${op}` });
      } finally {
        setBackend("cpu");
      }
    }
  },
});

async function lossCurve(be: Backend, steps: number): Promise<number[]> {
  setBackend(be.name);
  try {
    const gen = new Generator(0);
    const model = new nn.VelocityMLP({ dim: 2, hidden: 64, depth: 3, seed: 1 });
    const params = model.parameters();
    const opt = new optim.Adam({ lr: 3e-3 });
    const lossOf = (_p: typeof params, x1: Tensor) =>
      cfmLoss((x, t) => model.forward(x, t), x1, { generator: gen }).loss;
    const out: number[] = [];
    for (let i = 0; i < steps; i++) {
      const x1 = sampleToy("8gaussians", 128, gen);
      const [loss, grads] = valueAndGrad(lossOf)(params, x1);
      opt.step(params, grads);
      out.push(await loss.item());
      loss.dispose();
      grads.forEach((g) => g.dispose());
      x1.dispose();
    }
    params.forEach((p) => p.dispose());
    return out;
  } finally {
    setBackend("cpu");
  }
}

Deno.test({
  name: "a seeded 30-step toy CFM run has the same loss curve on WebGPU as on the CPU",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    const cpu = await lossCurve(CPU, 30);
    const gpu = await lossCurve(GPU, 30);
    assertClose(gpu, cpu, { rtol: 1e-4, atol: 0, msg: "loss curve" });
    // The run trains: the last losses are below the first (so the curve is not constant).
    const head = cpu.slice(0, 5).reduce((a, b) => a + b) / 5;
    const tail = cpu.slice(-5).reduce((a, b) => a + b) / 5;
    assert.ok(tail < head, `expected the loss to fall but found ${head} -> ${tail}`);
  },
});
