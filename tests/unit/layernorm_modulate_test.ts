/**
 * @file The fused LayerNorm + AdaLN modulation (`layerNormModulate`: `Backend.layerNormModulate`
 * and `layerNormModulateBackward`) on every backend here: its forward and the gradients of x,
 * shift and scale against (a) the composite (`layerNormModulateComposite`, LayerNorm then
 * modulate from primitives) on the CPU backend and (b) central finite differences of an f64
 * plain-JS implementation; forward mode and second order against the composite; the backend
 * methods against the CPU backend's; clear errors for mismatched shapes.
 *
 * Shapes: the DiT bench's [64, 49, 128] (the `wasm` SIMD kernels and WebGPU's vec4 path), D not
 * a multiple of 4 (scalar paths), one token, one sample, and a [B, D] input.
 *
 * Tolerances: f32 against the CPU composite, |Δ| ≤ 1e-5·|ref| + 2e-5·max|ref| for the forward
 * and 1e-4·max|ref| for gradients (sums over D = 128 and over 49 tokens in a different order
 * and precision: f32 on `wasm` and WebGPU, f64 on the CPU). Against f64 finite differences
 * (h = 1e-6, error ≈ 1e-10) the engine's f32 gradient is allowed 1e-4 relative to the largest
 * entry plus 1e-4 relative to each.
 * @module
 */
import { strict as assert } from "node:assert";
import {
  type BackendName,
  getBackend,
  grad,
  jvp,
  layerNormModulate,
  layerNormModulateComposite,
  randn,
  setBackend,
  type Tensor,
  tensor,
} from "../../mod.ts";
import { _fusedLayerNormModulate } from "../../lib/ops/layernorm.ts";
import { assertDitStepUnchanged } from "../_dit_switch.ts";
import { assertClose, BACKENDS_HERE, HAS_WASM } from "../_helpers.ts";
import { createWasmBackend } from "../../lib/backend/wasm.ts";
import { fdGrad, fdJvp } from "../_fd.ts";

const EPS = 1e-6;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function close(got: ArrayLike<number>, want: ArrayLike<number>, msg: string, frac: number) {
  assertClose(got, want, { rtol: 1e-5, atol: Math.max(frac * maxAbs(want), 1e-7), msg });
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

/** y = LN(x)·(1 + scale) + shift in f64, x [b, t, d] flat, shift/scale [b, d] flat. */
function lnModF64(
  x: ArrayLike<number>,
  sh: ArrayLike<number>,
  sc: ArrayLike<number>,
  b: number,
  t: number,
  d: number,
): Float64Array {
  const y = new Float64Array(b * t * d);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < t; j++) {
      const o = (i * t + j) * d;
      let mu = 0;
      for (let c = 0; c < d; c++) mu += x[o + c]!;
      mu /= d;
      let v = 0;
      for (let c = 0; c < d; c++) v += (x[o + c]! - mu) ** 2;
      const r = 1 / Math.sqrt(v / d + EPS);
      for (let c = 0; c < d; c++) {
        y[o + c] = (x[o + c]! - mu) * r * (1 + sc[i * d + c]!) + sh[i * d + c]!;
      }
    }
  }
  return y;
}

type Case = { shape: number[]; name: string };
const CASES: Case[] = [
  { shape: [64, 49, 128], name: "DiT [64, 49, 128]" },
  { shape: [3, 5, 7], name: "odd D [3, 5, 7]" },
  { shape: [4, 1, 12], name: "one token [4, 1, 12]" },
  { shape: [1, 6, 8], name: "one sample [1, 6, 8]" },
  { shape: [1, 1, 5], name: "[1, 1, 5]" },
  { shape: [3, 10], name: "rank 2 [3, 10]" },
];

function inputs(shape: number[], seed: number) {
  const b = shape[0]!, d = shape[shape.length - 1]!;
  // Rows with a non-zero mean and a spread other than 1, so centring and scaling both matter.
  const x = randn(shape, { seed }).mul(1.7).add(0.4);
  const sh = randn([b, d], { seed: seed + 1 }).mul(0.5);
  const sc = randn([b, d], { seed: seed + 2 }).mul(0.5);
  const w = randn(shape, { seed: seed + 3 });
  return { x, sh, sc, w };
}

type Op = typeof layerNormModulate;
const loss = (op: Op, w: Tensor) => ([x, sh, sc]: Tensor[]) => op(x!, sh!, sc!, EPS).mul(w).sum();

Deno.test("layerNormModulate: forward and the x, shift, scale gradients equal the CPU composite's on every backend", async () => {
  for (const { shape, name } of CASES) {
    const host = await (async () => {
      setBackend("cpu");
      const { x, sh, sc, w } = inputs(shape, shape.length * 10 + shape[0]!);
      const arrays = await Promise.all([x, sh, sc, w].map((t) => t.data()));
      const y = await layerNormModulateComposite(x, sh, sc, EPS).data();
      const g = grad(loss(layerNormModulateComposite, w))([x, sh, sc]);
      return { arrays, y, g: await Promise.all(g.map((t) => t.data())) };
    })();
    await onEachBackend(async (be) => {
      const [x, sh, sc, w] = host.arrays.map((a, i) =>
        tensor(a, i === 1 || i === 2 ? [shape[0]!, shape[shape.length - 1]!] : shape)
      ) as [Tensor, Tensor, Tensor, Tensor];
      const y = layerNormModulate(x, sh, sc, EPS);
      assert.deepEqual([...y.shape], shape);
      close(await y.data(), host.y, `${be} ${name} y`, 2e-5);
      const g = grad(loss(layerNormModulate, w))([x, sh, sc]);
      for (const [k, what] of ["dx", "dshift", "dscale"].entries()) {
        close(await g[k]!.data(), host.g[k]!, `${be} ${name} ${what}`, 1e-4);
      }
      // The gradients carry signal (a vacuous comparison of zeros would pass anything).
      for (const a of host.g) assert.ok(maxAbs(a) > 1e-3, `${name}: non-zero reference`);
    });
  }
  setBackend("cpu");
});

Deno.test("layerNormModulate: gradients equal f64 central finite differences on every backend", async () => {
  for (const { shape, name } of CASES) {
    const b = shape[0]!, d = shape[shape.length - 1]!, t = shape.length === 3 ? shape[1]! : 1;
    setBackend("cpu");
    const { x, sh, sc, w } = inputs(shape, 7 + shape[0]!);
    const [xa, sha, sca, wa] = await Promise.all([x, sh, sc, w].map((u) => u.data()));
    // Sample i's outputs depend on its own x, shift and scale only, so each sample's gradients
    // are differences of its own part of the loss. The DiT shape checks the first and the last
    // sample (all 64 would take ~30 s of plain-JS loops).
    const samples = b > 8 ? [0, b - 1] : [...Array(b).keys()];
    const want: number[][] = [[], [], []], idx: number[][] = [[], [], []];
    for (const i of samples) {
      const xr = [i * t * d, (i + 1) * t * d], pr = [i * d, (i + 1) * d];
      const wi = wa!.subarray(xr[0], xr[1]);
      const f = (xs: Float64Array[]) => {
        const y = lnModF64(xs[0]!, xs[1]!, xs[2]!, 1, t, d);
        let s = 0;
        for (let k = 0; k < y.length; k++) s += y[k]! * wi[k]!;
        return s;
      };
      const parts = [
        xa!.subarray(xr[0], xr[1]),
        sha!.subarray(pr[0], pr[1]),
        sca!.subarray(pr[0], pr[1]),
      ];
      const g = fdGrad(f, parts.map((a) => Float64Array.from(a)));
      g.forEach((gk, k) => {
        const lo = k === 0 ? xr[0]! : pr[0]!;
        gk.forEach((v, c) => {
          want[k]!.push(v);
          idx[k]!.push(lo + c);
        });
      });
    }
    // The forward against the f64 function too.
    const yRef = lnModF64(xa!, sha!, sca!, b, t, d);
    await onEachBackend(async (be) => {
      const [xt, sht, sct, wt] = [xa, sha, sca, wa].map((a, i) =>
        tensor(a!, i === 1 || i === 2 ? [b, d] : shape)
      ) as [Tensor, Tensor, Tensor, Tensor];
      close(await layerNormModulate(xt, sht, sct, EPS).data(), yRef, `${be} ${name} y (f64)`, 2e-6);
      const g = await Promise.all(
        grad(loss(layerNormModulate, wt))([xt, sht, sct]).map((u) => u.data()),
      );
      ["dx", "dshift", "dscale"].forEach((what, k) => {
        close(idx[k]!.map((i) => g[k]![i]!), want[k]!, `${be} ${name} ${what} (FD)`, 1e-4);
      });
    });
  }
  setBackend("cpu");
});

Deno.test("layerNormModulate: forward mode equals the composite's and f64 differences; second order equals the composite's", async () => {
  await onEachBackend(async (be) => {
    const shape = [2, 3, 6], [b, t, d] = shape as [number, number, number];
    const { x, sh, sc, w } = inputs(shape, 11);
    const tx = randn(shape, { seed: 20 }), tsh = randn([b, d], { seed: 21 });
    const tsc = randn([b, d], { seed: 22 });
    const f = (op: Op) => (a: Tensor, s: Tensor, c: Tensor) => op(a, s, c, EPS);
    // All three tangents, and each alone (the rule builds only the terms it needs).
    const sets: [string, Tensor[]][] = [
      ["all", [tx, tsh, tsc]],
      ["x", [tx, tsh.mul(0), tsc.mul(0)]],
      ["shift", [tx.mul(0), tsh, tsc.mul(0)]],
      ["scale", [tx.mul(0), tsh.mul(0), tsc]],
    ];
    const host = await Promise.all([x, sh, sc].map((u) => u.data()));
    for (const [tag, ts] of sets) {
      const [, ta] = jvp(f(layerNormModulate), [x, sh, sc], ts);
      const [, tb] = jvp(f(layerNormModulateComposite), [x, sh, sc], ts);
      const got = await ta.data();
      close(got, await tb.data(), `${be} jvp ${tag}`, 1e-5);
      const tv = await Promise.all(ts.map((u) => u.data()));
      const fd = fdJvp(
        (xs) => lnModF64(xs[0]!, xs[1]!, xs[2]!, b, t, d),
        host.map((a) => Float64Array.from(a)),
        tv.map((a) => Float64Array.from(a)),
      );
      close(got, fd, `${be} jvp ${tag} (FD)`, 1e-4);
    }
    // Only the x tangent given (the others absent, not zero).
    const [, tOnly] = jvp((a: Tensor) => layerNormModulate(a, sh, sc, EPS), [x], [tx]);
    const [, tOnlyRef] = jvp((a: Tensor) => layerNormModulateComposite(a, sh, sc, EPS), [x], [tx]);
    close(await tOnly.data(), await tOnlyRef.data(), `${be} jvp x alone`, 1e-5);
    // Second order: d/d(x, shift, scale) of ‖∇L‖², through the backward (the composite rules
    // take over under the outer tape).
    const g2 = (op: Op) =>
      grad((ps: Tensor[]) => {
        const g = grad(loss(op, w))(ps);
        return g[0]!.square().sum().add(g[2]!.square().sum());
      })([x, sh, sc]);
    const [a, ref] = [g2(layerNormModulate), g2(layerNormModulateComposite)];
    for (let k = 0; k < 3; k++) {
      close(await a[k]!.data(), await ref[k]!.data(), `${be} grad² ${k}`, 1e-4);
    }
  });
  setBackend("cpu");
});

Deno.test("the backends' layerNormModulate methods equal the CPU backend's (y, stats, dx, dshift, dscale)", async () => {
  const prev = getBackend().name as BackendName;
  try {
    for (const [b, t, d] of [[64, 49, 128], [3, 5, 7], [2, 1, 4], [1, 3, 6], [0, 3, 4]]) {
      const n = b! * t! * d!;
      const hx = await randn([n], { seed: d! }).add(0.3).data();
      const hs = await randn([b! * d!], { seed: 1 }).data();
      const hc = await randn([b! * d!], { seed: 2 }).data();
      const hg = await randn([n], { seed: 3 }).data();
      const res: Record<string, Float32Array[]> = {};
      for (const name of BACKENDS_HERE) {
        const be = setBackend(name);
        const [x, s, c, g] = [hx, hs, hc, hg].map((a) => be.upload(a));
        const [y, st] = be.layerNormModulate(x!, s!, c!, b!, t!, d!, 1e-6);
        const grads = be.layerNormModulateBackward(x!, c!, st, g!, b!, t!, d!);
        res[name] = await Promise.all([y, st, ...grads].map((u) => be.read(u)));
        for (const u of [x!, s!, c!, g!, y, st, ...grads]) be.free(u);
      }
      for (const name of BACKENDS_HERE) {
        ["y", "stats", "dx", "dshift", "dscale"].forEach((what, k) => {
          assert.equal(res[name]![k]!.length, res.cpu![k]!.length, `${name} ${what} length`);
          close(res[name]![k]!, res.cpu![k]!, `${name} [${b}, ${t}, ${d}] ${what}`, 2e-5);
        });
      }
    }
  } finally {
    setBackend(prev);
  }
});

// The backward's `acc` (the cotangent x has gathered elsewhere, added as dx is stored): dx + acc
// with the bits of the backend's own dx plus acc in f32, on 1 and 2 wasm threads too.
Deno.test("layerNormModulateBackward with acc returns dx + acc, the f32 sum of its own dx, on every backend", async () => {
  const prev = getBackend().name as BackendName;
  const wasm = HAS_WASM
    ? await Promise.all([1, 2].map((threads) => createWasmBackend({ threads })))
    : [];
  try {
    for (const [b, t, d] of [[64, 49, 128], [3, 5, 7], [2, 1, 4], [1, 3, 6], [5, 3, 20]]) {
      const n = b! * t! * d!;
      setBackend("cpu");
      const [hx, hs, hc, hg, ha] = await Promise.all([
        randn([n], { seed: d! }).add(0.3).data(),
        randn([b! * d!], { seed: 1 }).data(),
        randn([b! * d!], { seed: 2 }).data(),
        randn([n], { seed: 3 }).data(),
        randn([n], { seed: 4 }).mul(3).data(),
      ]);
      const bes = [...BACKENDS_HERE.map((name) => setBackend(name)), ...wasm];
      for (const [k, be] of bes.entries()) {
        const [x, s, c, g, a] = [hx, hs, hc, hg, ha].map((v) => be.upload(v!));
        const [y, st] = be.layerNormModulate(x!, s!, c!, b!, t!, d!, 1e-6);
        const plain = be.layerNormModulateBackward(x!, c!, st, g!, b!, t!, d!);
        const summed = be.layerNormModulateBackward(x!, c!, st, g!, b!, t!, d!, a!);
        const [dx, dsh, dsc, dxa, dsha, dsca] = await Promise.all(
          [...plain, ...summed].map((u) => be.read(u)),
        );
        const what = `${be.name}${
          k >= BACKENDS_HERE.length ? ` (${k - BACKENDS_HERE.length + 1} thread(s))` : ""
        } [${b}, ${t}, ${d}]`;
        const want = new Float32Array(n);
        for (let i = 0; i < n; i++) want[i] = dx![i]! + ha![i]!;
        assert.ok(maxAbs(ha!) > 1 && maxAbs(dx!) > 1e-2, `${what}: both terms matter`);
        for (let i = 0; i < n; i++) {
          assert.ok(
            Object.is(dxa![i], want[i]),
            `${what} dx + acc [${i}]: ${dxa![i]} vs ${want[i]}`,
          );
        }
        assert.deepEqual([...dsha!], [...dsh!], `${what} dshift unchanged`);
        assert.deepEqual([...dsca!], [...dsc!], `${what} dscale unchanged`);
        for (const u of [x!, s!, c!, g!, a!, y, st, ...plain, ...summed]) be.free(u);
      }
    }
  } finally {
    for (const be of wasm) be.close();
    setBackend(prev);
  }
});

// Under a tape, x's cotangent so far reaches the fused backward as `acc` when x's other use was
// recorded after the LayerNorm (as in DiT's residual stream); before it, the tape adds. Both, a
// shift that is also the scale (an input passed twice gets acc once), and second order, against
// the composite.
Deno.test("layerNormModulate: an input with other uses (a residual, a repeated input) gets the composite's gradient", async () => {
  await onEachBackend(async (be) => {
    const shape = [3, 5, 8], [b, , d] = shape as [number, number, number];
    const { x, sh, sc, w } = inputs(shape, 31);
    const w2 = randn(shape, { seed: 40 }), u = randn([b, d], { seed: 41 });
    const fs: [string, (op: Op) => (ps: Tensor[]) => Tensor][] = [
      // The residual recorded after the LayerNorm: acc is x's cotangent from it.
      ["residual after", (op) => ([p, s, c]) => op(p!, s!, c!, EPS).mul(w).add(p!.mul(w2)).sum()],
      // Before: the tape's add.
      ["residual before", (op) => ([p, s, c]) => p!.mul(w2).add(op(p!, s!, c!, EPS).mul(w)).sum()],
      // shift = scale = s, s also used after: acc goes to its first position only.
      [
        "shift = scale",
        (op) => ([p, s]) => op(p!, s!, s!, EPS).mul(w).add(p!.mul(w2)).sum().add(s!.mul(u).sum()),
      ],
      // Two LayerNorms of x, one after the other: the second's acc is the first's dx.
      [
        "two norms",
        (op) => ([p, s, c]) => op(p!, s!, c!, EPS).mul(w).add(op(p!, c!, s!, EPS).mul(w2)).sum(),
      ],
    ];
    for (const [tag, f] of fs) {
      const got = grad(f(layerNormModulate))([x, sh, sc]);
      const want = grad(f(layerNormModulateComposite))([x, sh, sc]);
      for (let k = 0; k < 3; k++) {
        const ref = await want[k]!.data();
        if (tag !== "shift = scale" || k < 2) assert.ok(maxAbs(ref) > 1e-2, `${tag} ${k}: signal`);
        close(await got[k]!.data(), ref, `${be} ${tag} grad ${k}`, 1e-4);
      }
      // Second order through the accumulated backward (the composite rules and the tape's add).
      const g2 = (op: Op) =>
        grad((ps: Tensor[]) => {
          const g = grad(f(op))(ps);
          return g[0]!.square().sum().add(g[1]!.square().sum());
        })([x, sh, sc]);
      const [p2, r2] = [g2(layerNormModulate), g2(layerNormModulateComposite)];
      for (let k = 0; k < 3; k++) {
        close(await p2[k]!.data(), await r2[k]!.data(), `${be} ${tag} grad² ${k}`, 1e-4);
      }
    }
  });
  setBackend("cpu");
});

Deno.test("layerNormModulate rejects mismatched shapes with a RangeError naming the expected shape", () => {
  setBackend("cpu");
  const x = randn([2, 3, 4], { seed: 0 });
  const ok = randn([2, 4], { seed: 1 });
  assert.throws(
    () => layerNormModulate(x, randn([2, 5], { seed: 2 }), ok),
    (e: unknown) =>
      e instanceof RangeError && /shift to have shape \[2, 4\]/.test(e.message) &&
      /\[2, 5\]/.test(e.message),
  );
  assert.throws(
    () => layerNormModulate(x, ok, randn([3, 4], { seed: 2 })),
    (e: unknown) => e instanceof RangeError && /scale to have shape \[2, 4\]/.test(e.message),
  );
  assert.throws(
    () => layerNormModulate(x, ok, randn([2, 1, 4], { seed: 2 })),
    (e: unknown) => e instanceof RangeError && /scale to have shape \[2, 4\]/.test(e.message),
  );
  assert.throws(
    () => layerNormModulate(randn([8], { seed: 0 }), ok, ok),
    (e: unknown) => e instanceof RangeError && /\[B, T, D\]/.test(e.message),
  );
  assert.throws(() => layerNormModulate(x, ok, ok, -1), /eps/);
  assert.throws(() => layerNormModulate(x, ok, ok, NaN), RangeError);
});

Deno.test("the composite switch: layerNormModulate without fusion is the composite", async () => {
  setBackend("cpu");
  const { x, sh, sc } = inputs([2, 3, 5], 3);
  const prev = _fusedLayerNormModulate.enabled;
  try {
    _fusedLayerNormModulate.enabled = false;
    const a = await layerNormModulate(x, sh, sc).data();
    const b = await layerNormModulateComposite(x, sh, sc).data();
    assert.deepEqual([...a], [...b]);
  } finally {
    _fusedLayerNormModulate.enabled = prev;
  }
});

Deno.test("a DiT training step has the same loss and gradients with the fused LayerNorm + modulate", async () => {
  await onEachBackend((be) =>
    assertDitStepUnchanged(_fusedLayerNormModulate, {
      backend: be,
      watch: "adaLN_modulation.1.weight",
      lossFrac: 1e-5,
      close,
    })
  );
  setBackend("cpu");
});
