import { strict as assert } from "node:assert";
import {
  type Backend,
  backendByName,
  binary,
  jvp,
  linear,
  type LinearActivation,
  matmul,
  nn,
  setBackend,
  type Tensor,
  tensor,
  unary,
  valueAndGrad,
} from "../../mod.ts";
import { assertClose, CPU, HAS_WEBGPU } from "../_helpers.ts";
import type { WebGPUBackend } from "../../lib/backend/webgpu.ts";
import type { Expr } from "../../lib/ir.ts";

const GPU = backendByName("webgpu") as Backend | undefined;
const BACKENDS: Backend[] = [CPU, ...(HAS_WEBGPU && GPU ? [GPU] : [])];

// When no adapter exists the WebGPU half of every comparison below is skipped: say so here
// (ignored, with the reason) instead of passing silently on the CPU alone.
Deno.test({
  name: "linear epilogue tests compare the WebGPU backend too (ignored: no WebGPU adapter)",
  ignore: !HAS_WEBGPU,
  fn: () => assert.ok(BACKENDS.includes(GPU!)),
});
const ACTS: (LinearActivation | null)[] = [null, "silu", "gelu", "relu", "tanh", "sigmoid"];

function randData(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const o = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    o[i] = s / 2 ** 31 - 1;
  }
  return o;
}

/** The unfused composite linear layer: three ops. */
function composite(x: Tensor, w: Tensor, b: Tensor | null, act: LinearActivation | null) {
  let y = matmul(x, w, { transB: true });
  if (b) y = binary("add", y, b);
  return act ? unary(act, y) : y;
}

async function onBackend<T>(be: Backend, fn: () => Promise<T>): Promise<T> {
  setBackend(be.name);
  try {
    return await fn();
  } finally {
    setBackend("cpu");
  }
}

/** Plain-JS reference for x·wᵀ + b (f64), independent of every backend. */
function refAffine(
  x: Float32Array,
  w: Float32Array,
  b: Float32Array | null,
  rows: number,
  nIn: number,
  nOut: number,
) {
  const o = new Float64Array(rows * nOut);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < nOut; j++) {
      let s = b ? b[j]! : 0;
      for (let p = 0; p < nIn; p++) s += x[i * nIn + p]! * w[j * nIn + p]!;
      o[i * nOut + j] = s;
    }
  }
  return o;
}

Deno.test("linear forward matches matmul + add + act and a plain-JS affine map on every backend", async () => {
  // [batch shape, in, out]: odd sizes 1, 7, 33, 257 on every axis, 2-D and 3-D inputs.
  const cases: [number[], number, number][] = [
    [[1], 7, 33],
    [[7], 33, 1],
    [[33], 257, 7],
    [[257], 1, 33],
    [[3, 7], 33, 7],
    [[2, 1], 7, 257],
  ];
  for (const be of BACKENDS) {
    let c = 0;
    for (const act of ACTS) {
      for (const withBias of [true, false]) {
        const [lead, nIn, nOut] = cases[c++ % cases.length]!;
        const rows = lead.reduce((p, q) => p * q, 1);
        const xd = randData(rows * nIn, 1 + c), wd = randData(nOut * nIn, 100 + c);
        const bd = withBias ? randData(nOut, 200 + c) : null;
        const [got, want] = await onBackend(be, async () => {
          const x = tensor(xd, [...lead, nIn]), w = tensor(wd, [nOut, nIn]);
          const b = bd ? tensor(bd, [nOut]) : null;
          const y = linear(x, w, b, { activation: act });
          assert.deepEqual(y.shape, [...lead, nOut]);
          const z = composite(x, w, b, act);
          const r = [await y.data(), await z.data()];
          for (const t of [x, w, b, y, z]) t?.dispose();
          return r;
        });
        const msg = `${be.name} ${act} bias=${withBias} ${lead}x${nIn}->${nOut}`;
        assertClose(got!, want!, { rtol: 1e-5, atol: 1e-5, msg });
        if (act === null) {
          assertClose(got!, refAffine(xd, wd, bd, rows, nIn, nOut), {
            rtol: 1e-4,
            atol: 1e-4,
            msg,
          });
        }
      }
    }
  }
});

Deno.test("linear vjp and jvp equal those of the composite matmul + add + act", async () => {
  const lead = [3, 5], nIn = 7, nOut = 33, rows = 15;
  const xd = randData(rows * nIn, 5), wd = randData(nOut * nIn, 6), bd = randData(nOut, 7);
  const cd = randData(rows * nOut, 8);
  const txd = randData(rows * nIn, 9), twd = randData(nOut * nIn, 10), tbd = randData(nOut, 11);
  for (const be of BACKENDS) {
    for (const act of ACTS) {
      const run = (fused: boolean) =>
        onBackend(be, async () => {
          const x = tensor(xd, [...lead, nIn]), w = tensor(wd, [nOut, nIn]);
          const b = tensor(bd, [nOut]), ct = tensor(cd, [...lead, nOut]);
          const f = (p: Tensor[]) =>
            (fused
              ? linear(p[0]!, p[1]!, p[2]!, { activation: act })
              : composite(p[0]!, p[1]!, p[2]!, act)).mul(ct).sum();
          const [v, g] = valueAndGrad(f)([x, w, b]);
          const tx = tensor(txd, x.shape), tw = tensor(twd, w.shape), tb = tensor(tbd, [nOut]);
          const [y, ty] = jvp(
            (x: Tensor, w: Tensor, b: Tensor) =>
              fused ? linear(x, w, b, { activation: act }) : composite(x, w, b, act),
            [x, w, b],
            [tx, tw, tb],
          );
          const out = [
            await v.data(),
            ...(await Promise.all(g.map((t) => t.data()))),
            await ty.data(),
          ];
          for (const t of [x, w, b, ct, v, ...g, tx, tw, tb, y, ty]) t.dispose();
          return out;
        });
      const got = await run(true), want = await run(false);
      for (let i = 0; i < got.length; i++) {
        const what = ["value", "dx", "dw", "db", "jvp"][i];
        assertClose(got[i]!, want[i]!, {
          rtol: 1e-4,
          atol: 1e-5,
          msg: `${be.name} ${act} ${what}`,
        });
      }
    }
  }
});

Deno.test("linear gradient matches central finite differences of a plain-JS silu layer", () => {
  // Independent of every op rule: d/dθ Σ c·silu(x·wᵀ + b) by differences in f64.
  const nIn = 3, nOut = 4, rows = 2;
  const xd = randData(rows * nIn, 21), wd = randData(nOut * nIn, 22), bd = randData(nOut, 23);
  const cd = randData(rows * nOut, 24);
  const loss = (w: Float64Array) => {
    let s = 0;
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < nOut; j++) {
        let z = bd[j]!;
        for (let p = 0; p < nIn; p++) z += xd[i * nIn + p]! * w[j * nIn + p]!;
        s += cd[i * nOut + j]! * z / (1 + Math.exp(-z));
      }
    }
    return s;
  };
  const w64 = Float64Array.from(wd), fd = new Float64Array(w64.length);
  for (let i = 0; i < w64.length; i++) {
    const w0 = w64[i]!;
    w64[i] = w0 + 1e-5;
    const p = loss(w64);
    w64[i] = w0 - 1e-5;
    const m = loss(w64);
    w64[i] = w0;
    fd[i] = (p - m) / 2e-5;
  }
  const x = tensor(xd, [rows, nIn]), w = tensor(wd, [nOut, nIn]), b = tensor(bd, [nOut]);
  const c = tensor(cd, [rows, nOut]);
  const [v, [gw]] = valueAndGrad((p: Tensor[]) =>
    linear(x, p[0]!, b, { activation: "silu" }).mul(c).sum()
  )([w]);
  assertClose(CPU.readSync!(gw!.storage), fd, { rtol: 1e-3, atol: 1e-4, msg: "dw" });
  for (const t of [x, w, b, c, v, gw!]) t.dispose();
});

Deno.test("Backend.matmul with an epilogue equals matmul then the same elementwise expression", async () => {
  // Expressions over the accumulator (input 0) and row vectors (inputs 1..): a bias, every
  // activation linear offers, act(acc + bias), and two rows with a constant and a clamp.
  const acc: Expr = { kind: "input", index: 0 }, r1: Expr = { kind: "input", index: 1 };
  const r2: Expr = { kind: "input", index: 2 };
  const biasAdd: Expr = { kind: "binary", op: "add", a: acc, b: r1 };
  const un = (op: LinearActivation, x: Expr): Expr => ({ kind: "unary", op, x, p0: 0, p1: 0 });
  const exprs: [string, Expr, number][] = [
    ["bias", biasAdd, 1],
    ...ACTS.filter((a) => a !== null).map((a): [string, Expr, number] => [a!, un(a!, acc), 0]),
    ...ACTS.filter((a) => a !== null).map((a): [string, Expr, number] => [
      `${a}+bias`,
      un(a!, biasAdd),
      1,
    ]),
    ["clamp(acc·r1 + r2 − 0.5)", {
      kind: "unary",
      op: "clamp",
      x: {
        kind: "binary",
        op: "sub",
        a: { kind: "binary", op: "add", a: { kind: "binary", op: "mul", a: acc, b: r1 }, b: r2 },
        b: { kind: "const", value: 0.5 },
      },
      p0: -1,
      p1: 1.25,
    }, 2],
  ];
  const geoms = [
    { batch: 1, m: 33, n: 7, k: 5, transA: false, transB: true, aBatchStride: 0, bBatchStride: 0 },
    {
      batch: 3,
      m: 4,
      n: 16,
      k: 9,
      transA: false,
      transB: false,
      aBatchStride: 36,
      bBatchStride: 0,
    },
    { batch: 1, m: 5, n: 8, k: 0, transA: false, transB: false, aBatchStride: 0, bBatchStride: 0 },
  ];
  let seed = 300;
  for (const be of BACKENDS) {
    for (const g of geoms) {
      const a = be.upload(randData(Math.max(1, g.batch * g.m * g.k), seed++));
      const b = be.upload(randData(Math.max(1, g.k * g.n), seed++));
      const rows = [be.upload(randData(g.n, seed++)), be.upload(randData(g.n, seed++))];
      for (const [name, expr, nRows] of exprs) {
        const rs = rows.slice(0, nRows);
        const got = be.matmul(a, b, g, { expr, rows: rs });
        const plain = be.matmul(a, b, g);
        const [want] = be.elementwise(
          [expr],
          [plain, ...rs],
          [[g.n, 1], ...rs.map(() => [0, 1])],
          [g.batch * g.m, g.n],
        );
        assertClose(await be.read(got), await be.read(want!), {
          rtol: 1e-6,
          atol: 1e-6,
          msg: `${be.name} ${name} ${JSON.stringify(g)}`,
        });
        for (const st of [got, plain, want!]) be.free(st);
      }
      for (const st of [a, b, ...rows]) be.free(st);
    }
  }
});

Deno.test("linear rejects bad shapes and activations with messages naming the input", () => {
  const x = tensor(randData(6, 1), [2, 3]), w = tensor(randData(12, 2), [4, 3]);
  assert.throws(() => linear(x, tensor([1, 2, 3])), /linear weight w to be a 2-D/);
  assert.throws(() => linear(x, tensor(randData(8, 3), [4, 2])), /end in 2 features/);
  assert.throws(() => linear(x, w, tensor([1, 2])), /linear bias b to have shape \[4\]/);
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => linear(x, w, null, { activation: "softplus" as any }),
    /linear activation/,
  );
  x.dispose();
  w.dispose();
});

Deno.test({
  name: "linear forward with bias and activation is one dispatch on WebGPU",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    await onBackend(GPU!, async () => {
      const x = tensor(randData(33 * 7, 41), [33, 7]), w = tensor(randData(257 * 7, 42), [257, 7]);
      const b = tensor(randData(257, 43), [257]);
      for (const act of ACTS) {
        const before = (GPU as WebGPUBackend).stats().dispatches;
        const y = linear(x, w, b, { activation: act });
        assert.equal((GPU as WebGPUBackend).stats().dispatches - before, 1, `dispatches (${act})`);
        await y.data();
        y.dispose();
      }
      for (const t of [x, w, b]) t.dispose();
    });
  },
});

Deno.test({
  name: "nn.MLP forward runs each Linear + activation as one dispatch on WebGPU",
  ignore: !HAS_WEBGPU,
  fn: async () => {
    await onBackend(GPU!, async () => {
      const mlp = new nn.MLP([2, 33, 33, 1], "silu", { seed: 0 });
      const x = tensor(randData(14, 51), [7, 2]);
      const before = (GPU as WebGPUBackend).stats().dispatches;
      const y = mlp.forward(x);
      // Three Linear layers, the two silus fused: three dispatches (seven unfused).
      assert.equal((GPU as WebGPUBackend).stats().dispatches - before, 3);
      await y.data();
      for (const t of [x, y, ...mlp.parameters()]) t.dispose();
    });
  },
});
