/**
 * @file The fused gated residual (`gatedResidual`: x + g·a with g [B, D] broadcast over the
 * tokens; `Backend.gatedResidualBackward`) on every backend here: its forward and the gradients
 * of x, g and a against (a) the composite (`gatedResidualComposite`, a broadcast multiply then an
 * add) on the CPU backend and (b) central finite differences of an f64 plain-JS function; forward
 * mode and second order against the composite; the backend method against an f64 model on 1 and
 * 2 wasm threads (and every call split), with the same bits on each; clear errors for mismatched
 * shapes; a DiT step unchanged by the switch.
 *
 * Shapes: the DiT bench's [64, 49, 128] (the `wasm` kernel's 4-vector column blocks), D = 20
 * (a block of 4 vectors and one left over), D not a multiple of 4 (the CPU loops), one token,
 * one sample, and a [B, D] input.
 *
 * Tolerances: the forward and da are one f32 multiply (and add) per element, so they are equal
 * bit for bit to the composite on every backend. dg sums T products: f64 on the CPU (the same
 * bits as the composite's reduce), f32 in token order on `wasm`, so |Δ| ≤ 1e-5·max|ref| there
 * (49 terms of f32 rounding each ≲ 6e-8 relative to the largest partial sum). Against f64 finite
 * differences (h = 1e-6: error ≈ 1e-10) the f32 gradient is allowed 1e-5 relative to the largest
 * entry plus 1e-5 relative to each.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type BackendName,
  gatedResidual,
  gatedResidualComposite,
  getBackend,
  grad,
  jvp,
  randn,
  setBackend,
  type Tensor,
  tensor,
} from "../../mod.ts";
import { _fusedGatedResidual } from "../../lib/ops/gated.ts";
import { createWasmBackend } from "../../lib/backend/wasm.ts";
import { assertDitStepUnchanged } from "../_dit_switch.ts";
import { assertClose, BACKENDS_HERE, HAS_WASM } from "../_helpers.ts";
import { fdGrad, fdJvp } from "../_fd.ts";

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, msg: string, frac: number) {
  assertClose(got, want, { rtol: frac, atol: Math.max(frac * maxAbs(want), 1e-7), msg });
}

function same(got: ArrayLike<number>, want: ArrayLike<number>, msg: string) {
  assert.equal(got.length, want.length, `${msg}: length`);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Object.is(got[i], want[i]), `${msg} [${i}]: ${got[i]} vs ${want[i]}`);
  }
}

async function onEachBackend(fn: (name: BackendName) => Promise<void>): Promise<void> {
  const prev = getBackend().name as BackendName;
  try {
    for (const b of BACKENDS_HERE) {
      setBackend(b);
      await fn(b);
    }
  } finally {
    setBackend(prev);
  }
}

/** out = x + g·a in f64 (x, a [b, t, d] flat; g [b, d] flat). */
function gatedF64(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  a: ArrayLike<number>,
  b: number,
  t: number,
  d: number,
): Float64Array {
  const y = new Float64Array(b * t * d);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < t; j++) {
      for (let c = 0; c < d; c++) {
        const o = (i * t + j) * d + c;
        y[o] = x[o]! + g[i * d + c]! * a[o]!;
      }
    }
  }
  return y;
}

type Case = { shape: number[]; name: string };
const CASES: Case[] = [
  { shape: [64, 49, 128], name: "DiT [64, 49, 128]" },
  { shape: [3, 5, 20], name: "D = 20 [3, 5, 20]" },
  { shape: [3, 5, 7], name: "odd D [3, 5, 7]" },
  { shape: [4, 1, 12], name: "one token [4, 1, 12]" },
  { shape: [1, 49, 8], name: "one sample [1, 49, 8]" },
  { shape: [1, 1, 5], name: "[1, 1, 5]" },
  { shape: [3, 10], name: "rank 2 [3, 10]" },
];

const geo = (shape: number[]) => ({
  b: shape[0]!,
  t: shape.length === 3 ? shape[1]! : 1,
  d: shape[shape.length - 1]!,
});

function inputs(shape: number[], seed: number) {
  const { b, d } = geo(shape);
  const x = randn(shape, { seed });
  const g = randn([b, d], { seed: seed + 1 }).mul(0.5);
  const a = randn(shape, { seed: seed + 2 }).mul(1.3);
  const w = randn(shape, { seed: seed + 3 });
  return { x, g, a, w };
}

type Op = typeof gatedResidual;
const loss = (op: Op, w: Tensor) => ([x, g, a]: Tensor[]) => op(x!, g!, a!).mul(w).sum();

Deno.test("gatedResidual: forward and the x, g, a gradients equal the CPU composite's on every backend", async () => {
  for (const { shape, name } of CASES) {
    const { b, d } = geo(shape);
    const host = await (async () => {
      setBackend("cpu");
      const { x, g, a, w } = inputs(shape, shape.length * 10 + shape[0]!);
      const arrays = await Promise.all([x, g, a, w].map((t) => t.data()));
      const y = await gatedResidualComposite(x, g, a).data();
      const gr = grad(loss(gatedResidualComposite, w))([x, g, a]);
      return { arrays, y, g: await Promise.all(gr.map((t) => t.data())) };
    })();
    await onEachBackend(async (be) => {
      const [x, g, a, w] = host.arrays.map((v, i) => tensor(v, i === 1 ? [b, d] : shape)) as [
        Tensor,
        Tensor,
        Tensor,
        Tensor,
      ];
      const y = gatedResidual(x, g, a);
      assert.deepEqual([...y.shape], shape);
      same(await y.data(), host.y, `${be} ${name} y`);
      const gr = await Promise.all(grad(loss(gatedResidual, w))([x, g, a]).map((t) => t.data()));
      same(gr[0]!, host.g[0]!, `${be} ${name} dx`);
      same(gr[2]!, host.g[2]!, `${be} ${name} da`);
      if (be === "cpu") same(gr[1]!, host.g[1]!, `${be} ${name} dg`);
      else close(gr[1]!, host.g[1]!, `${be} ${name} dg`, 1e-5);
      for (const v of host.g) assert.ok(maxAbs(v) > 1e-2, `${name}: non-zero reference`);
    });
  }
  setBackend("cpu");
});

Deno.test("gatedResidual: gradients equal f64 central finite differences on every backend", async () => {
  for (const { shape, name } of CASES) {
    const { b, t, d } = geo(shape);
    setBackend("cpu");
    const { x, g, a, w } = inputs(shape, 7 + shape[0]!);
    const [xa, ga, aa, wa] = await Promise.all([x, g, a, w].map((u) => u.data()));
    // Sample i's outputs depend on its own x, g and a only; the DiT shape checks the first and
    // the last sample.
    const samples = b > 8 ? [0, b - 1] : [...Array(b).keys()];
    const want: number[][] = [[], [], []], idx: number[][] = [[], [], []];
    for (const i of samples) {
      const xr = [i * t * d, (i + 1) * t * d], pr = [i * d, (i + 1) * d];
      const wi = wa!.subarray(xr[0], xr[1]);
      const f = (xs: Float64Array[]) => {
        const y = gatedF64(xs[0]!, xs[1]!, xs[2]!, 1, t, d);
        let s = 0;
        for (let k = 0; k < y.length; k++) s += y[k]! * wi[k]!;
        return s;
      };
      const parts = [
        xa!.subarray(xr[0], xr[1]),
        ga!.subarray(pr[0], pr[1]),
        aa!.subarray(xr[0], xr[1]),
      ];
      fdGrad(f, parts.map((v) => Float64Array.from(v))).forEach((gk, k) => {
        const lo = k === 1 ? pr[0]! : xr[0]!;
        gk.forEach((v, c) => {
          want[k]!.push(v);
          idx[k]!.push(lo + c);
        });
      });
    }
    const yRef = gatedF64(xa!, ga!, aa!, b, t, d);
    await onEachBackend(async (be) => {
      const [xt, gt, at, wt] = [xa, ga, aa, wa].map((v, i) =>
        tensor(v!, i === 1 ? [b, d] : shape)
      ) as [Tensor, Tensor, Tensor, Tensor];
      close(await gatedResidual(xt, gt, at).data(), yRef, `${be} ${name} y (f64)`, 1e-6);
      const gr = await Promise.all(
        grad(loss(gatedResidual, wt))([xt, gt, at]).map((u) => u.data()),
      );
      ["dx", "dg", "da"].forEach((what, k) => {
        close(idx[k]!.map((i) => gr[k]![i]!), want[k]!, `${be} ${name} ${what} (FD)`, 1e-5);
      });
    });
  }
  setBackend("cpu");
});

Deno.test("gatedResidual: forward mode equals the composite's and f64 differences; second order equals the composite's", async () => {
  await onEachBackend(async (be) => {
    const shape = [2, 3, 6], { b, t, d } = geo(shape);
    const { x, g, a, w } = inputs(shape, 11);
    const tx = randn(shape, { seed: 20 }), tg = randn([b, d], { seed: 21 });
    const ta = randn(shape, { seed: 22 });
    const f = (op: Op) => (p: Tensor, q: Tensor, r: Tensor) => op(p, q, r);
    const sets: [string, Tensor[]][] = [
      ["all", [tx, tg, ta]],
      ["x", [tx, tg.mul(0), ta.mul(0)]],
      ["g", [tx.mul(0), tg, ta.mul(0)]],
      ["a", [tx.mul(0), tg.mul(0), ta]],
    ];
    const host = await Promise.all([x, g, a].map((u) => u.data()));
    for (const [tag, ts] of sets) {
      const [, tf] = jvp(f(gatedResidual), [x, g, a], ts);
      const [, tc] = jvp(f(gatedResidualComposite), [x, g, a], ts);
      const got = await tf.data();
      same(got, await tc.data(), `${be} jvp ${tag}`);
      const tv = await Promise.all(ts.map((u) => u.data()));
      const fd = fdJvp(
        (xs) => gatedF64(xs[0]!, xs[1]!, xs[2]!, b, t, d),
        host.map((v) => Float64Array.from(v)),
        tv.map((v) => Float64Array.from(v)),
      );
      close(got, fd, `${be} jvp ${tag} (FD)`, 1e-5);
    }
    // One tangent alone (the others absent, not zero): the g tangent, then the a tangent.
    const [, tgOnly] = jvp((q: Tensor) => gatedResidual(x, q, a), [g], [tg]);
    const [, tgRef] = jvp((q: Tensor) => gatedResidualComposite(x, q, a), [g], [tg]);
    same(await tgOnly.data(), await tgRef.data(), `${be} jvp g alone`);
    const [, taOnly] = jvp((r: Tensor) => gatedResidual(x, g, r), [a], [ta]);
    const [, taRef] = jvp((r: Tensor) => gatedResidualComposite(x, g, r), [a], [ta]);
    same(await taOnly.data(), await taRef.data(), `${be} jvp a alone`);
    // Second order: d/d(x, g, a) of ‖∇L‖² (the composite rules take over under the outer tape);
    // the loss is quadratic in the output so the gradient depends on every input.
    const g2 = (op: Op) =>
      grad((ps: Tensor[]) => {
        const gr = grad((qs: Tensor[]) => op(qs[0]!, qs[1]!, qs[2]!).mul(w).square().sum())(ps);
        return gr[1]!.square().sum().add(gr[2]!.square().sum()).add(gr[0]!.square().sum());
      })([x, g, a]);
    const [p, ref] = [g2(gatedResidual), g2(gatedResidualComposite)];
    for (let k = 0; k < 3; k++) {
      const want = await ref[k]!.data();
      assert.ok(maxAbs(want) > 1e-2, `grad² ${k}: non-zero reference`);
      close(await p[k]!.data(), want, `${be} grad² ${k}`, 1e-5);
    }
  });
  setBackend("cpu");
});

// The wasm kernel on 1 and 2 threads, and with every call split in chunks across both: against
// an f64 model (da exact; dg to f32 summation), and the same bits on every configuration.
Deno.test({
  name: "wasm gatedResidualBackward: da and dg against f64, the same bits on 1 and 2 threads",
  ignore: !HAS_WASM,
  fn: async () => {
    const configs = [
      { threads: 1 },
      { threads: 2 },
      { threads: 2, elementwiseSplitWork: 0 },
    ];
    const bes = await Promise.all(configs.map((c) => createWasmBackend(c)));
    try {
      for (const [b, t, d] of [[64, 49, 128], [5, 49, 20], [3, 1, 16], [1, 7, 4], [2, 3, 6]]) {
        const n = b! * t! * d!;
        setBackend("cpu");
        const [hg, ha, hy] = await Promise.all([
          randn([b! * d!], { seed: 1 }).data(),
          randn([n], { seed: 2 }).data(),
          randn([n], { seed: 3 }).data(),
        ]);
        const wantDa = new Float32Array(n), wantDg = new Float64Array(b! * d!);
        for (let i = 0; i < b!; i++) {
          for (let j = 0; j < t!; j++) {
            for (let c = 0; c < d!; c++) {
              const o = (i * t! + j) * d! + c;
              wantDa[o] = hg![i * d! + c]! * hy![o]!;
              wantDg[i * d! + c] += ha![o]! * hy![o]!;
            }
          }
        }
        const got = bes.map((be) => {
          const [g, a, y] = [hg!, ha!, hy!].map((v) => be.upload(v));
          const [da, dg] = be.gatedResidualBackward(g!, a!, y!, b!, t!, d!);
          const r = [da, dg].map((s) => Float32Array.from(be.readSync(s)));
          for (const s of [g!, a!, y!, da, dg]) be.free(s);
          return r;
        });
        got.forEach(([da, dg], k) => {
          const what = `[${b}, ${t}, ${d}] ${JSON.stringify(configs[k])}`;
          same(da!, wantDa, `${what} da`);
          close(dg!, wantDg, `${what} dg`, 1e-5);
          same(dg!, got[0]![1]!, `${what} dg bits against 1 thread`);
        });
      }
    } finally {
      for (const be of bes) be.close();
      setBackend("cpu");
    }
  },
});

Deno.test("gatedResidual rejects mismatched shapes with a RangeError naming the expected shape", () => {
  setBackend("cpu");
  const x = randn([2, 3, 4], { seed: 0 }), a = randn([2, 3, 4], { seed: 1 });
  const g = randn([2, 4], { seed: 2 });
  assert.throws(
    () => gatedResidual(x, randn([2, 1, 4], { seed: 3 }), a),
    (e: unknown) =>
      e instanceof RangeError && /gate g to have shape \[2, 4\]/.test(e.message) &&
      /\[2, 1, 4\]/.test(e.message),
  );
  assert.throws(
    () => gatedResidual(x, g, randn([2, 3, 5], { seed: 3 })),
    (e: unknown) =>
      e instanceof RangeError && /branch a to have the shape of x \[2, 3, 4\]/.test(e.message),
  );
  assert.throws(
    () => gatedResidual(randn([8], { seed: 0 }), g, a),
    (e: unknown) => e instanceof RangeError && /\[B, T, D\]/.test(e.message),
  );
});

Deno.test("the composite switch: gatedResidual without fusion is the composite", async () => {
  setBackend("cpu");
  const { x, g, a } = inputs([2, 3, 5], 3);
  const prev = _fusedGatedResidual.enabled;
  try {
    _fusedGatedResidual.enabled = false;
    same(await gatedResidual(x, g, a).data(), await gatedResidualComposite(x, g, a).data(), "y");
  } finally {
    _fusedGatedResidual.enabled = prev;
  }
});

Deno.test("a DiT training step has the same loss and gradients with the fused gated residual", async () => {
  await onEachBackend((be) =>
    assertDitStepUnchanged(_fusedGatedResidual, {
      backend: be,
      watch: "adaLN_modulation.1.weight",
      lossFrac: 1e-6,
      close: (got, want, msg, frac) => close(got, want, msg, frac / 10),
    })
  );
  setBackend("cpu");
});
